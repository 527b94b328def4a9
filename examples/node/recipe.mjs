/**
 * The parts of a candidate a personal ranker reads that the device computes from
 * the answers' texts (and the scalars central sends), as the Python SDK computes
 * them; no packages needed.
 *
 * - `textSignals`: edge/runtime/signals.py, SIGNALS_VERSION 2 (23 columns: length,
 *   layout, punctuation, the model's log-probabilities, agreement with the other
 *   answers of the set);
 * - `lexiconBlock`: edge/runtime/lexicon.py, LEXICON_VERSION 1 (211 columns:
 *   log(1 + count) of Empath's 194 word categories and 17 linguistic ones), from
 *   the category files the Python package ships (edge/runtime/lexicon_data).
 *
 * Both follow the recipes in those modules' docstrings. Python's regular
 * expressions and str methods are Unicode-aware; here they are spelled with
 * Unicode property escapes (\p{L} letters, \p{N} numbers, \p{Nd} decimal digits,
 * \p{Lu} upper-case letters) and strings are walked by code point, not by UTF-16
 * unit. tests/examples/test_node_client.py checks both blocks against Python's,
 * value for value, on texts with lists, code, contractions, accents and emoji.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';

export const SIGNALS_VERSION = 2; // edge/runtime/signals.py
export const LEXICON_VERSION = 1; // edge/runtime/lexicon.py

// ------------------------------------------------------------------ signals

const WORD = /[\p{L}\p{N}_]+/gu; // Python's \w+
const LIST_ITEM = /^\s*(?:[-*+\u2022]|\p{Nd}{1,3}[.)])\s/u;
// \b[^\W\d_]+['’][^\W\d_]{1,3}\b, with Unicode word boundaries
const CONTRACTION = /(?<![\p{L}\p{N}_])\p{L}+['\u2019]\p{L}{1,3}(?![\p{L}\p{N}_])/gu;
// what Python's str.splitlines splits on
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/u;
// Python's str.isdigit: decimal digits and the super- and subscript digits (it also
// counts rarer digit characters, circled ones for instance, which this does not)
const DIGIT = /[\p{Nd}\u00b2\u00b3\u00b9\u2070\u2074-\u2079\u2080-\u2089]/u;
const MIN_MEAN_LOGPROB = -30;
const MIN_CUMULATIVE_LOGPROB = -10000;

const codePoints = (text) => [...text];
const count = (text, needle) => text.split(needle).length - 1; // non-overlapping
const words = (text) => text.match(WORD) ?? [];

/** The text-only columns of one answer (the first 15, log_tokens left 0). */
function textRow(text) {
  const chars = codePoints(text);
  const found = words(text);
  const lines = text.split(LINE_BREAK).filter((line) => line.trim());
  const listLines = lines.filter((line) => LIST_ITEM.test(line)).length;
  const letters = chars.filter((ch) => /\p{L}/u.test(ch)).length;
  const n = chars.length;
  const wordChars = found.reduce((sum, w) => sum + codePoints(w).length, 0);
  return [
    Math.log1p(n),
    0, // log_tokens: from the scalars
    Math.log1p(found.length),
    Math.log1p(lines.length),
    lines.length ? listLines / lines.length : 0,
    Math.log1p(listLines),
    Math.log1p(count(text, '\n')),
    n ? chars.filter((ch) => DIGIT.test(ch)).length / n : 0,
    letters ? chars.filter((ch) => /\p{Lu}/u.test(ch)).length / letters : 0,
    Math.log1p(count(text, '!')),
    Math.log1p(count(text, '?')),
    Math.log1p((text.match(CONTRACTION) ?? []).length),
    found.length ? Math.log1p(wordChars / found.length) : 0,
    found.length ? new Set(found.map((w) => w.toLowerCase())).size / found.length : 0,
    Math.log1p(Math.floor(count(text, '```') / 2)),
  ];
}

/** (agreement, similarity) of each answer with the other answers of its set. */
function consensus(texts) {
  const k = texts.length;
  if (k < 2) return [new Array(k).fill(0), new Array(k).fill(0)];
  const keys = texts.map((t) => words(t).map((w) => w.toLowerCase()).join(' '));
  const sets = keys.map((key) => new Set(key.split(' ').filter(Boolean)));
  const agreement = keys.map((key) => (keys.filter((other) => other === key).length - 1) / (k - 1));
  const similarity = new Array(k).fill(0);
  for (let i = 0; i < k; i++) {
    for (let j = i + 1; j < k; j++) {
      const union = new Set([...sets[i], ...sets[j]]);
      const shared = [...sets[i]].filter((w) => sets[j].has(w)).length;
      const jaccard = union.size ? shared / union.size : 1;
      similarity[i] += jaccard;
      similarity[j] += jaccard;
    }
  }
  return [agreement, similarity.map((s) => s / (k - 1))];
}

