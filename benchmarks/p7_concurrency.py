"""P7: central under concurrent load, the batching engine against serialised serving.

Starts `ranker-central serve` on the real default model twice, one after
the other in this run: with `--max-batch-requests 1` (one request at a time,
how central served before the engine) and with the engine's defaults. For
each server and each load, N client threads send Generate calls back to back
over loopback for `--seconds`, while a prober calls the standard health
check every 0.25 s (4 s deadline) and RSS of the server is sampled every
second. Loads: 1, 8 and 50 clients at K=4 and 16 new tokens, and 50 clients
with a mix (K from 1 to 16, 4 to 32 new tokens, seeded per client).

Reports, per server and load: aggregate generated tokens/s, call latency
(p50/p95 of the calls completed in the window, and the mean by Little's law,
which also counts the calls still queued when the window closes), time to
first candidate (p50/p95, from sending the call to its first `candidate`
message, over the calls whose first candidate came in the window), health
p99, errors, RSS (first, peak, last sample); then the engine's ratios
against the serialised server.
Targets at 50 clients: tokens/s >= 4x, p50 <= 1/4, health p99 <= 100 ms,
0 errors, flat RSS.

    python benchmarks/p7_concurrency.py [--quick] [--seconds 60] [--threads 0]
        [--engine-flags "--turn-tokens 128"]
"""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from _common import ROOT, emit
from grpc_health.v1 import health_pb2, health_pb2_grpc

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

PROMPTS = [
    "Write a short poem about the sea.",
    "Give me three tips for sleeping better.",
    "Explain what a hash table is in one paragraph.",
    "What is the capital of France, and why is it famous?",
    "Suggest a name for a small bakery.",
]


@dataclass(frozen=True)
class Load:
    name: str
    clients: int
    mix: bool = False  # K in 1..16 and 4..32 tokens instead of K=4, 16 tokens


LOADS = [
    Load("1 client", 1),
    Load("8 clients", 8),
    Load("50 clients", 50),
    Load("50 mixed", 50, True),
]


@dataclass
class Tally:
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    first_candidates: list[float] = field(default_factory=list)  # seconds to the first one
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closes_at: float = float("inf")  # perf_counter time the window ends; later calls don't count


def start_server(
    batch_requests: int | None, threads: int, weights: str, flags: list[str]
) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "central.cli", "serve", "--model", "default", "--port", "0"]
    command += ["--threads", str(threads), "--weights", weights, *flags]
    if batch_requests is not None:
        command += ["--max-batch-requests", str(batch_requests)]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r":(\d+)\s*$", line)
    if not found:
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return process, int(found.group(1))


def request_for(rng: random.Random, mix: bool) -> pb.GenerateRequest:
    k, tokens = (rng.randint(1, 16), rng.choice([4, 8, 16, 32])) if mix else (4, 16)
    return pb.GenerateRequest(
        prompt=pb.Prompt(text=rng.choice(PROMPTS)),
        k=k,
        sampling=pb.SamplingParams(max_new_tokens=tokens, seed=rng.randrange(1 << 30)),
        features=pb.FeatureSpec(vectors=[pb.FEATURE_VECTOR_LAST, pb.FEATURE_VECTOR_MEAN]),
    )


