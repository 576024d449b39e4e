"""Plans: what a spec will cost before it runs (parameter counts and training memory), built from shapes only.

Per adapted layer with lora_A weight (r, d_in) and lora_B weight (d_out, r), nA = r·d_in, nB = d_out·r:

    LoRA params       = nA + nB
    generator params  = e            (z)
                      + h·e + h      (W1, b1)
                      + nA·h + nA    (A head)
                      + nB·h + nB    (B head)          ≈ (h + 1) · LoRA params for large layers
    DoRA (use_dora)   + nM = d_out      (PEFT's magnitude vector, in the exported adapter too)
      op-lora         + nM·h + nM      (magnitude head, generator.magnitude "generated"),
                      or nM trained as it is ("direct")

Training memory (bytes) (`MEMORY_FORMULA`, returned as the plan's `memory_formula`):

    base weights       base params × the bytes of the dtype each is held in (frozen, no grads, no optimizer state)
    trainable state    trainable params × 16   (fp32 param + grad + Adam m + Adam v)
    lora weights       LoRA params × 4          (op-lora: PEFT's own A, B tensors, kept as parametrization originals)
    generated factors  LoRA params × 8          (op-lora: the generated A, B and their grads, fp32)
    + task terms       a task's own tensors held through training (e.g. MF's target matrix) and what one
                       step adds at its peak: the activations autograd saves for backward (text-to-image,
                       LLaVA: per block, `saved_activations`) or MF's transient full-size matrices
    gradients after    -min(trainable params × 4, activations + transients): the trainable gradients are
      peak             created after the step's peak (the start of backward) has passed

It is the tensors of a run at its peak, counted from shapes and spec values: not the CUDA context, nor
(on the CPU) the process's library code and allocator arenas. bench/memory.py sets it against the
`peak_memory_bytes` (RSS growth / CUDA allocator peak) and `peak_tensor_bytes` of real runs.

A task module provides `lora_layer_shapes(spec) -> [(name, A shape, B shape)]` and
`base_weights(spec) -> (parameters, bytes)`, the frozen base weights' count and their bytes in the dtypes the
run holds them in, computed without loading weights. Optional: `plan_adapter(spec)`, for a spec without an `adapter` block; and `memory_terms(spec) -> {name: (bytes,
formula)}`, the task's own terms.
"""

from __future__ import annotations

import importlib
import math
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from .run.spec import validate_spec

Shape = tuple[int, ...]
LayerShapes = list[tuple[str, Shape, Shape]]

BYTES_PER_TRAINABLE = 16  # fp32 param + grad + Adam m + Adam v
MEMORY_FORMULA = {
    "base_weights": "base parameters x the bytes of the dtype each is held in (frozen: no grads, no optimizer "
    "state)",
    "trainable_state": "trainable parameters x 16 (fp32 param + grad + Adam m + Adam v)",
    "lora_weights": "op-lora: LoRA parameters x 4 (PEFT's A, B kept as parametrization originals); lora: 0",
    "generated_factors": "op-lora: LoRA parameters x 8 (the generated A, B and their grads, fp32); lora: 0",
    "gradients_after_peak": "-min(trainable parameters x 4, the *_activations and *_transient terms): the "
    "trainable gradients are created when backward reaches the parameters (the generator's after the model's "
    "backward), once the step's peak, at the start of backward, has passed: a run holds the larger, not both",
    "total": "the sum: the tensors of one training step at its peak; the CUDA context and the CPU process's "
    "library code and allocator arenas are not in it",
}
STEP_TERMS = ("_activations", "_transient")  # task terms live only during one step's forward/backward
HEADROOM = 0.9  # leave 10% of the device for the CUDA context, workspaces and fragmentation


def activation_bytes(spec: dict[str, Any]) -> int:
    """Bytes per saved activation element: 2 under fp16/bf16 autocast, else 4."""
    return 2 if spec.get("train", {}).get("mixed_precision", "no") in ("fp16", "bf16") else 4


def saved_activations(blocks: list[tuple[int, int]], checkpointing: bool) -> int:
    """Elements autograd holds for backward over `blocks`, each (elements it saves, elements of its input).
    With gradient checkpointing a block keeps only its input, and backward recomputes one block at a time:
    the inputs of all plus the largest block's saved elements."""
    if not blocks:
        return 0
    if not checkpointing:
        return sum(saved for saved, _ in blocks)
    return sum(inp for _, inp in blocks) + max(saved for saved, _ in blocks)


def adapter_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's adapter block, or the one its task plans with (`plan_adapter(spec)`, e.g. the MF study's)."""
    if "adapter" in spec:
        return spec["adapter"]
    from .run.runner import TASK_MODULES

    hook = getattr(importlib.import_module(TASK_MODULES[spec["task"]]), "plan_adapter", None)
    if hook is None:
        raise ValueError(f"task {spec['task']!r}: the spec has no adapter block to plan")
    return hook(spec)


def _task_hooks(
    task: str,
) -> tuple[Callable[..., LayerShapes], Callable[..., tuple[int, int]]]:
    from .run.runner import TASK_MODULES

    module: Any = None
    try:
        module = importlib.import_module(TASK_MODULES[task])
    except ImportError:
        module = None
    shapes = getattr(module, "lora_layer_shapes", None)
    base = getattr(module, "base_weights", None)
    if shapes is None or base is None:
        raise NotImplementedError(
            f"task {task!r} cannot be planned yet: its module needs lora_layer_shapes(spec) and base_weights(spec)"
        )
    return shapes, base


def task_memory_terms(spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The task's own memory terms, {name: (bytes, formula)} (its `memory_terms(spec)`; none without one)."""
    from .run.runner import TASK_MODULES

    hook = getattr(importlib.import_module(TASK_MODULES[spec["task"]]), "memory_terms", None)
    return dict(hook(spec)) if hook is not None else {}


