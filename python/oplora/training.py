"""Small training helpers shared by the model tasks (text_to_image, llava): plain functions, no base class.

    spec.optimizer ──build_optimizer──► torch optimizer over the trainable params
    spec.train     ──build_lr_scheduler──► diffusers' get_scheduler (constant / linear / cosine, warm-up)
                   ──build_accelerator──► accelerate.Accelerator (accumulation, precision, cpu)
    every N steps  ──save_checkpoint──► DIR/checkpoints/step-000010/ (trainable params, optimizer,
                                        scheduler, RNG states, step); latest_checkpoint + load_checkpoint resume
    at the end     ──save_adapter──► finalize_adapter (collapse OP-LoRA) + save_pretrained + "adapter" artifact

A checkpoint holds only the *trainable* parameters, by name (the generator's for OP-LoRA, PEFT's lora_A /
lora_B for LoRA), so it stays small next to a frozen base of billions of parameters, and works whether or
not the module was wrapped by accelerate (names are taken from the unwrapped module).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# --- optimizer and schedule -------------------------------------------------------------------------------


def build_optimizer(
    params: list[nn.Parameter] | list[dict[str, Any]], opt: dict[str, Any]
) -> torch.optim.Optimizer:
    """The optimizer named by the spec's `optimizer` block (`name`, `lr`, `momentum`, `weight_decay`).

    `params` is a parameter list or torch param groups (dicts with "params" and per-group overrides).
    """
    name, lr, wd = opt.get("name", "adamw"), float(opt.get("lr", 1e-3)), float(opt.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=float(opt.get("momentum", 0.9)), weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    raise ValueError(f"optimizer.name: expected one of sgd, momentum, adam, adamw, got {name!r}")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, train: dict[str, Any]) -> Any:
    """diffusers' `get_scheduler(train.lr_scheduler)` with `lr_warmup_steps` of linear warm-up over
    `train.steps` optimizer steps. Step it once per optimizer step (not per micro-batch)."""
    from diffusers.optimization import get_scheduler

    name = train.get("lr_scheduler", "constant")
    warmup = int(train.get("lr_warmup_steps", 0))
    if name == "constant" and warmup:  # diffusers' "constant" ignores num_warmup_steps
        name = "constant_with_warmup"
    return get_scheduler(
        name, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=int(train["steps"])
    )


def in_distributed_launch() -> bool:
    """True inside `accelerate launch` / torchrun (WORLD_SIZE > 1 set by the launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_accelerator(train: dict[str, Any], device: torch.device, project_dir: Path | None = None) -> Any:
    """An `accelerate.Accelerator` for the spec's `train` block: gradient accumulation, mixed precision,
    CPU when `device` is the CPU. Outside a distributed launch the process-wide accelerate state is reset
    first, so several runs in one process (tests, sweeps) each get their own settings."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not in_distributed_launch():
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        gradient_accumulation_steps=int(train.get("gradient_accumulation_steps", 1)),
        mixed_precision=train.get("mixed_precision", "no"),
        cpu=device.type == "cpu",
        project_dir=str(project_dir) if project_dir is not None else None,
    )


def autocast_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype of frozen weights under `mixed_precision` (fp32 when 'no')."""
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


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


# --- measurement and export -------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak window (no-op on the CPU, where the process peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max memory allocated on `device` since the last reset. CPU: the process's peak resident set
    size: VmHWM from /proc/self/status on Linux (ru_maxrss survives exec, so it would report the parent's
    peak, e.g. Node's), ru_maxrss elsewhere (kilobytes on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def save_peft_dir(model: nn.Module, out_dir: Path, adapter_name: str = "default") -> Path:
    """Write a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) for `model`: a
    `PeftModel` saves itself; a model with injected adapters (diffusers' `unet.add_adapter`) is saved
    through PEFT's own state-dict helper, so the files are the same either way."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(out_dir))
        return out_dir
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(out_dir / "adapter_model.safetensors"),
    )
    model.peft_config[adapter_name].save_pretrained(str(out_dir))  # type: ignore[union-attr, index]
    return out_dir


def save_adapter(
    module: nn.Module,
    out_dir: Path,
    ctx: Any | None = None,
    step: int | None = None,
    label: str | None = None,
) -> nn.Module:
    """Collapse (OP-LoRA) or keep (LoRA) the adapter, write it as a PEFT adapter directory, and emit an
    "adapter" artifact when `ctx` is given. Returns the plain model (collapse changes it in place: call once)."""
    from .adapter import finalize_adapter

    plain = finalize_adapter(module)
    save_peft_dir(plain, out_dir)
    if ctx is not None:
        ctx.artifact("adapter", Path(out_dir), step=step, label=label)
    return plain
