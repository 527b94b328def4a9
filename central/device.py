"""Where the model runs (``--device``), in which dtype (``--dtype``), and the one way
tensors cross between the host and that device.

A device is named ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``auto`` takes the
first CUDA device when torch sees one and the CPU otherwise. The dtype
``auto`` is float32 on the CPU (what the oneDNN fast path in `decoding` is
built for) and bfloat16 on a GPU (float16 on one without bfloat16 kernels,
before compute capability 8.0).

The checks run before a model loads, so a machine that cannot do what was
asked says so in one line (``--device cuda: torch 2.13.0+cpu was built
without CUDA``) instead of minutes later. `check_device_name` is torch-free
(the command line runs it with every other flag); `resolve_device` and
`resolve_dtype` import torch and ask the machine.

Everything the engine computes stays on the model's device; what crosses is
named here, so it can be found and counted:

- `to_device` uploads small host bookkeeping (token ids, row indices, positions)
  without waiting for the GPU: pinned memory and a non-blocking copy, where a
  plain ``.to("cuda")`` would synchronise with every kernel queued before it;
- `to_host` brings back what goes on the wire: the engine calls it once per
  decode step for the sampled tokens of every row, and once for the vectors of
  the rows that finished (never once per row).

On the CPU both are free: the tensor is returned as it is.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ._errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTO",
    "DEVICE_NAMES",
    "check_device_name",
    "resolve_device",
    "resolve_dtype",
    "tensor_on",
    "to_device",
    "to_host",
]

AUTO = "auto"  # the device or dtype the machine suggests
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"  # what --device accepts, for messages and --help
_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """`ConfigError` unless ``name`` is one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

    Torch-free: says nothing about whether this machine has that device.
    """
    if not _NAME.match(name):
        raise ConfigError("--device", f"must be {DEVICE_NAMES}, got {name!r}")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` means here, or `ConfigError` saying why it cannot be used."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == AUTO:
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device", f"{name}: {_no_cuda_reason()}; use --device cpu or auto")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            "--device", f"{name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def _no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} was built without CUDA (a CPU-only build)"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The dtype to load in: ``auto`` resolved for ``device``, or `ConfigError` if the
    device cannot compute in ``dtype``."""
    import torch

    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if dtype == AUTO:
            return "bfloat16" if bf16 else "float16"
        if dtype == "bfloat16" and not bf16:
            major, minor = torch.cuda.get_device_capability(device)
            raise ConfigError(
                "--dtype",
                f"bfloat16 is not supported by {device} ({torch.cuda.get_device_name(device)}, "
                f"compute capability {major}.{minor}; bfloat16 needs 8.0): use float16 or float32",
            )
        return dtype
    return "float32" if dtype == AUTO else dtype


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``, copied without waiting for the kernels queued there.

    The copy goes through pinned memory, which torch's caching host allocator
    keeps until the copy has run, so the caller may change ``tensor`` at once.
    """
    if tensor.device == device:
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def tensor_on(
    values: object, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``torch.tensor(values)`` (long unless ``dtype`` says otherwise) on ``device``."""
    import torch

    host = torch.tensor(values, dtype=torch.long if dtype is None else dtype, device="cpu")
    return to_device(host, device)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` as a numpy array the caller owns: the only copy from the device.

    Waits for the kernels that produce it. On the CPU the result is a copy too,
    so later in-place updates of ``tensor`` cannot change what was sent.
    """
    return tensor.detach().to("cpu", copy=True).numpy()
