"""The pieces of a training loop: optimizer, lr schedule, accelerator, precision and peak memory."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

# --- optimizer and schedule -------------------------------------------------------------------------------


# Device types with torch's fused Adam/AdamW kernels (torch >= 2.4 adds the CPU); elsewhere: foreach.
FUSED_ADAM_DEVICES = frozenset({"cuda", "cpu", "mps", "xpu", "hpu"})


def _flat_params(params: list[nn.Parameter] | list[dict[str, Any]]) -> list[torch.Tensor]:
    return [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]


def optimizer_kernel(params: list[nn.Parameter] | list[dict[str, Any]]) -> dict[str, bool]:
    """The fastest torch kernel for these params: ``{"fused": True}`` when every param is a floating-point
    tensor on a device with fused Adam kernels, else ``{"foreach": True}``. Same update rule either way:
    the default per-parameter loop costs more than the math on small tensors (fused AdamW is ~3.5x faster
    per step on a 2-core CPU with OP-LoRA's 7 generator tensors per group)."""
    flat = _flat_params(params)
    if flat and all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in flat):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(
    params: list[nn.Parameter] | list[dict[str, Any]], opt: dict[str, Any]
) -> torch.optim.Optimizer:
    """The optimizer named by the spec's `optimizer` block (`name`, `lr`, `momentum`, `weight_decay`).

    `params` is a parameter list or torch param groups (dicts with "params" and per-group overrides).
    Adam/AdamW use torch's fused kernel where the params' device and dtype allow (see `optimizer_kernel`),
    SGD its foreach kernel: one code path for every task.
    """
    adam_kw = optimizer_kernel(params)
    name, lr, wd = opt.get("name", "adamw"), float(opt.get("lr", 1e-3)), float(opt.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **adam_kw)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **adam_kw)
    if name == "momentum":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(opt.get("momentum", 0.9)), weight_decay=wd, foreach=True
        )
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, foreach=True)
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


def input_warnings(train: dict[str, Any], examples: int) -> list[tuple[str, str]]:
    """(field, message) for `train` values that run but are likely mistakes, given the training set's size:
    a warm-up as long as the run (the lr never reaches optimizer.lr) and a batch larger than the data (each
    batch repeats examples). Tasks report them with `ctx.warn` before loading weights."""
    out = []
    steps, warmup, batch = int(train["steps"]), int(train.get("lr_warmup_steps", 0)), int(train["batch_size"])
    if warmup and warmup >= steps:
        out.append(
            ("train.lr_warmup_steps", f"{warmup} >= train.steps {steps}: the lr never reaches optimizer.lr")
        )
    if batch > examples:
        out.append(
            (
                "train.batch_size",
                f"{batch} is more than the {examples} training examples: each batch repeats some",
            )
        )
    return out


def in_distributed_launch() -> bool:
    """True inside `accelerate launch` / torchrun (WORLD_SIZE > 1 set by the launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_accelerator(train: dict[str, Any], device: torch.device, project_dir: Path | None = None) -> Any:
    """An `accelerate.Accelerator` for the spec's `train` block: gradient accumulation, mixed precision,
    CPU when `device` is the CPU. Outside a distributed launch the process-wide accelerate state is reset
    first, so several runs in one process (tests, sweeps) each get their own settings."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ..run.runner import InputError

    if train.get("mixed_precision") == "fp16" and device.type == "cpu":
        raise InputError(
            'train.mixed_precision: "fp16" needs a GPU (the run is on the CPU, which has no fp16 autocast); '
            'use "bf16" or "no"'
        )
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


# --- measurement -------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak window (no-op on the CPU, where the process peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _proc_status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _max_rss_bytes() -> int:
    """The process's peak resident set size: VmHWM on Linux (ru_maxrss survives exec, so it would report
    the parent's peak, e.g. Node's), ru_maxrss elsewhere (kilobytes on Linux, bytes on macOS)."""
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def memory_baseline(device: torch.device, libraries: Iterable[str] = ()) -> int:
    """What `peak_memory_bytes` subtracts, taken just before a task builds its model. CUDA: 0 (the
    allocator's peak holds this run's tensors only). CPU: the current resident set size (VmRSS; off Linux
    the peak so far) after importing `libraries` (e.g. "peft", "diffusers"): the interpreter, torch and the
    libraries' code are not this run's memory; code they load lazily while building the model is. With
    OPLORA_PEAK_TENSOR_BYTES=1 (CPU) it also starts the tensor count `peak_tensor_bytes` reads."""
    if device.type == "cuda":
        return 0
    import importlib

    for name in libraries:
        importlib.import_module(name)
    rss = _proc_status_bytes("VmRSS")
    if os.environ.get(TENSOR_PEAK_ENV) == "1":
        _start_tensor_peak()
    return rss if rss is not None else _max_rss_bytes()


# With OPLORA_PEAK_TENSOR_BYTES=1, CPU runs also record `peak_tensor_bytes`: the peak of the bytes held by
# tensors allocated after `memory_baseline` (torch.profiler's memory events: every CPU allocator call with
# its size). Off by default: the profiler's start takes ~1.5 s, it roughly doubles the time of tiny ops (+1-4 s
# a run on bench/memory.py's small models) and it keeps one record per op until the count is read.
TENSOR_PEAK_ENV = "OPLORA_PEAK_TENSOR_BYTES"
_tensor_peak: dict[str, Any] = {}  # {"profiler": the running profiler} or {"bytes": the peak, once read}


