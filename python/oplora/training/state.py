"""Training state on disk: checkpoints of the trainable parameters, optimizer, scheduler and RNG states."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..run.runner import InputError

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


# --- pickle-free state: tensors in safetensors, the rest in JSON ---------------------------------------

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
_PICKLES = ("optimizer.pt", "scheduler.pt", "rng.pt")


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` as JSON: tensors and numpy arrays go to `tensors` (by index), tuples and dicts keep their types."""
    import numpy as np

    if isinstance(obj, torch.Tensor):
        tensors[str(len(tensors))] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": str(len(tensors) - 1)}
    if isinstance(obj, np.ndarray):
        tensors[str(len(tensors))] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": str(len(tensors) - 1)}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x, tensors) for x in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"training state: cannot store a {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(x, tensors) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_decode(x, tensors) for x in obj["__tuple__"])
    return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` (state dicts, RNG states) as FOLDER/training_state.{safetensors,json}: no pickle."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors)
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    (Path(folder) / STATE_JSON).write_text(json.dumps(encoded))


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file; InputError naming it when it is truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except SafetensorError as e:
        raise InputError(
            f"checkpoint {file}: cannot be read ({e}); delete its folder to resume from an earlier one"
        ) from None


def load_training_state(folder: Path) -> dict[str, Any]:
    """Read what `save_training_state` wrote. A checkpoint holding pickle files (`.pt`) is refused unread."""
    folder = Path(folder)
    for name in _PICKLES:
        if (folder / name).exists():
            raise InputError(
                f"checkpoint {folder / name}: a pickle file; oplora never unpickles training state "
                f"(it could run arbitrary code). Resume needs {STATE_TENSORS} + {STATE_JSON}"
            )
    for name in (STATE_TENSORS, STATE_JSON):
        if not (folder / name).exists():
            raise InputError(f"checkpoint {folder}: {name} is missing")
    return _decode(json.loads((folder / STATE_JSON).read_text()), _load_tensors(folder / STATE_TENSORS))


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
    """Write DIR/checkpoints/step-NNNNNN/ (trainable.safetensors, training_state.{safetensors,json} with the
    optimizer, scheduler and RNG states, state.json) atomically: a folder is renamed into place only when complete, so `latest_checkpoint`
    never returns a half-written one. `module` is the unwrapped module (accelerator.unwrap_model)."""
    from safetensors.torch import save_file

    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(module), str(tmp / "trainable.safetensors"))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()}
    save_training_state(tmp, state)
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
    (`step` and whatever `extra` was saved). Refuses (InputError: exit 2) a checkpoint whose parameter names
    or shapes differ."""
    training = load_training_state(path)
    saved = _load_tensors(Path(path) / "trainable.safetensors")
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing, unexpected = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
        raise InputError(
            f"checkpoint {path}: parameters differ from the model (missing {missing}, "
            f"unexpected {unexpected}); was it written by another spec?"
        )
    with torch.no_grad():
        for n, p in params.items():
            if saved[n].shape != p.shape:
                raise InputError(
                    f"checkpoint {path}: {n} has shape {tuple(saved[n].shape)}, model {tuple(p.shape)}"
                )
            p.copy_(saved[n].to(p.device, p.dtype))
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    _set_rng_state(training["rng"])
    return json.loads((Path(path) / "state.json").read_text())
