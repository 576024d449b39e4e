"""Matrix factorisation (MF / OP-MF), the paper's proxy task: fit a rank-r LoRA update to a known matrix.

    M = U diag(σ) Vᵀ                      (rows, cols); U, V random orthogonal from the seed
    ΔW = scaling · B @ A                  A: (r, cols), B: (rows, r); PEFT LoRA on a zero, frozen Linear
    loss(ΔW) = ‖ΔW - M‖²_F / (rows·cols)  the mean squared error over the entries
    optimal_loss = Σ_{i≥r} σ_i² / (rows·cols)      Eckart-Young: the best rank-r ΔW is M's SVD truncation
    excess = loss - optimal_loss
    relative_excess = excess / (‖M‖²_F/(rows·cols) - optimal_loss)

ΔW = 0 at step 0 in both arms (PEFT's B = 0; OP-LoRA's B head = 0), so the relative excess starts at 1:
it is the excess relative to the initial excess, the same denominator for both arms and every optimizer.
Spectra (σ_0 ≥ σ_1 ≥ ..., k = min(rows, cols) values), each rescaled so that ‖M‖²_F = rows·cols (a
zero ΔW has loss 1, whatever the spectrum, so one learning-rate grid fits all spectra):

    gaussian    the singular values of a matrix of i.i.d. N(0, 1) entries (M is that matrix)
    geometric   σ_i = ratio^i
    power_law   σ_i = (i + 1)^-exponent

The model is PEFT's own: `get_peft_model(ZeroLinear, LoraConfig(...))`, then `apply_adapter` (which attaches
the OP-LoRA generator for kind "op-lora"); ΔW is PEFT's `get_delta_weight` of the LoRA layer, so the
factors pass through exactly the code a real fine-tune uses. `fit` is the whole run and is shared with
`matrix_factorization_study`; `run` adds the task's events, the exported adapter and a plot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...metrics.effective_rank import effective_rank, effective_rank_of_singular_values
from ...training.loop import (
    build_optimizer,
    memory_baseline,
    peak_memory_bytes,
    reset_peak_memory,
    tensor_peak_metric,
)

TARGET_MODULE = "linear"
ADAPTER_NAME = "default"


# --- the target ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """M (rows, cols) in float64, its singular values σ (descending) and the rank r being fitted."""

    matrix: torch.Tensor
    sigma: torch.Tensor
    r: int

    @property
    def size(self) -> int:
        return self.matrix.numel()

    @property
    def initial_loss(self) -> float:
        """The loss of ΔW = 0: ‖M‖²_F / (rows·cols) (1 by construction)."""
        return float((self.sigma**2).sum()) / self.size

    @property
    def optimal_loss(self) -> float:
        """Eckart-Young: Σ_{i≥r} σ_i² / (rows·cols)."""
        return float((self.sigma[self.r :] ** 2).sum()) / self.size

    @property
    def optimal_effective_rank(self) -> float:
        """Effective rank of M's rank-r SVD truncation."""
        return effective_rank_of_singular_values(self.sigma[: self.r])


def _orthonormal(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    q, rr = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(rr))  # (n, k), Haar-distributed columns


def make_target(matrix: dict[str, Any], spectrum: str, r: int, seed: int) -> Target:
    """The target of `matrix` (rows, cols, geometric_ratio, power_law_exponent) with `spectrum`, from `seed`."""
    rows, cols = int(matrix["rows"]), int(matrix["cols"])
    k = min(rows, cols)
    if not 0 < r <= k:
        raise ValueError(f"adapter.r: expected 1..min(rows, cols) = {k}, got {r}")
    gen = torch.Generator().manual_seed(seed)
    i = torch.arange(k, dtype=torch.float64)
    if spectrum == "gaussian":
        m = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    else:
        if spectrum == "geometric":
            sigma = float(matrix["geometric_ratio"]) ** i
        elif spectrum == "power_law":
            sigma = (i + 1) ** -float(matrix["power_law_exponent"])
        else:
            raise ValueError(f"matrix.spectrum: expected gaussian, geometric or power_law, got {spectrum!r}")
        m = _orthonormal(rows, k, gen) @ torch.diag(sigma) @ _orthonormal(cols, k, gen).T
    m = m * math.sqrt(rows * cols) / torch.linalg.matrix_norm(m)  # ‖M‖²_F = rows·cols
    return Target(matrix=m, sigma=torch.linalg.svdvals(m), r=r)


# --- the model ----------------------------------------------------------------------------------------------


