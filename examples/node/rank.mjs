#!/usr/bin/env node
/**
 * A Language Ranker client in Node.js: ask central for K candidates, rank them
 * on the device with a ranker the Python SDK exported, print JSON.
 *
 *   node rank.mjs --ranker ranker.onnx --target 127.0.0.1:50051 --prompt "What is 12 + 7?" --k 4
 *
 * It shows that nothing about the wire or the ranker is Python-specific:
 *
 * 1. `Generate` is called over gRPC with the project's own .proto, loaded at run
 *    time (no generated code), with an optional bearer token and TLS.
 * 2. Each feature arrives as a `Tensor` (dtype, shape, raw little-endian bytes);
 *    wire.mjs decodes it by hand, fp16 included, to the float32 values
 *    edge/runtime/wire.py gets with numpy.
 * 3. The exported ranker takes `instruction` (B, d) and `candidates` (B, K, d)
 *    float32 and returns `scores` (B, K) (edge/runtime/onnx_meta.py); like the
 *    Python `Ranker`, one group is fed as a batch of one.
 * 4. Vectors a request may add (`--embedding-mean`: the embedding layer's mean
 *    over each response, `Candidate.embedding_mean_feature`) are decoded the
 *    same way when the server sent them, for a ranker that reads them.
 * 5. A personal ranker (what `PersonalRanker.learn` saves: the global ranker plus
 *    the user's head) also reads `mean_candidates` (B, K, d), which central sends
 *    when asked, and the parts the device computes from the answers (recipe.mjs):
 *    `signals` (B, K, 23, edge/runtime/signals.py) and `lexicon` (B, K, 211,
 *    edge/runtime/lexicon.py, from the category files the Python package ships).
 *    The client feeds exactly the inputs the graph declares.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import ort from 'onnxruntime-node';

import { LEXICON_WIDTH, lexiconBlock, loadLexicon, textSignals } from './recipe.mjs';
import { featureVector } from './wire.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_PROTO_ROOT = path.resolve(HERE, '../../protos'); // the repository's protos/
// the lexicon's category files, as the Python package ships them
const DEFAULT_LEXICON_DIR = path.resolve(HERE, '../../edge/runtime/lexicon_data');
const PROTO_FILE = 'language_ranker/v1/ranker.proto';
const TOKEN_ENV = 'RANKER_CENTRAL_TOKEN'; // the variable ranker-central and ranker-edge read

// The ranker graph's contract (edge/runtime/onnx_meta.py).
const INPUT_INSTRUCTION = 'instruction'; // (B, d) float32
const INPUT_CANDIDATES = 'candidates'; // (B, K, d) float32
const OUTPUT_SCORES = 'scores'; // (B, K) float32
// Representation v2 and the device's parts, fed when the graph declares them.
const INPUT_MEAN_CANDIDATES = 'mean_candidates'; // (B, K, d) float32, from central
const INPUT_SIGNALS = 'signals'; // (B, K, 23) float32, recipe.mjs textSignals
const INPUT_LEXICON = 'lexicon'; // (B, K, 211) float32, recipe.mjs lexiconBlock
const OPTIONAL_INPUTS = [INPUT_MEAN_CANDIDATES, INPUT_SIGNALS, INPUT_LEXICON];

const ENCODINGS = { fp16: 'ENCODING_FP16', fp32: 'ENCODING_FP32', int8: 'ENCODING_INT8' };

const USAGE = `usage: node rank.mjs --ranker FILE.onnx [options]

Calls central's Generate, decodes the features and ranks the K candidates with
an ONNX ranker exported by the Python SDK; prints JSON.

options:
  --ranker FILE       the exported ranker (.onnx); required
  --target HOST:PORT  central's address (default 127.0.0.1:50051)
  --prompt TEXT       the prompt (default "What is two plus three?")
  --k N               number of candidates (default 4)
  --seed N            sampling seed, for reproducible candidates (default: random)
  --max-new-tokens N  tokens per candidate (default: the server's, 128)
  --temperature T     softmax temperature, 0 is greedy (default: the server's, 1.0)
  --layer-index N     hidden-state layer of the features (default: the server's, 0.6 of depth)
  --encoding E        features on the wire: fp16, fp32 or int8 (default fp16)
  --embedding-mean    also ask for each candidate's embedding mean (hidden state 0
                      averaged over its tokens); decoded, and printed with --features
  --tls               use TLS, trusting the system's root certificates
  --tls-ca FILE       use TLS, trusting this PEM CA (a private or self-signed one)
  --proto-root DIR    directory holding ${PROTO_FILE} (default: the repository's protos/)
  --lexicon-dir DIR   the lexicon's category files, for a ranker that reads the
                      lexicon (default: the repository's edge/runtime/lexicon_data)
  --timeout SECONDS   deadline of the call (default 300)
  --features          also print the decoded features
  --help              show this help

The bearer token, when central requires one, is read from $${TOKEN_ENV}.`;

/** The command line, checked; exits with the usage text on a bad one. */
function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ranker: { type: 'string' },
      target: { type: 'string', default: '127.0.0.1:50051' },
      prompt: { type: 'string', default: 'What is two plus three?' },
      k: { type: 'string', default: '4' },
      seed: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'layer-index': { type: 'string' },
      encoding: { type: 'string', default: 'fp16' },
      'embedding-mean': { type: 'boolean', default: false },
      tls: { type: 'boolean', default: false },
      'tls-ca': { type: 'string' },
      'proto-root': { type: 'string', default: DEFAULT_PROTO_ROOT },
      'lexicon-dir': { type: 'string', default: DEFAULT_LEXICON_DIR },
      timeout: { type: 'string', default: '300' },
      features: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!values.ranker) throw new UsageError('--ranker is required');
  if (!(values.encoding in ENCODINGS)) {
    throw new UsageError(`--encoding must be fp16, fp32 or int8, not ${values.encoding}`);
  }
  return {
    ranker: values.ranker,
    target: values.target,
    prompt: values.prompt,
    k: integer(values.k, '--k'),
    seed: values.seed === undefined ? undefined : integer(values.seed, '--seed'),
    maxNewTokens: optionalInteger(values['max-new-tokens'], '--max-new-tokens'),
    temperature: optionalNumber(values.temperature, '--temperature'),
    layerIndex: optionalInteger(values['layer-index'], '--layer-index'),
    encoding: values.encoding,
    embeddingMean: values['embedding-mean'],
    tls: values.tls || values['tls-ca'] !== undefined,
    tlsCa: values['tls-ca'],
    protoRoot: values['proto-root'],
    lexiconDir: values['lexicon-dir'],
    timeoutSeconds: optionalNumber(values.timeout, '--timeout'),
    printFeatures: values.features,
  };
}

