"""Where the PyTorch models run: ``device: auto`` uses a CUDA GPU when PyTorch sees one and the
CPU otherwise; no model requires a GPU."""

from __future__ import annotations

import torch

from cropchain.errors import ConfigError

#: accepted settings (also the schema's pattern)
DEVICE_HELP = "auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device of a ``device`` setting: ``"auto"`` (``cuda`` when
    ``torch.cuda.is_available()``, else ``cpu``), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    ConfigError
        an unknown name, or ``cuda`` asked for where PyTorch sees no GPU.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = "auto" if device is None else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {name!r} asked for, but PyTorch sees no CUDA GPU here: use `auto` or `cpu`"
            )
        return torch.device(name)
    raise ConfigError(f"device: {name!r} is not a device; use {DEVICE_HELP}")
