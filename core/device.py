"""Choosing the compute device and dtype: CUDA with bf16 where a GPU is present, else CPU float32."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import TExplainError


class DeviceError(TExplainError, RuntimeError):
    """The device asked for is not on this machine (a GPU where torch sees none), or is not a device name."""


@dataclass(frozen=True)
class Compute:
    device: torch.device
    dtype: torch.dtype  # dtype the frozen models run in

    @property
    def label(self) -> str:
        if self.device.type == "cuda":
            return f"CUDA ({torch.cuda.get_device_name(self.device)}), {str(self.dtype).removeprefix('torch.')}"
        return f"CPU ({torch.get_num_threads()} threads), {str(self.dtype).removeprefix('torch.')}"


def resolve(device: str | torch.device = "auto", dtype: str | torch.dtype | None = None) -> Compute:
    """`device="auto"` picks CUDA when available. `dtype=None` picks bf16 on CUDA and float32 on CPU."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise DeviceError(f"device {device!r} is not a device: use auto, cpu, cuda or cuda:N") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was asked for (--device), but torch sees no CUDA GPU on this "
                              "machine; use --device cpu (or auto: the GPU where there is one)")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} was asked for (--device), but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dtype is None:
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        dt = names[dtype]
    else:
        dt = dtype
    return Compute(dev, dt)