/** A bad command line: reported with the usage text, exit status 2. */
class UsageError extends Error {}

function integer(text, flag) {
  if (!/^-?\d+$/.test(text)) throw new UsageError(`${flag} must be an integer, not ${text}`);
  return Number(text);
}

function optionalInteger(text, flag) {
  return text === undefined ? undefined : integer(text, flag);
}

function optionalNumber(text, flag) {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value)) {
    throw new UsageError(`${flag} must be a number, not ${text}`);
  }
  return value;
}

// ------------------------------------------------------------------ gRPC

/** A CentralService client built from the .proto at run time. */
function connect({ target, tls, tlsCa, protoRoot }) {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [protoRoot],
    keepCase: true, // field names as in the .proto (max_new_tokens, not maxNewTokens)
    enums: String, // enum values by name: 'DTYPE_FLOAT16'
    longs: String, // uint64 seed without precision loss
    defaults: true, // unset fields read as their proto3 defaults
    oneofs: true, // `response.event` names the arm of the oneof that is set
  });
  const { CentralService } = grpc.loadPackageDefinition(definition).language_ranker.v1;
  const credentials = tls
    ? grpc.credentials.createSsl(tlsCa === undefined ? null : readFileSync(tlsCa))
    : grpc.credentials.createInsecure();
  // Features of a large K can exceed gRPC's default 4 MiB message limit.
  return new CentralService(target, credentials, {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  });
}