def client(port: int, seed: int, mix: bool, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                generated, waiting_for_first = 0, True
                for message in stub.Generate(request_for(rng, mix), timeout=600):
                    event = message.WhichOneof("event")
                    if event == "candidate" and waiting_for_first:
                        first, waiting_for_first = time.perf_counter(), False
                        with tally.lock:
                            if first <= tally.closes_at:
                                tally.first_candidates.append(first - started)
                    elif event == "usage":
                        generated = message.usage.generated_tokens
            except grpc.RpcError as error:
                with tally.lock:
                    tally.errors.append(f"{error.code().name}: {error.details()}")
                continue
            finished = time.perf_counter()
            with tally.lock:
                if finished > tally.closes_at:
                    return  # finished after the window: not counted
                tally.tokens += generated
                tally.latencies.append(finished - started)


def prober(port: int, stop: threading.Event, delays: list[float], failures: list[str]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=4)
                delays.append(time.perf_counter() - started)
            except grpc.RpcError as error:
                failures.append(error.code().name)
            stop.wait(0.25)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_load(port: int, pid: int, load: Load, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    tally = Tally()
    delays: list[float] = []
    probe_failures: list[str] = []
    rss: list[float] = []
    threads = [
        threading.Thread(target=client, args=(port, 1000 + i, load.mix, stop, tally), daemon=True)
        for i in range(load.clients)
    ]
    threads.append(
        threading.Thread(target=prober, args=(port, stop, delays, probe_failures), daemon=True)
    )
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    while (elapsed := time.perf_counter() - start) < seconds:
        rss.append(rss_mb(pid))
        time.sleep(min(1.0, seconds - elapsed))
    with tally.lock:
        tally.closes_at = time.perf_counter()
        tokens, latencies, errors = tally.tokens, list(tally.latencies), list(tally.errors)
        firsts = list(tally.first_candidates)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    return {
        "load": load.name,
        "tokens_per_s": tokens / seconds,
        "calls": len(latencies),
        # Closed loop: each client always has one call in flight, so by Little's law the
        # mean latency is clients / completed calls per second. Unlike the percentiles of
        # completed calls it counts calls still waiting when the window closes, which are
        # most calls when a server serves one at a time.
        "mean_latency_s": load.clients * seconds / len(latencies) if latencies else None,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": _quantile(latencies, 0.95),
        "first_candidate_p50_s": statistics.median(firsts) if firsts else None,
        "first_candidate_p95_s": _quantile(firsts, 0.95),
        "health_p99_ms": None if not delays else 1000 * _quantile(delays, 0.99),
        "health_failures": len(probe_failures),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:3],
        "rss_mb": {"first": rss[0], "peak": max(rss), "last": rss[-1]} if rss else None,
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def serve_and_measure(
    name: str,
    batch_requests: int | None,
    seconds: float,
    threads: int,
    weights: str,
    flags: list[str],
) -> list[dict[str, Any]]:
    process, port = start_server(batch_requests, threads, weights, flags)
    try:
        rows = []
        for load in LOADS:
            row = run_load(port, process.pid, load, seconds) | {"server": name}
            print(_line(row), file=sys.stderr, flush=True)
            rows.append(row)
        return rows
    finally:
        process.terminate()
        process.wait(timeout=60)


def _line(row: dict[str, Any]) -> str:
    def f(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rss = row["rss_mb"] or {}
    return (
        f"{row['server']:>10} {row['load']:>11}: {row['tokens_per_s']:7.1f} tok/s, "
        f"{row['calls']:4d} calls, mean {f(row['mean_latency_s'], '6.1f')} s, "
        f"p50 {f(row['p50_s'], '6.2f')} s, "
        f"p95 {f(row['p95_s'], '6.2f')} s, "
        f"first candidate p50 {f(row['first_candidate_p50_s'], '6.2f')} "
        f"/ p95 {f(row['first_candidate_p95_s'], '6.2f')} s, "
        f"health p99 {f(row['health_p99_ms'], '6.1f')} ms ({row['health_failures']} failed), "
        f"{row['errors']} errors, RSS {f(rss.get('first'), '.0f')}/{f(rss.get('peak'), '.0f')}/"
        f"{f(rss.get('last'), '.0f')} MB"
    )


def main() -> None:
    import argparse

    from central.model import WEIGHT_FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each load")
    parser.add_argument("--quick", action="store_true", help="15 s per load")
    parser.add_argument(
        "--threads", type=int, default=0, help="the servers' torch threads (0: torch's choice)"
    )
    parser.add_argument(
        "--weights",
        default="auto",
        choices=WEIGHT_FORMATS,
        help="both servers' weight format (auto: as central picks on this machine)",
    )
    parser.add_argument(
        "--engine-flags",
        default="",
        help="more `ranker-central serve` flags for the engine's server (e.g. '--turn-tokens 128')",
    )
    args = parser.parse_args()
    seconds = 15.0 if args.quick else args.seconds
    flags = args.engine_flags.split()
    serial = serve_and_measure("serialised", 1, seconds, args.threads, args.weights, [])
    engine = serve_and_measure("engine", None, seconds, args.threads, args.weights, flags)
    ratios = {}
    for before, after in zip(serial, engine, strict=True):
        if before["p50_s"] and after["p50_s"] and before["tokens_per_s"]:
            ratios[after["load"]] = {
                "tokens_per_s_x": after["tokens_per_s"] / before["tokens_per_s"],
                "p50_fraction": after["p50_s"] / before["p50_s"],
                "mean_latency_fraction": after["mean_latency_s"] / before["mean_latency_s"],
            }
    emit(
        {
            "benchmark": "p7_concurrency",
            "weights": args.weights,
            "seconds": seconds,
            "engine_flags": flags,
            "rows": serial + engine,
            "ratios": ratios,
        }
    )


if __name__ == "__main__":
    main()