/**
 * (K, 23) signals, one Float32Array per answer. `scalars[i]` holds what central
 * sent for answer i: numTokens, cumulativeLogprob, meanEntropy (null: unknown),
 * finishReason ('eos' | 'length'); an unknown value is null.
 */
export function textSignals(texts, scalars) {
  const [agreement, similarity] = consensus(texts);
  return texts.map((text, i) => {
    const s = scalars?.[i] ?? {};
    const row = textRow(text);
    row[1] = Math.log1p(s.numTokens || 0);
    let meanLp = 0;
    let totalLp = 0;
    if (s.cumulativeLogprob !== null && s.cumulativeLogprob !== undefined) {
      totalLp = Math.min(0, Math.max(MIN_CUMULATIVE_LOGPROB, s.cumulativeLogprob));
      meanLp = Math.max(MIN_MEAN_LOGPROB, s.numTokens ? totalLp / s.numTokens : 0);
    }
    const entropy = s.meanEntropy ?? null;
    return Float32Array.from([
      ...row,
      meanLp,
      totalLp,
      entropy ?? 0,
      entropy === null ? 0 : 1,
      s.finishReason === 'length' ? 1 : 0,
      text.trim() ? 0 : 1,
      agreement[i],
      similarity[i],
    ]);
  });
}

// ------------------------------------------------------------------ lexicon

const LEX_WORD = /[\p{L}\p{N}]+(?:'[\p{L}\p{N}]+)*/gu; // [^\W_]+(?:'[^\W_]+)*
const LEX_WORD_EXACT = new RegExp(`^(?:${LEX_WORD.source})$`, 'u');
const SENTENCE_END = /[.!?:\n]/;
const FILES = ['empath_categories.tsv', 'linguistic_categories.tsv'];
export const LEXICON_WIDTH = 211;

/** The categories (names, word -> category indices) from the package's data files. */
export function loadLexicon(directory) {
  const names = [];
  const members = new Map();
  for (const file of FILES) {
    const text = readFileSync(path.join(directory, file), 'utf8');
    for (const line of text.split(LINE_BREAK)) {
      if (!line.trim() || line.startsWith('#')) continue;
      const [category, ...entries] = line.split('\t');
      const index = names.length;
      names.push(category);
      if (category.startsWith('@')) continue; // a pattern, not a word list
      for (const entry of entries) {
        const word = entry.toLowerCase().replaceAll('\u2019', "'");
        if (!LEX_WORD_EXACT.test(word)) continue; // not one word: never matched
        const listed = members.get(word) ?? [];
        if (listed[listed.length - 1] !== index) listed.push(index);
        members.set(word, listed);
      }
    }
  }
  if (names.length !== LEXICON_WIDTH || !names.includes('@number') || !names.includes('@name')) {
    throw new Error(`${directory} holds ${names.length} categories, expected ${LEXICON_WIDTH}`);
  }
  return { names, members, number: names.indexOf('@number'), name: names.indexOf('@name') };
}

/** A word's categories, or its singular's when the word itself is not listed. */
function singularCategories(word, members) {
  const found = members.get(word);
  if (found) return found;
  if (word.endsWith('ies') && word.length > 3) {
    const y = members.get(`${word.slice(0, -3)}y`);
    if (y) return y;
  }
  if (word.endsWith('es') && word.length > 2) {
    const es = members.get(word.slice(0, -2));
    if (es) return es;
  }
  if (word.endsWith('s') && word.length > 1) return members.get(word.slice(0, -1)) ?? [];
  return [];
}

function isName(word, text, start, previousEnd) {
  if (!/^\p{Lu}/u.test(word) || word === 'I' || word.startsWith("I'")) return false;
  if (previousEnd === null) return false; // the first word starts a sentence
  return !SENTENCE_END.test(text.slice(previousEnd, start));
}

/** (K, 211) lexicon block, one Float32Array per answer: log(1 + count) per category. */
export function lexiconBlock(texts, lexicon) {
  return texts.map((raw) => {
    const text = raw.replaceAll('\u2019', "'");
    const counts = new Float64Array(lexicon.names.length);
    let previousEnd = null;
    for (const match of text.matchAll(LEX_WORD)) {
      const word = match[0].toLowerCase();
      for (const index of singularCategories(word, lexicon.members)) counts[index] += 1;
      if (/\p{Nd}/u.test(word)) counts[lexicon.number] += 1;
      if (isName(match[0], text, match.index, previousEnd)) counts[lexicon.name] += 1;
      previousEnd = match.index + match[0].length;
    }
    return Float32Array.from(counts, (c) => Math.log1p(c));
  });
}
