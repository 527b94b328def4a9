"""Bandwidth: bytes per candidate for last-token vs per-token (SWIFT) features.

Starts a real gRPC server on the default model (SmolLM2-135M-Instruct, 30
layers, hidden 576), runs the same seeded Generate request (K candidates,
the service's default max_new_tokens of 128) once per feature setting, and
sums the serialized size of every streamed message:

  - last-token: the Candidate messages (text, token ids and the one feature
    vector), what every Language Ranker head needs;
  - per-token: the same plus the TokenFeatures chunks, at the service's
    defaults (the last 4 hidden states, 4 x 576 values a token), in fp16
    and int8, and in logits-only mode (2 + top-k values a token).

Bytes are per candidate (total / K), and the per-token settings also per
response token. The server-side time of each request (Usage.seconds) shows
what computing the per-token features costs on top of sampling.

    python benchmarks/swift_bandwidth.py [--quick]
"""

from __future__ import annotations

from typing import Any

from _common import PROMPT, base_parser, emit, set_threads


def _settings(top_logprobs: int) -> dict[str, Any]:
    from language_ranker.v1 import ranker_pb2 as pb

    fp16, int8 = pb.ENCODING_FP16, pb.ENCODING_INT8
    return {
        "last-token fp16": (fp16, None),
        "last-token int8": (int8, None),
        "per-token fp16": (fp16, pb.TokenFeatureSpec(enabled=True, encoding=fp16)),
        "per-token int8": (fp16, pb.TokenFeatureSpec(enabled=True, encoding=int8)),
        f"logits-only top{top_logprobs} fp16": (
            fp16,
            pb.TokenFeatureSpec(enabled=True, top_logprobs=top_logprobs, encoding=fp16),
        ),
    }


def measure(stub: Any, k: int, seed: int, encoding: int, tokens: Any) -> dict[str, Any]:
    """Serialized bytes by event kind for one Generate request."""
    from language_ranker.v1 import ranker_pb2 as pb

    request = pb.GenerateRequest(
        prompt=pb.Prompt(text=PROMPT),
        k=k,
        sampling=pb.SamplingParams(seed=seed),
        features=pb.FeatureSpec(encoding=encoding),
        token_features=tokens,
    )
    sizes: dict[str, int] = {"instruction": 0, "candidate": 0, "token_features": 0, "usage": 0}
    chunks, largest, response_tokens, seconds = 0, 0, 0, 0.0
    for event in stub.Generate(request, timeout=600):
        kind = event.WhichOneof("event")
        size = event.ByteSize()
        sizes[kind] += size
        if kind == "token_features":
            chunks += 1
            largest = max(largest, size)
        elif kind == "candidate":
            response_tokens += event.candidate.num_tokens
        elif kind == "usage":
            seconds = event.usage.seconds
    per_candidate = (sizes["candidate"] + sizes["token_features"]) / k
    return {
        "bytes_per_candidate": round(per_candidate),
        "candidate_message_bytes": round(sizes["candidate"] / k),
        "token_feature_bytes": round(sizes["token_features"] / k),
        "bytes_per_response_token": round(sizes["token_features"] / max(response_tokens, 1), 1),
        "mean_response_tokens": response_tokens / k,
        "chunks": chunks,
        "largest_message_bytes": largest,
        "server_seconds": round(seconds, 3),
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--k", type=int, default=8, help="candidates per request")
    parser.add_argument("--top-logprobs", type=int, default=8, help="k of logits-only mode")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    import grpc

    from central.server import ServerConfig, start_server
    from language_ranker.v1 import ranker_pb2 as pb
    from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

    k = 4 if args.quick else args.k
    running = start_server(ServerConfig(model="default", port=0))
    results: dict[str, Any] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.CentralServiceStub(channel)
            info = stub.Info(pb.InfoRequest(), timeout=60)
            for name, (encoding, tokens) in _settings(args.top_logprobs).items():
                results[name] = measure(stub, k, seed=11, encoding=encoding, tokens=tokens)
                print(f"{name:28s} {results[name]}", flush=True)
    finally:
        running.stop(grace=0)
    base = results["last-token fp16"]["bytes_per_candidate"]
    for row in results.values():
        row["x_last_token_fp16"] = round(row["bytes_per_candidate"] / base, 1)
    emit(
        {
            "benchmark": "swift_bandwidth",
            "model": info.model_name,
            "hidden_size": info.hidden_size,
            "default_token_layers": list(info.default_token_layers),
            "k": k,
            "threads": threads,
            "settings": results,
        }
    )


if __name__ == "__main__":
    main()