def _start_tensor_peak() -> None:
    from torch.profiler import ProfilerActivity, profile

    if "profiler" in _tensor_peak:
        _tensor_peak.pop("profiler").__exit__(None, None, None)
    _tensor_peak.clear()
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    prof.__enter__()
    _tensor_peak["profiler"] = prof


def peak_tensor_bytes() -> int | None:
    """The peak bytes held by CPU tensors allocated since `memory_baseline`, or None unless
    OPLORA_PEAK_TENSOR_BYTES=1 started the count there. The first call stops the count; later calls return
    the same peak. Tensors allocated before the baseline count neither when held nor when freed."""
    prof = _tensor_peak.pop("profiler", None)
    if prof is not None:
        prof.__exit__(None, None, None)
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        held = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            held += e.nbytes()  # negative for a free
            peak = max(peak, held)
        _tensor_peak["bytes"] = peak
    return _tensor_peak.get("bytes")


def tensor_peak_metric() -> dict[str, int]:
    """{"peak_tensor_bytes": n} when the count is on (see `peak_tensor_bytes`), else {}: a result's metric."""
    n = peak_tensor_bytes()
    return {} if n is None else {"peak_tensor_bytes": n}


def peak_memory_bytes(device: torch.device, baseline: int = 0) -> int:
    """CUDA: max memory allocated on `device` since the last `reset_peak_memory` (weights, optimizer state,
    activations; not the CUDA context or the caching allocator's reserve). CPU: the process's peak resident
    set size (VmHWM on Linux, ru_maxrss elsewhere) minus `baseline` (see `memory_baseline`), i.e. the RSS
    growth this run added; with baseline 0 the whole process's peak."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return max(0, _max_rss_bytes() - baseline)


# --- divergence -------------------------------------------------------------------------------


class TrainingDiverged(ValueError):
    """The training loss became NaN or ±inf: the run stops there, before the update that step would apply,
    so the weights (and every checkpoint written so far) are the last finite ones."""


def diverged(step: int, loss: float, lrs: Iterable[float], fix: str) -> TrainingDiverged:
    """The error for a non-finite `loss` at optimizer step `step` under learning rates `lrs`; `fix` names the
    spec fields to change, e.g. "lower optimizer.lr"."""
    lr = ", ".join(f"{x:g}" for x in sorted(set(lrs)))
    return TrainingDiverged(f"training diverged at step {step}: loss {loss} with lr {lr}; {fix}")


def _diverged_fix(accelerator: Any, max_grad_norm: float) -> str:
    """The fields of the model tasks' `train` block that tame a diverging run."""
    fix = f"lower optimizer.lr or train.max_grad_norm (was {max_grad_norm:g})"
    if accelerator.mixed_precision == "fp16":
        fix += ', or set train.mixed_precision to "bf16" or "no" (was "fp16")'
    return fix


def optimizer_step(
    accelerator: Any,
    module: nn.Module,
    optimizer: Any,
    params: list[nn.Parameter],
    max_grad_norm: float,
    micro_losses: Iterable[Callable[[], torch.Tensor]],
    step: int,
) -> float:
    """Optimizer step `step` (1-based) over gradient-accumulation micro-batches, the accelerate way: each
    callable computes one micro-batch's loss; gradients sync, clip and step on the last. Returns the mean
    loss over the micro-batches and the processes (the one all-reduce of a step, on the last micro-batch).

    A non-finite mean loss raises `TrainingDiverged` before the update, on every process alike, so the
    weights stay the last finite ones. Only the loss counts: under fp16 a non-finite gradient is the
    GradScaler's business (it skips that step and lowers its scale).

    OP-LoRA (`module` unwraps to an `OPLoRAModel`): A and B are generated once for the step, every
    micro-batch's backward accumulates into them, and the generator's backward runs once, before clipping
    (`OPLoRAModel.generation_per_step`), instead of a generator forward and backward per micro-batch.
    """
    from ..bind import OPLoRAModel

    op = accelerator.unwrap_model(module)
    per_step = op.generation_per_step() if isinstance(op, OPLoRAModel) else contextlib.nullcontext()
    losses: list[float] = []
    mean: float | None = None  # set on the micro-batch that syncs and steps
    with per_step as factors:
        for loss_fn in micro_losses:
            with accelerator.accumulate(module):
                loss = loss_fn()
                accelerator.backward(loss)
                losses.append(float(loss.detach()))  # its host sync, as before: no new one
                if accelerator.sync_gradients:
                    mean = sum(losses) / len(losses)
                    if accelerator.num_processes > 1:
                        mean = float(
                            accelerator.reduce(torch.tensor(mean, device=accelerator.device), "mean")
                        )
                    if not math.isfinite(mean):
                        lrs = [g["lr"] for g in optimizer.param_groups]
                        raise diverged(step, mean, lrs, _diverged_fix(accelerator, max_grad_norm))
                    if factors is not None:
                        factors.backward()
                    accelerator.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return mean if mean is not None else sum(losses) / len(losses)