class ZeroLinear(nn.Module):
    """y = x Wᵀ with W (rows, cols) zero and frozen: with a LoRA on `linear`, the layer's weight is ΔW."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cols, rows, bias=False)
        nn.init.zeros_(self.linear.weight)
        self.linear.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., cols) -> (..., rows)
        return self.linear(x)


def build_model(
    rows: int, cols: int, adapter: dict[str, Any]
) -> tuple[nn.Module, nn.Module, list[nn.Parameter]]:
    """(PEFT model, module to train (OPLoRAModel for op-lora), trainable parameters). Seed torch first."""
    from peft import LoraConfig, get_peft_model

    from ...adapter import apply_adapter, lora_config_kwargs

    config = LoraConfig(target_modules=[TARGET_MODULE], **lora_config_kwargs(adapter))
    peft_model = get_peft_model(ZeroLinear(rows, cols), config)
    module, params = apply_adapter(peft_model, adapter)
    return peft_model, module, params


def lora_layer(peft_model: nn.Module) -> nn.Module:
    """The PEFT LoRA layer that adapts ZeroLinear.linear."""
    return peft_model.get_submodule(f"base_model.model.{TARGET_MODULE}")


def delta_weight_fn(peft_model: nn.Module, module: nn.Module) -> Callable[[], torch.Tensor]:
    """A function returning the current ΔW (rows, cols) through PEFT's `get_delta_weight`. For OP-LoRA it
    first regenerates A and B from the generator, exactly once per call (one call per training step)."""
    layer = lora_layer(peft_model)
    regenerate = getattr(module, "regenerate", None)
    if regenerate is None:
        return lambda: layer.get_delta_weight(ADAPTER_NAME)

    def delta() -> torch.Tensor:
        regenerate()
        return layer.get_delta_weight(ADAPTER_NAME)

    return delta


def lora_layer_shapes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, lora_A shape, lora_B shape) for the plan: one layer."""
    m, r = spec["matrix"], int(spec["adapter"]["r"])
    return [(TARGET_MODULE, (r, int(m["cols"])), (int(m["rows"]), r))]


def base_weights(spec: dict[str, Any]) -> tuple[int, int]:
    """(parameters, bytes) of the frozen base: the zero fp32 rows x cols weight."""
    n = int(spec["matrix"]["rows"]) * int(spec["matrix"]["cols"])
    return n, n * 4