def generator_parameters_per_layer(
    n_a: int, n_b: int, embedding_dim: int, hidden_dim: int, n_m: int = 0
) -> int:
    """z + (W1, b1) + (WA, bA) + (WB, bB) [+ (WM, bM) for a generated DoRA magnitude of n_m] of one layer's
    generator."""
    e, h = embedding_dim, hidden_dim
    return e + h * e + h + sum(n * h + n for n in (n_a, n_b, n_m) if n)


def count(layers: LayerShapes, adapter: dict[str, Any]) -> dict[str, Any]:
    """Shape groups (same A and B shapes) with their counts; LoRA parameters (what the adapter stores: A, B
    and, with DoRA, the magnitude vector of d_out = B's first dim), generator parameters, and the DoRA
    magnitudes an op-lora run trains directly (generator.magnitude "direct")."""
    groups: Counter[tuple[Shape, Shape]] = Counter((tuple(a), tuple(b)) for _, a, b in layers)
    gen = adapter.get("generator") if adapter["kind"] == "op-lora" else None
    dora = bool(adapter.get("use_dora"))
    generated = dora and gen is not None and gen.get("magnitude", "generated") == "generated"
    out_groups = []
    lora_total = gen_total = direct_total = 0
    for (a, b), n in groups.items():
        n_a, n_b, n_m = math.prod(a), math.prod(b), b[0] if dora else 0
        lora = n_a + n_b + n_m
        g = 0
        if gen:
            e, h = gen["embedding_dim"], gen["hidden_dim"]
            g = generator_parameters_per_layer(n_a, n_b, e, h, n_m if generated else 0)
        out_groups.append(
            {
                "lora_A_shape": list(a),
                "lora_B_shape": list(b),
                "layers": n,
                "lora_parameters_per_layer": lora,
                "generator_parameters_per_layer": g,
            }
        )
        lora_total += n * lora
        gen_total += n * g
        direct_total += n * n_m if gen and not generated else 0
    return {
        "groups": out_groups,
        "lora_parameters": lora_total,
        "generator_parameters": gen_total,
        "direct_parameters": direct_total,
    }


def device_memory(device: str) -> tuple[str, int | None]:
    """(resolved device, its total memory in bytes) — CUDA's total memory, or the machine's RAM on CPU."""
    try:
        import torch

        from .run.environment import resolve_device

        dev = resolve_device(device)
        if dev.type == "cuda":
            return str(dev), int(torch.cuda.get_device_properties(dev.index or 0).total_memory)
    except (ImportError, ValueError):
        return device, None
    try:
        return "cpu", int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return "cpu", None


def _gib(n: float) -> str:
    """Bytes, readable: 1.5 GiB, 277 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def plan(raw_spec: Any) -> dict[str, Any]:
    """Counts and a memory estimate for `raw_spec` (validated here), with `fits` against the device."""
    spec = validate_spec(raw_spec)
    task = spec["task"]
    shapes_fn, base_fn = _task_hooks(task)
    layers = list(shapes_fn(spec))
    adapter = adapter_of(spec)
    if not layers:  # e.g. a typo in target_modules: refused here, so neither `plan` nor a run says it "fits"
        from .run.runner import InputError

        raise InputError(
            f"adapter.target_modules: {adapter.get('target_modules')!r} match no layer of the model"
        )
    counts = count(layers, adapter)
    op = adapter["kind"] == "op-lora"
    trainable = (
        counts["generator_parameters"] + counts["direct_parameters"] if op else counts["lora_parameters"]
    )
    base_params, base_bytes = (int(n) for n in base_fn(spec))
    memory = {
        "base_weights": base_bytes,
        "trainable_state": trainable * BYTES_PER_TRAINABLE,
        "lora_weights": counts["lora_parameters"] * 4 if op else 0,
        "generated_factors": counts["lora_parameters"] * 8 if op else 0,
    }
    formula = {k: MEMORY_FORMULA[k] for k in memory}
    for name, (n_bytes, text) in task_memory_terms(spec).items():
        memory[name], formula[name] = int(n_bytes), text
    step = sum(v for k, v in memory.items() if k.endswith(STEP_TERMS))
    memory["gradients_after_peak"] = -min(trainable * 4, step)
    formula["gradients_after_peak"] = MEMORY_FORMULA["gradients_after_peak"]
    total = sum(memory.values())
    formula["total"] = MEMORY_FORMULA["total"]
    device, available = device_memory(str(spec.get("device", "auto")))
    fits = available is None or total <= HEADROOM * available
    if available is None:
        message = f"needs about {_gib(total)} at its peak; the device's memory is unknown"
    elif fits:
        message = f"needs about {_gib(total)} at its peak, of {_gib(available)} on {device}"
    else:
        knobs = "r, target_modules" + (", generator.hidden_dim" if op else "")
        message = (
            f"does not fit: needs about {_gib(total)} at its peak, {device} has {_gib(available)}; "
            f"reduce {knobs}"
            + (f" (the generator holds {counts['generator_parameters']:,} parameters)" if op else "")
        )
    return {
        "task": task,
        "adapter_kind": adapter["kind"],
        "layers": len(layers),
        "groups": counts["groups"],
        "lora_parameters": counts["lora_parameters"],
        "generator_parameters": counts["generator_parameters"],
        "trainable_parameters": trainable,
        "base_parameters": base_params,
        "memory_bytes": {**memory, "total": total},
        "memory_formula": formula,
        "device": device,
        "device_memory_bytes": available,
        "fits": fits,
        "message": message,
    }
