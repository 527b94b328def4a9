"""What a generation costs on this machine: the figures behind the README's hardware guide.

For each model, a fresh `ranker-central serve` process (one engine, `--threads
N`) and, against it, what an app asks through `PersonalRanker.generate`: K
candidates with the greedy answer first, both vectors and the mean entropy.
Reported per (model, threads): seconds to SERVING, resident memory after the
load and at its peak (VmRSS / VmHWM of the server process), and the median
wall time of K=8 x 128 new tokens (the README snippet's request, 128 being the
server's default) and K=4 x 64, with generated tokens per second. The edge
side (ranking, recording) is not in these figures: it costs milliseconds.
`--weights` is passed to every server (auto: int8 linears for SmolLM2 on a
CPU, dense for Gemma 3; the row names the format the server reported).

    python benchmarks/generation_cost.py [--quick] [--models default,gemma3-270m]
        [--engine-threads 1,2] [--weights auto|dense|int8]
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, base_parser, emit, median

# "serving NAME (DEVICE, FORMAT) on HOST:PORT"; FORMAT is int8 or the dense dtype
SERVING_LINE = re.compile(
    r"serving (?P<name>\S+) \((?P<device>[^,]+), (?P<format>[^)]+)\) on (?P<address>\S+)"
)
SNIPPET = "Which number is larger, 47 or 74? Reply with only the number."
STORY = "Tell a long story about a lighthouse keeper and a storm."
# name -> (prompt, K, max new tokens)
REQUESTS = {"snippet": (SNIPPET, 8, 128), "long": (STORY, 8, 128), "short": (STORY, 4, 64)}


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def measure(model: str, threads: int, reps: int, weights: str) -> dict[str, float | str]:
    from edge.runtime.client import CentralClient

    started = time.perf_counter()
    command = [sys.executable, "-m", "central.cli", "serve", "--port", "0", "--model", model]
    server = subprocess.Popen(
        [*command, "--threads", str(threads), "--weights", weights],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        match = None
        while match is None:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError(f"ranker-central serve --model {model} exited")
            match = SERVING_LINE.search(line)
        result: dict[str, float | str] = {
            "model": match["name"],
            "threads": threads,
            "weights_format": match["format"],
        }
        result["start_s"] = time.perf_counter() - started
        result["rss_loaded_mb"] = _memory_mb(server.pid)[0]
        options = {"vectors": ("last", "mean"), "mean_entropy": True, "greedy_first": True}
        with CentralClient(match["address"], timeout=1800) as central:
            for name, (prompt, k, tokens) in REQUESTS.items():
                seconds, generated = [], []
                for rep in range(reps):
                    t = time.perf_counter()
                    generation = central.generate(
                        prompt, k, max_new_tokens=tokens, seed=rep, **options
                    )
                    seconds.append(time.perf_counter() - t)
                    generated.append(sum(len(c.token_ids) for c in generation.candidates))
                result[f"{name}_s"] = median(seconds)
                result[f"{name}_tokens"] = median([float(g) for g in generated])
                result[f"{name}_tokens_per_s"] = sum(generated) / sum(seconds)
        result["rss_peak_mb"] = _memory_mb(server.pid)[1]
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    from central.model import WEIGHT_FORMATS

    parser = base_parser(__doc__)
    parser.add_argument("--models", default="default,gemma3-270m", help="comma-separated")
    parser.add_argument("--engine-threads", default="1,2", help="server --threads, comma-separated")
    parser.add_argument(
        "--weights", default="auto", choices=WEIGHT_FORMATS, help="servers' --weights"
    )
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    rows = []
    for model in args.models.split(","):
        for threads in (int(t) for t in args.engine_threads.split(",")):
            row = measure(model, threads, reps, args.weights)
            rows.append(row)
            timings = ", ".join(
                f"{name} {row[f'{name}_s']:.1f} s ({row[f'{name}_tokens']:.0f} tokens, "
                f"{row[f'{name}_tokens_per_s']:.0f}/s)"
                for name in REQUESTS
            )
            print(
                f"{row['model']} ({row['weights_format']}) x{threads} threads: "
                f"start {row['start_s']:.1f} s, "
                f"RSS {row['rss_loaded_mb']:.0f} MB loaded / {row['rss_peak_mb']:.0f} MB peak; "
                f"{timings}",
                flush=True,
            )
    emit({"reps": reps, "rows": rows})


if __name__ == "__main__":
    main()
