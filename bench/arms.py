"""The adapter arms the text-to-image and LLaVA benches compare, by name, as spec `adapter` fields.

lora            PEFT LoRA
op-lora         OP-LoRA (generated A, B)
dora            PEFT DoRA (lora + use_dora)
op-dora         OP-DoRA, the magnitude a third head of each layer's MLP (generator.magnitude "generated")
op-dora-direct  OP-DoRA, PEFT's magnitude vector trained as a plain parameter ("direct")
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

ARMS: dict[str, dict[str, Any]] = {
    "lora": {"kind": "lora"},
    "op-lora": {"kind": "op-lora"},
    "dora": {"kind": "lora", "use_dora": True},
    "op-dora": {"kind": "op-lora", "use_dora": True, "generator": {"magnitude": "generated"}},
    "op-dora-direct": {"kind": "op-lora", "use_dora": True, "generator": {"magnitude": "direct"}},
}


def adapter(arm: str, r: int, generator: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's adapter block for `arm` at rank r; `generator` (op-lora kinds only) adds generator fields."""
    if arm not in ARMS:
        raise ValueError(f"bench arm {arm!r}: expected one of {', '.join(ARMS)}")
    out = {**ARMS[arm], "r": r}
    if out["kind"] == "op-lora":
        out["generator"] = {**(generator or {}), **out.get("generator", {})}
    return out


def per_micro_batch(op: Any) -> Any:
    """`op` (an OPLoRAModel) with the schedule before one-generation-per-step: `optimizer_step` then finds no
    `generation_per_step`, so every micro-batch's forward regenerates A and B and its backward runs the
    generator's backward (the "before" arm of the accumulation timings)."""
    op.generation_per_step = contextlib.nullcontext
    return op


def ratios(values: dict[str, float]) -> dict:
    """Each arm over LoRA, OP-DoRA (both magnitudes) over DoRA, and direct over generated magnitude, where
    those arms ran."""
    out = {f"{k}_over_lora": v / values["lora"] for k, v in values.items() if k != "lora"}
    for k, base in (("op-dora", "dora"), ("op-dora-direct", "dora"), ("op-dora-direct", "op-dora")):
        if k in values and base in values:
            out[f"{k}_over_{base}"] = values[k] / values[base]
    return out


def mf_dora() -> dict[str, Any]:
    """Whether the MF-like bench can have DoRA arms, from the spec validator itself: it refuses
    use_dora on MF (zero base weight, no column norm), so MF rows of the DoRA comparison are not applicable."""
    from oplora.run.spec import SpecError, validate_spec

    spec = {
        "task": "matrix_factorization",
        "matrix": {"rows": 16, "cols": 16},
        "adapter": {"kind": "lora", "r": 2, "use_dora": True},
        "train": {"steps": 1},
    }
    try:
        validate_spec(spec)
    except SpecError as e:
        return {"status": "not applicable", "reason": "; ".join(e.problems)}
    return {
        "status": "applicable",
        "reason": "validate_spec accepted adapter.use_dora on matrix_factorization",
    }


def magnitude_comparison(lrs: dict[str, float], losses: dict[str, list[float]], seeds: list[int]) -> dict:
    """OP-DoRA's magnitude modes, each at its best lr (`lrs`), over paired seeds (the same data order and
    noise for both at a seed): mean loss, direct / generated per seed, and in how many seeds each is lower."""
    gen, direct = losses["op-dora"], losses["op-dora-direct"]
    per_seed = [d / g for g, d in zip(gen, direct, strict=True)]
    return {
        "seeds": seeds,
        "lr": lrs,
        "loss": losses,
        "mean_loss": {k: statistics.fmean(v) for k, v in losses.items()},
        "ratio_direct_over_generated_per_seed": per_seed,
        "ratio_direct_over_generated_mean": statistics.fmean(per_seed),
        "seeds_lower": {
            "op-dora": sum(r > 1 for r in per_seed),
            "op-dora-direct": sum(r < 1 for r in per_seed),
        },
    }
