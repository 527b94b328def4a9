"""Where the model runs: ``--device`` and ``--dtype`` resolved and refused before
anything loads, and the engine keeping its work on the model's device.

This machine has no GPU, so the CUDA path itself cannot run here. What can:

- the choice of device and dtype, and the one-line refusals (no CUDA, a
  device index this machine lacks, out of memory while loading);
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from central._errors import ConfigError, ModelLoadError
from central.cli import main as central_main
from central.config import ServerConfig, validate_config
from central.decoding import PackedLinear
from central.device import resolve_device, resolve_dtype
from central.model import load_model
from central.scale.config import ScaleConfig, replica_device, validate_scale_config

HAS_CUDA = torch.cuda.is_available()


# ------------------------------------------------------------------ choosing


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_names_pass_the_flag_check(name: str) -> None:
    assert validate_config(ServerConfig(device=name), {}).device == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_other_device_names_are_refused_with_the_flag_named(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(ServerConfig(device=name), {})
    assert raised.value.option == "--device"
    assert "auto, cpu, cuda or cuda:N" in str(raised.value)


def test_auto_takes_a_cuda_device_when_torch_sees_one_else_the_cpu() -> None:
    expected = torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_this_machine_lacks_is_refused_saying_why() -> None:
    name = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"
    with pytest.raises(ConfigError) as raised:
        resolve_device(name)
    message = str(raised.value)
    assert message.startswith(f"--device {name}: ") and "\n" not in message
    if not HAS_CUDA:
        assert "without CUDA" in message or "sees no CUDA device" in message


def test_dtype_auto_is_float32_on_the_cpu_and_explicit_dtypes_pass() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == "float32"
    for dtype in ("float32", "bfloat16", "float16"):
        assert resolve_dtype(dtype, cpu) == dtype
    if HAS_CUDA:  # bfloat16 where the GPU has it, float16 where it does not
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        assert resolve_dtype("auto", torch.device("cuda", 0)) == (
            "bfloat16" if bf16 else "float16"
        )


def test_serve_on_a_device_this_machine_lacks_fails_at_once_before_loading(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # A checkpoint directory that cannot load: had the model been read first, the
    # error would be about it, not the device.
    broken = tmp_path / "broken"
    broken.mkdir()
    name = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "central.cli", "serve", "--device", name, "--model", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ranker-central: --device {name}: ")
    assert time.monotonic() - started < 60  # an import of torch, not a model load


def test_a_misspelt_device_is_one_line_before_torch(capsys: pytest.CaptureFixture[str]) -> None:
    assert central_main(["serve", "--device", "gpu0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ranker-central: --device must be auto, cpu, cuda or cuda:N, got 'gpu0'"]


def test_device_auto_serves_here_on_the_cpu_in_float32_with_packed_weights(
    tiny_checkpoint: Path,
) -> None:
    from central.server import start_server

    running = start_server(ServerConfig(model=str(tiny_checkpoint), port=0, device="auto"))
    try:
        loaded = running.servicer.loaded
        expected = "cuda" if HAS_CUDA else "cpu"
        assert loaded.device.type == expected
        assert loaded.model.dtype == (torch.bfloat16 if HAS_CUDA else torch.float32)
        packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
        assert bool(packed) == (not HAS_CUDA)  # the CPU path keeps its oneDNN packing
    finally:
        running.stop(grace=0)


def test_running_out_of_memory_while_loading_is_one_line_naming_it(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A checkpoint declaring an MLP of 2**40 columns whose weights it lacks: the real
    CPU allocator refuses the 2 PB transformers asks for while initialising them."""
    from safetensors.torch import load_file, save_file

    huge = tmp_path / "huge"
    shutil.copytree(tiny_checkpoint, huge)
    config = json.loads((huge / "config.json").read_text())
    config["intermediate_size"] = 2**40
    (huge / "config.json").write_text(json.dumps(config))
    weights = load_file(huge / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if ".mlp." not in name}
    save_file(kept, huge / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as raised:
        load_model(str(huge))
    message = str(raised.value)
    assert message.startswith("out of memory loading huge onto cpu in float32")
    assert "can't allocate memory" in message and "\n" not in message


def test_replicas_run_on_the_gpus_they_reserve() -> None:
    def config(**fields: object) -> ScaleConfig:
        return validate_scale_config(ScaleConfig(**fields), {})  # type: ignore[arg-type]

    assert replica_device(config()) == "cpu"
    assert replica_device(config(gpus_per_replica=1.0)) == "cuda"
    assert replica_device(config(gpus_per_replica=0.5)) == "cuda"  # a shared GPU
    assert replica_device(config(device="cuda:1", gpus_per_replica=2.0)) == "cuda:1"
    refusals = [
        ({"device": "cuda"}, "--device", "needs --gpus-per-replica above 0"),
        ({"device": "cpu", "gpus_per_replica": 1.0}, "--gpus-per-replica", "never uses"),
        ({"device": "cuda:1", "gpus_per_replica": 1.0}, "--device", "sees 1 GPU(s)"),
        ({"device": "tpu"}, "--device", "must be auto, cpu, cuda or cuda:N"),
    ]
    for fields, option, words in refusals:
        with pytest.raises(ConfigError) as raised:
            config(**fields)
        assert raised.value.option == option and words in str(raised.value)