def memory_terms(spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The plan's task terms: the target M, held through training in fp64 and as its fp32 copy, and the step's
    full-size temporaries at its peak, the start of backward: ΔW, ΔW - M (kept by pow), the mean's gradient
    and PowBackward's three (diff^1, x2, x grad), six fp32 rows x cols matrices."""
    entries = int(spec["matrix"]["rows"]) * int(spec["matrix"]["cols"])
    return {
        "target_matrix": (entries * 12, "rows x cols x 12 (the target M in fp64 and its fp32 copy)"),
        "loss_transient": (
            entries * 6 * 4,
            "rows x cols x 6 x 4: a step's fp32 temporaries at the start of backward (ΔW, ΔW - M, the mean's "
            "gradient, PowBackward's diff^1, x2 and product)",
        ),
    }


# --- training -----------------------------------------------------------------------------------------------


def threshold_key(t: float) -> str:
    """0.01 -> "1e-2", 0.0025 -> "2.5e-3": the key of a threshold in `steps_to_excess`."""
    mantissa, exponent = f"{t:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def steps_to_excess(relative: torch.Tensor, thresholds: list[float]) -> dict[str, int | None]:
    """First step t whose relative excess is ≤ each threshold (None: never within the run).
    `relative[t]` is the relative excess of ΔW after t optimizer steps."""
    out: dict[str, int | None] = {}
    for t in thresholds:
        hit = torch.nonzero(relative <= t)
        out[threshold_key(t)] = int(hit[0, 0]) if hit.numel() else None
    return out


@contextmanager
def torch_threads(device: torch.device | str, entries: int) -> Iterator[None]:
    """One intra-op thread for small CPU problems (up to 512x512): their kernels are too short to split,
    and on shared cores extra threads only wait for each other. Restored on exit."""
    before = torch.get_num_threads()
    small = torch.device(device).type == "cpu" and entries <= 512 * 512
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


@dataclass
class Fit:
    """One run's metrics, its models (to export) and ΔW after the last step."""

    metrics: dict[str, Any]
    peft_model: nn.Module
    module: nn.Module
    delta: torch.Tensor
    divergence: tuple[int, float] | None = None  # (step, loss) of the first non-finite loss recorded


def fit(
    spec: dict[str, Any],
    device: torch.device | str = "cpu",
    on_log: Callable[[int, int, float, float], None] | None = None,
) -> Fit:
    """Train one MF (adapter.kind "lora") or OP-MF ("op-lora") run of a validated `matrix_factorization` spec.

    Every `train.log_every` steps (and at the last) the loss and ΔW's effective rank are recorded and
    `on_log(step, total_steps, loss, relative_excess)` is called. A run whose loss becomes non-finite
    stops there and is reported with `diverged: true` and null final values (`Fit.divergence` holds the step
    and the loss of the first non-finite step, found in the losses kept since the last log step; `run` raises
    `TrainingDiverged` with them).
    """
    m = spec["matrix"]
    with torch_threads(device, int(m["rows"]) * int(m["cols"])):
        return _fit(spec, device, on_log)


def _fit(
    spec: dict[str, Any], device: torch.device | str, on_log: Callable[[int, int, float, float], None] | None
) -> Fit:
    from ...adapter import count_parameters, set_seed

    t0 = time.perf_counter()
    dev = torch.device(device)
    reset_peak_memory(dev)
    baseline = memory_baseline(dev, ("peft",))
    m, adapter = spec["matrix"], spec["adapter"]
    steps, log_every = int(spec["train"]["steps"]), int(spec["train"]["log_every"])
    target = make_target(m, m["spectrum"], int(adapter["r"]), int(spec["seed"]))
    opt_loss, init_excess = target.optimal_loss, target.initial_loss - target.optimal_loss
    target_f = target.matrix.to(device, torch.float32)

    set_seed(int(spec["seed"]))
    peft_model, module, params = build_model(int(m["rows"]), int(m["cols"]), adapter)
    module.to(device)
    optimizer = build_optimizer(params, spec["optimizer"])
    delta_fn = delta_weight_fn(peft_model, module)

    # losses[t]: the loss after t steps, kept on the device (no host sync per step)
    losses = torch.full((steps + 1,), float("nan"), dtype=torch.float64, device=device)
    loss_curve: list[dict[str, Any]] = []
    rank_curve: list[dict[str, Any]] = []
    divergence: list[tuple[int, float]] = []

    def record(step: int, loss: float, delta: torch.Tensor) -> bool:
        rel = (loss - opt_loss) / init_excess
        finite = math.isfinite(loss)
        if not finite:  # losses are read at log steps only: name the first step whose loss was not finite
            first = int(torch.nonzero(~torch.isfinite(losses[: step + 1]))[0])
            divergence.append((first, float(losses[first])))
        loss_curve.append({"step": step, "loss": loss if finite else None})  # JSON has no NaN
        rank_curve.append({"step": step, "effective_rank": effective_rank(delta) if finite else None})
        if on_log is not None:
            on_log(step, steps, loss, rel)
        return finite

    done = 0
    for step in range(steps):
        delta = delta_fn()  # (rows, cols)
        loss = (delta - target_f).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        if step % log_every == 0 and not record(step, float(losses[step]), delta.detach()):
            break
        done = step + 1

    with torch.no_grad():
        delta = delta_fn().detach()
        final_loss = float((delta.double() - target.matrix.to(device)).pow(2).mean())
    if not divergence:
        losses[steps] = final_loss
        record(steps, final_loss, delta)
    relative = ((losses[: done + 1] - opt_loss) / init_excess).cpu()
    finite = not divergence
    excess = final_loss - opt_loss if finite else None
    metrics = {
        "arm": "OP-MF" if adapter["kind"] == "op-lora" else "MF",
        "spectrum": m["spectrum"],
        "optimizer": spec["optimizer"]["name"],
        "lr": float(spec["optimizer"]["lr"]),
        "seed": int(spec["seed"]),
        "steps": steps,
        "steps_done": done,
        "diverged": not finite,
        "final_loss": final_loss if finite else None,
        "optimal_loss": opt_loss,
        "initial_loss": target.initial_loss,
        "excess_loss": excess,
        "relative_excess": excess / init_excess if excess is not None else None,
        "steps_to_excess": steps_to_excess(relative, list(spec["thresholds"])),
        "final_effective_rank": effective_rank(delta) if finite else None,
        "optimal_effective_rank": target.optimal_effective_rank,
        "trainable_parameters": count_parameters(params),
        "loss_curve": loss_curve,
        "effective_rank_curve": rank_curve,
        "peak_memory_bytes": peak_memory_bytes(dev, baseline),
        **tensor_peak_metric(),
        "wall_s": time.perf_counter() - t0,
    }
    return Fit(metrics, peft_model, module, delta, divergence[0] if divergence else None)


# --- the task -----------------------------------------------------------------------------------------------


def run(spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """One MF / OP-MF run: train, emit a step event every log_every steps, export the (collapsed) adapter.
    A non-finite loss (seen at a log step: the loop keeps losses on the device) raises `TrainingDiverged`
    naming the first step whose loss was not finite, the loss after that many updates; no adapter is
    written."""
    from ...training.export import save_adapter
    from ...training.loop import diverged

    result = fit(spec, ctx.device, on_log=lambda s, n, loss, rel: ctx.step(s, n, loss, relative_excess=rel))
    metrics = result.metrics
    if result.divergence is not None:  # nothing exported: ΔW is no longer finite
        step, loss = result.divergence
        raise diverged(step, loss, [metrics["lr"]], f"lower optimizer.lr ({metrics['optimizer']})")
    out = ctx.path("adapter")
    plain = save_adapter(result.module, out, ctx=ctx, step=metrics["steps_done"])
    with torch.no_grad():
        collapsed = lora_layer(plain).get_delta_weight(ADAPTER_NAME).detach()
    metrics["collapse_max_abs_diff"] = float((collapsed - result.delta).abs().max())
    if not torch.allclose(collapsed, result.delta, rtol=1e-5, atol=1e-6):
        raise RuntimeError(
            f"the exported adapter's ΔW differs from training's by {metrics['collapse_max_abs_diff']:.3g}"
        )
    from ...figures import plots

    png = plots.run_curves(metrics, ctx.path("curves.png"), thresholds=list(spec["thresholds"]))
    ctx.artifact("plot", png, label="relative excess loss and effective rank")
    return metrics
