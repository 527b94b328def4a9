"""P8: central on Ray Serve: 1 vs 2 replicas, and what Ray adds to a call.

Three endpoints serving the real default model, measured in one run:

    plain   `ranker-central serve` in a subprocess (one torch thread)
    ray-1   `central.scale` on a local 2-CPU Ray cluster, 1 replica (1 CPU: one thread)
    ray-2   the same deployment with 2 replicas

Throughput: C concurrent clients (8, then 50) each send `--calls` Generate
calls (K=4, 16 new tokens, a distinct seed per call, the same seeds on every
endpoint, so every endpoint generates the same tokens); aggregate tokens/s is
the generated tokens (from Usage) over the wall time of the whole batch.

Overhead: the latency of one call on an idle endpoint, plain against ray-1,
interleaved call by call: Info (no model work) and Generate with K=1 and one
token. The difference of the medians is what the proxy, the Ray hop to the
replica and back, and the replica's thread hand-off add to each call.

    python benchmarks/p8_scale_out.py [--quick] [--clients 8,50] [--calls 2]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from _common import ROOT, base_parser, emit, median

K, TOKENS = 4, 16  # per Generate call in the throughput runs
PROMPT = "Write a short poem about the sea."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def plain_server(model: str, threads: int) -> Iterator[str]:
    """`ranker-central serve` in a subprocess; yields its address once it serves."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "central.cli", "serve", "--model", model, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 300
            while True:
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    break
                except grpc.RpcError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ranker-central serve did not start") from None
                    time.sleep(1)
        yield target
    finally:
        process.terminate()
        process.wait(timeout=60)


def scaled(model: str, replicas: int, max_ongoing_requests: int) -> Any:
    """The model on Ray Serve (a local 2-CPU cluster, started on first use)."""
    from central.scale import ScaleConfig, start_scaled

    config = ScaleConfig(
        model=model,
        replicas=replicas,
        num_cpus=2,
        port=_SCALE_PORT,
        http_port=_HTTP_PORT,
        max_ongoing_requests=max_ongoing_requests,
    )
    return start_scaled(config, ray_init={"log_to_driver": False})


_SCALE_PORT, _HTTP_PORT = _free_port(), _free_port()  # fixed for the run: Serve keeps its first


def _stub(target: str) -> Any:
    import grpc

    from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

    return pb_grpc.CentralServiceStub(grpc.insecure_channel(target))


def _generate(stub: Any, seed: int, k: int = K, tokens: int = TOKENS) -> int:
    """One Generate call; returns the tokens it generated."""
    from language_ranker.v1 import ranker_pb2 as pb

    request = pb.GenerateRequest(
        prompt=pb.Prompt(text=PROMPT),
        k=k,
        sampling=pb.SamplingParams(max_new_tokens=tokens, seed=seed),
    )
    responses = list(stub.Generate(request, timeout=600))
    return responses[-1].usage.generated_tokens


def throughput(target: str, clients: int, calls: int) -> dict[str, float]:
    """Aggregate tokens/s of `clients` concurrent clients, `calls` Generate calls each."""
    stub = _stub(target)
    _generate(stub, seed=0)  # warm: connection, replicas' first pass

    def client(index: int) -> int:
        return sum(_generate(stub, seed=1000 + index * calls + i) for i in range(calls))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 2), "tok_s": round(tokens / seconds, 1)}


def overhead(targets: dict[str, str], reps: int) -> dict[str, dict[str, float]]:
    """Median ms of Info and of a 1-token K=1 Generate per endpoint, interleaved."""
    from language_ranker.v1 import ranker_pb2 as pb

    stubs = {name: _stub(target) for name, target in targets.items()}
    probes: dict[str, Callable[[Any], object]] = {
        "info": lambda stub: stub.Info(pb.InfoRequest(), timeout=60),
        "generate_1_token": lambda stub: _generate(stub, seed=1, k=1, tokens=1),
    }
    result: dict[str, dict[str, float]] = {}
    for probe_name, probe in probes.items():
        for stub in stubs.values():
            probe(stub)  # warm
        seconds: dict[str, list[float]] = {name: [] for name in stubs}
        for rep in range(reps):
            order = list(stubs) if rep % 2 == 0 else list(reversed(stubs))
            for name in order:
                started = time.perf_counter()
                probe(stubs[name])
                seconds[name].append(time.perf_counter() - started)
        result[probe_name] = {name: round(1000 * median(v), 1) for name, v in seconds.items()}
    return result


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--clients", default="8,50", help="comma-separated client counts")
    parser.add_argument("--calls", type=int, default=2, help="Generate calls per client")
    parser.add_argument("--reps", type=int, default=30, help="calls per overhead probe")
    parser.add_argument("--model", default="default", help="what every endpoint serves")
    parser.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=64,
        help="calls one replica takes at once (ranker-central-scale's default)",
    )
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    calls = 1 if args.quick else args.calls
    reps = 10 if args.quick else args.reps
    threads = max(args.threads, 1)  # the plain server; each replica gets 1 (Ray: 1 CPU)
    began = time.perf_counter()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; K={K}, {TOKENS} tokens")

    rates: dict[str, dict[str, Any]] = {}
    with plain_server(args.model, threads) as plain:
        ray_one = scaled(args.model, 1, args.max_ongoing_requests)
        ray_target = f"127.0.0.1:{ray_one.port}"
        costs = overhead({"plain": plain, "ray-1": ray_target}, reps)
        for probe, ms in costs.items():
            added = ms["ray-1"] - ms["plain"]
            print(f"{probe:17s} plain {ms['plain']:7.1f} ms  ray-1 {ms['ray-1']:7.1f} ms  "
                  f"Ray adds {added:+.1f} ms")  # fmt: skip
        for name, target in (("plain", plain), ("ray-1", ray_target)):
            rates[name] = {str(c): throughput(target, c, calls) for c in clients}
            _print(name, rates[name])
    try:
        scaled(args.model, 2, args.max_ongoing_requests)  # the same app, now 2 replicas
        rates["ray-2"] = {str(c): throughput(ray_target, c, calls) for c in clients}
        _print("ray-2", rates["ray-2"])
    finally:
        ray_one.stop()  # removes the application and ends the Ray cluster it started
    speedup = {
        str(c): round(rates["ray-2"][str(c)]["tok_s"] / rates["ray-1"][str(c)]["tok_s"], 2)
        for c in clients
    }
    print(f"2 replicas / 1 replica: {speedup}; total {time.perf_counter() - began:.0f} s")
    emit(
        {
            "benchmark": "p8_scale_out",
            "cores": os.cpu_count(),
            "k": K,
            "tokens": TOKENS,
            "calls_per_client": calls,
            "max_ongoing_requests": args.max_ongoing_requests,
            "tok_s": rates,
            "speedup_2_vs_1": speedup,
            "overhead_ms": costs,
        }
    )


def _print(name: str, by_clients: dict[str, dict[str, float]]) -> None:
    for clients, r in by_clients.items():
        print(f"{name:6s} {clients:>3s} clients: {r['tok_s']:7.1f} tok/s "
              f"({r['tokens']} tokens in {r['seconds']} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
