"""What the Python side runs on: package versions and the torch device a spec asks for."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

PACKAGES = (
    "torch",
    "peft",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "datasets",
    "numpy",
    "oplora",
)


def versions() -> dict[str, str | None]:
    """Installed versions of the packages oplora runs on (None when one is missing)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolve_device(name: str) -> Any:
    """`auto` -> cuda when available else cpu; `cpu`, `cuda`, `cuda:N` checked against what exists."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {name!r} was asked for, but torch {torch.__version__} sees no CUDA device"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {name!r} does not exist (torch sees {torch.cuda.device_count()} CUDA devices)"
            )
        return dev
    raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def doctor() -> dict[str, Any]:
    """Environment report: versions, devices, and what is missing."""
    v = versions()
    report: dict[str, Any] = {
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "versions": v,
        "missing": [k for k, val in v.items() if val is None],
        "cuda_available": False,
        "cuda_devices": [],
    }
    try:
        import torch

        report["cuda_available"] = bool(torch.cuda.is_available())
        report["cuda_devices"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "total_memory_bytes": torch.cuda.get_device_properties(i).total_memory,
            }
            for i in range(torch.cuda.device_count())
        ]
    except ImportError:
        pass
    report["ok"] = not report["missing"]
    return report