/** Call metadata carrying the bearer token from the environment, when there is one. */
function authMetadata() {
  const metadata = new grpc.Metadata();
  const token = (process.env[TOKEN_ENV] ?? '').trim();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/**
 * The GenerateRequest; unset sampling fields stay unset so the server's defaults
 * apply. `reads` are the optional inputs of the ranker: the mean vectors are asked
 * for when it reads them, and the mean entropy (a signal) when it reads signals.
 */
function generateRequest(options, reads = []) {
  const sampling = {};
  if (options.temperature !== undefined) sampling.temperature = options.temperature;
  if (options.maxNewTokens !== undefined) sampling.max_new_tokens = options.maxNewTokens;
  if (options.seed !== undefined) sampling.seed = String(options.seed);
  const features = { encoding: ENCODINGS[options.encoding] };
  if (options.layerIndex !== undefined) features.layer_index = options.layerIndex;
  // No vectors named is the last token's alone; naming any, the last token's must be named too.
  const vectors = [];
  if (reads.includes(INPUT_MEAN_CANDIDATES)) vectors.push('FEATURE_VECTOR_MEAN');
  if (options.embeddingMean) vectors.push('FEATURE_VECTOR_EMBEDDING_MEAN');
  if (vectors.length) features.vectors = ['FEATURE_VECTOR_LAST', ...vectors];
  if (reads.includes(INPUT_SIGNALS)) features.mean_entropy = true;
  return { prompt: { text: options.prompt }, k: options.k, sampling, features };
}

/**
 * Runs one Generate stream to its end: the instruction feature, then the K
 * candidates (sorted by index: they arrive in the order they finish).
 */
async function generate(client, options, reads) {
  const deadline = new Date(Date.now() + options.timeoutSeconds * 1000);
  const call = client.Generate(generateRequest(options, reads), authMetadata(), { deadline });
  let instruction = null;
  const candidates = [];
  for await (const response of call) {
    if (response.event === 'instruction') instruction = response.instruction;
    else if (response.event === 'candidate') candidates.push(response.candidate);
    // 'usage' and events this client does not know are skipped, as the .proto allows.
  }
  if (instruction === null || candidates.length !== options.k) {
    throw new Error(`stream ended early: got ${candidates.length} of ${options.k} candidates`);
  }
  candidates.sort((a, b) => a.index - b.index);
  return { instruction, candidates };
}

// -------------------------------------------------------------- ranking

/**
 * Loads the ranker and checks it has the contract this client can feed; returns
 * the session and its feature size d (undefined when the graph leaves it open).
 */
async function loadRanker(file) {
  const session = await ort.InferenceSession.create(file, {
    // One ranking is a few small matmuls: threads would cost more than they save.
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3, // errors only
  });
  const known = [INPUT_INSTRUCTION, INPUT_CANDIDATES];
  const unknown = session.inputNames.filter(
    (name) => !known.includes(name) && !OPTIONAL_INPUTS.includes(name),
  );
  if (unknown.length) {
    throw new Error(
      `${file}: the ranker graph has inputs this client does not know: ${unknown.join(', ')} ` +
        `(it feeds ${[...known, ...OPTIONAL_INPUTS].join(', ')}; a ranker that reads ` +
        `per-token features (SWIFT) needs a client that streams them)`,
    );
  }
  const missing = known.filter((name) => !session.inputNames.includes(name));
  if (missing.length || !session.outputNames.includes(OUTPUT_SCORES)) {
    throw new Error(
      `${file}: not a ranker graph: inputs [${session.inputNames}], outputs ` +
        `[${session.outputNames}]; expected inputs ${known.join(', ')} and output ${OUTPUT_SCORES}`,
    );
  }
  const candidates = session.inputMetadata.find((input) => input.name === INPUT_CANDIDATES);
  const last = candidates?.isTensor ? candidates.shape[candidates.shape.length - 1] : undefined;
  return {
    session,
    featureSize: typeof last === 'number' ? last : undefined,
    reads: OPTIONAL_INPUTS.filter((name) => session.inputNames.includes(name)),
  };
}

/** K rows of equal width as one (1, K, width) float32 tensor. */
function batchOfOne(rows) {
  const width = rows[0].length;
  const flat = new Float32Array(rows.length * width);
  rows.forEach((row, i) => flat.set(row, i * width));
  return new ort.Tensor('float32', flat, [1, rows.length, width]);
}

/** What central sent about each answer besides its text (the signals read them). */
function scalarsOf(candidate) {
  const hasEntropy = candidate._mean_entropy === 'mean_entropy'; // proto3 optional: set or not
  return {
    numTokens: candidate.num_tokens,
    cumulativeLogprob: candidate.cumulative_logprob,
    meanEntropy: hasEntropy ? candidate.mean_entropy : null,
    finishReason: candidate.finish_reason === 'FINISH_REASON_EOS' ? 'eos' : 'length',
  };
}

/**
 * The optional inputs the ranker reads, K rows each: the mean vectors central sent,
 * and the signals and lexicon computed here from the answers (recipe.mjs).
 */
function deviceParts(ranker, candidates, d, lexiconDir) {
  const parts = {};
  if (ranker.reads.includes(INPUT_MEAN_CANDIDATES)) {
    const means = candidates.map((c) => optionalVector(c, 'mean_feature', d));
    if (means.includes(null)) {
      throw new Error('the ranker reads mean_candidates, but central sent no mean vectors');
    }
    parts[INPUT_MEAN_CANDIDATES] = means;
  }
  const texts = candidates.map((c) => c.text);
  if (ranker.reads.includes(INPUT_SIGNALS)) {
    parts[INPUT_SIGNALS] = textSignals(texts, candidates.map(scalarsOf));
  }
  if (ranker.reads.includes(INPUT_LEXICON)) {
    const block = lexiconBlock(texts, loadLexicon(lexiconDir));
    if (block[0].length !== LEXICON_WIDTH) throw new Error('the lexicon has the wrong width');
    parts[INPUT_LEXICON] = block;
  }
  return parts;
}

/**
 * Scores one group: d values for the instruction, K rows of d for the candidates,
 * and K rows of each optional input the graph reads (`parts`, by input name).
 */
async function score({ session }, instruction, candidates, parts = {}) {
  const d = instruction.length;
  // A batch of one, as the Python Ranker feeds a single group: (1, d) and (1, K, d).
  const feeds = {
    [INPUT_INSTRUCTION]: new ort.Tensor('float32', instruction, [1, d]),
    [INPUT_CANDIDATES]: batchOfOne(candidates),
  };
  for (const [name, rows] of Object.entries(parts)) feeds[name] = batchOfOne(rows);
  const outputs = await session.run(feeds, [OUTPUT_SCORES]);
  return Array.from(outputs[OUTPUT_SCORES].data); // (1, K) -> K numbers
}

/**
 * A vector a candidate carries only when the request asked for it (`mean_feature`,
 * `embedding_mean_feature`): decoded and checked like `feature`, or null when the
 * server did not send it (not asked, or a server that predates it).
 */
function optionalVector(candidate, field, size) {
  const tensor = candidate[field];
  if (!tensor || !tensor.data?.length) return null;
  return featureVector(tensor, size, `candidate ${candidate.index} ${field}`);
}

/** Candidate indices best first; ties keep index order (JS sort is stable). */
function bestFirst(scores) {
  return scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
}

// ----------------------------------------------------------------- main

async function main(argv) {
  const options = parseOptions(argv);
  const ranker = await loadRanker(options.ranker); // before the call: a bad file fails fast
  const client = connect(options);
  try {
    const { instruction, candidates } = await generate(client, options, ranker.reads);
    const d = ranker.featureSize;
    const inst = featureVector(instruction.feature, d, 'instruction feature');
    const rows = candidates.map((c) =>
      featureVector(c.feature, inst.length, `candidate ${c.index} feature`),
    );
    const embeddingMeans = candidates.map((c) =>
      optionalVector(c, 'embedding_mean_feature', inst.length),
    );
    if (options.embeddingMean && embeddingMeans.includes(null)) {
      // A server older than representation v2 ignores `vectors` and sends the last alone.
      throw new Error('central sent no embedding mean: it does not know FeatureSpec.vectors');
    }
    const parts = deviceParts(ranker, candidates, inst.length, options.lexiconDir);
    const scores = await score(ranker, inst, rows, parts);
    const order = bestFirst(scores);
    const result = {
      prompt: options.prompt,
      layer_index: instruction.layer_index,
      texts: candidates.map((c) => c.text),
      scores,
      best: order[0],
      order,
    };
    if (options.printFeatures) {
      result.instruction = Array.from(inst);
      result.features = rows.map((row) => Array.from(row));
      if (options.embeddingMean) {
        result.embedding_means = embeddingMeans.map((vector) => Array.from(vector));
      }
      for (const [name, rows] of Object.entries(parts)) {
        result[name] = rows.map((row) => Array.from(row));
      }
    }
    console.log(JSON.stringify(result, null, options.printFeatures ? undefined : 2));
  } finally {
    client.close();
  }
}

/** One line on stderr for every failure; gRPC errors name their status. */
function describe(error) {
  if (typeof error.code === 'number' && error.details !== undefined) {
    const status = Object.keys(grpc.status).find((name) => grpc.status[name] === error.code);
    return `central answered ${status ?? error.code}: ${error.details}`;
  }
  return error.message;
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`error: ${describe(error)}`);
  if (error instanceof UsageError || String(error.code).startsWith('ERR_PARSE_ARGS')) {
    console.error(USAGE);
    process.exitCode = 2;
  } else {
    process.exitCode = 1;
  }
});
