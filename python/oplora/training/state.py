"""Training state on disk: checkpoints of the trainable parameters, optimizer, scheduler and RNG states."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# --- checkpoints ------------------------------------------------------------------------------------------


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's trainable parameters by name (detached, on the CPU, contiguous)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in module.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:06d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write DIR/checkpoints/step-NNNNNN/ (trainable.safetensors, optimizer.pt, scheduler.pt, rng.pt,
    state.json) atomically: a folder is renamed into place only when complete, so `latest_checkpoint`
    never returns a half-written one. `module` is the unwrapped module (accelerator.unwrap_model)."""
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(module), str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    tmp.rename(final)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under DIR/checkpoints, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    found = [(s, p) for s, p in found if (p / "state.json").exists()]
    return max(found)[1] if found else None


def load_checkpoint(
    path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore trainable params, optimizer, scheduler and RNG states from `path`; returns state.json
    (`step` and whatever `extra` was saved). Refuses a checkpoint whose parameter names or shapes differ."""
    from safetensors.torch import load_file

    saved = load_file(str(Path(path) / "trainable.safetensors"))
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing, unexpected = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
        raise ValueError(
            f"checkpoint {path}: parameters differ from the model (missing {missing}, "
            f"unexpected {unexpected}); was it written by another spec?"
        )
    with torch.no_grad():
        for n, p in params.items():
            if saved[n].shape != p.shape:
                raise ValueError(
                    f"checkpoint {path}: {n} has shape {tuple(saved[n].shape)}, model {tuple(p.shape)}"
                )
            p.copy_(saved[n].to(p.device, p.dtype))
    optimizer.load_state_dict(torch.load(Path(path) / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(Path(path) / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(Path(path) / "rng.pt", weights_only=False))
    return json.loads((Path(path) / "state.json").read_text())
