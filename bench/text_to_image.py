"""Text-to-image benchmark on the CPU: LoRA, OP-LoRA, DoRA, OP-DoRA (magnitude generated) and OP-DoRA with
the magnitude direct (bench/arms.py) on a small (not tiny) SD UNet (64/128 channels, 2 layers per block;
scripts/make_tiny_sd.py --small), resolution 32, batch 2, r = 8, attention targets.

    1. speed    training step (text encode + UNet forward + backward + AdamW) of every arm built in one
                process and stepped in turns (interleaved): median step time, ratios against LoRA (and
                OP-DoRA / DoRA), and the generator's share (its forward + backward alone, against the
                OP-LoRA step); and ("accumulation_4") an optimizer step of 4 micro-batches through the
                task's optimizer_step, LoRA and OP-LoRA, and OP-LoRA generating per micro-batch (before)
    2. memory   peak RSS of each arm while training, each in its own fresh process (CPU peaks cannot be
                reset): ratios against LoRA
    3. quality  mean training loss over the last 10 of N steps through the real task (runner), each arm at
                its best lr from a small grid, on the generated coloured-shapes style set. The data, noise
                and timesteps of step s are identical in every run (seeded by step), so losses are paired.
                The MF-like bench has no DoRA arms: the validator's refusal is recorded ("mf_like_dora").

    python bench/text_to_image.py [--out bench/results/text_to_image.json] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arms import ARMS, adapter, magnitude_comparison, mf_dora, per_micro_batch, ratios

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "python"))


def _spec(assets: Path, arm: str, lr: float, steps: int, accumulation: int = 1, seed: int = 0) -> dict:
    return {
        "task": "text_to_image",
        "device": "cpu",
        "seed": seed,
        "model": {"pretrained": str(assets / "sd")},
        "adapter": adapter(arm, 8),
        "data": {"folder": str(assets / "data" / "train"), "resolution": 32, "random_flip": True},
        "optimizer": {"lr": lr},
        "train": {"steps": steps, "batch_size": 2, "gradient_accumulation_steps": accumulation},
        "eval": {"prompts": []},
    }


def _trainer(assets: Path, arm: str, accumulation: int = 1, once_per_step: bool = True):
    """(step(u), OP-LoRA module or LoRA'd denoiser, torch): with accumulation 1 a plain forward + backward +
    AdamW step on micro-batch u; above, one optimizer step of `accumulation` micro-batches through the
    task's `optimizer_step` (OP-LoRA: one generation per optimizer step, or with `once_per_step=False` one
    per micro-batch, the schedule before it)."""
    import torch
    from oplora.adapter import apply_adapter
    from oplora.run.environment import resolve_device
    from oplora.run.events import EventSink
    from oplora.run.runner import RunContext
    from oplora.run.spec import validate_spec
    from oplora.tasks.text_to_image.task import Trainer
    from oplora.training.loop import build_optimizer, optimizer_step

    spec = validate_spec(_spec(assets, arm, 1e-4, 10, accumulation))
    ctx = RunContext(
        spec=spec, run_dir=Path(tempfile.mkdtemp()), events=EventSink(None), device=resolve_device("cpu")
    )
    t = Trainer(spec, ctx)
    module, params = apply_adapter(t.denoiser, spec["adapter"])
    if not once_per_step:
        per_micro_batch(module)
    opt = build_optimizer(params, spec["optimizer"])
    if accumulation > 1:
        acc_opt = t.accelerator.prepare(opt)

        def accumulated(u: int) -> None:
            micro = [
                functools.partial(t.micro_step, module, u * accumulation + m, 2) for m in range(accumulation)
            ]
            optimizer_step(t.accelerator, module, acc_opt, params, 1.0, micro)

        return accumulated, module, torch

    def step(u: int) -> None:
        loss = t.micro_step(module, u, 2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, module, torch


def speed(assets: Path, n: int, arms: list[str]) -> dict:
    steps = {k: _trainer(assets, k) for k in arms}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for u in range(n + 2):  # interleaved; the first two rounds warm up
        for name, (fn, _, _) in steps.items():
            t0 = time.perf_counter()
            fn(u)
            if u >= 2:
                times[name].append(time.perf_counter() - t0)
    _, op, torch = steps["op-lora"]
    gen = []
    for _ in range(n):
        t0 = time.perf_counter()
        factors = op.generator()
        outs = [x for pair in factors for x in pair]
        torch.autograd.backward(outs, [torch.ones_like(x) for x in outs])
        gen.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    gm = statistics.median(gen)
    del steps, op
    return {
        "accumulation_4": speed_accumulation(assets, max(2, n // 2), 4),
        "steps_timed": n,
        "median_step_s": med,
        "step_time_ratios": ratios(med),
        "lora_step_s": med["lora"],
        "oplora_step_s": med["op-lora"],
        "ratio_oplora_over_lora": med["op-lora"] / med["lora"],
        "generator_fwd_bwd_s": gm,
        "generator_share_of_oplora_step": gm / med["op-lora"],
    }


def speed_accumulation(assets: Path, n: int, accumulation: int) -> dict:
    """Median optimizer-step seconds over `accumulation` micro-batches, interleaved: LoRA, OP-LoRA, and OP-LoRA
    generating per micro-batch (the schedule before one generation per optimizer step)."""
    arms = {k: _trainer(assets, k, accumulation)[0] for k in ("lora", "op-lora")}
    arms["op-lora/per_micro_batch"] = _trainer(assets, "op-lora", accumulation, once_per_step=False)[0]
    times: dict[str, list[float]] = {k: [] for k in arms}
    for u in range(n + 1):  # the first round warms up
        for name, fn in arms.items():
            t0 = time.perf_counter()
            fn(u)
            if u >= 1:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "steps_timed": n,
        "median_optimizer_step_s": med,
        "ratio_oplora_over_lora": med["op-lora"] / med["lora"],
        "ratio_oplora_per_micro_batch_over_lora": med["op-lora/per_micro_batch"] / med["lora"],
    }


def _memory_child(assets: str, arm: str, steps: int) -> None:
    import torch
    from oplora.training.loop import peak_memory_bytes  # VmHWM: ru_maxrss would carry the parent's peak

    cpu = torch.device("cpu")
    step, _, _ = _trainer(Path(assets), arm)
    loaded = peak_memory_bytes(cpu)
    for u in range(steps):
        step(u)
    print(json.dumps({"peak_rss_bytes": peak_memory_bytes(cpu), "loaded_rss_bytes": loaded}))


def memory(assets: Path, steps: int, arms: list[str]) -> dict:
    out = {}
    for arm in arms:
        p = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(assets), arm, str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[arm] = json.loads(p.stdout.strip().splitlines()[-1])
    out["peak_ratio_oplora_over_lora"] = out["op-lora"]["peak_rss_bytes"] / out["lora"]["peak_rss_bytes"]
    out["peak_ratios"] = ratios({k: out[k]["peak_rss_bytes"] for k in arms})
    grow = {k: out[k]["peak_rss_bytes"] - out[k]["loaded_rss_bytes"] for k in arms}
    out["training_growth_bytes"] = grow
    return out


def _run(assets: Path, arm: str, lr: float, steps: int, seed: int = 0) -> dict:
    from oplora.run.runner import run_spec

    res, code = run_spec(_spec(assets, arm, lr, steps, seed=seed), Path(tempfile.mkdtemp()) / "run")
    assert code == 0, res and res["error"]
    curve = [p["loss"] for p in res["metrics"]["loss_curve"]]
    return {
        "last10_mean_loss": statistics.fmean(curve[-10:]),
        "first10_mean_loss": statistics.fmean(curve[:10]),
    }


def quality(assets: Path, steps: int, grid: dict[str, list[float]], seeds: list[int]) -> dict:
    """Each arm over its lr grid (seed 0); then the two OP-DoRA magnitude modes at their best lrs again
    with `seeds` (seed 0 the grid's run)."""
    out: dict = {"steps": steps, "grid": grid, "runs": {}}
    for arm, lrs in grid.items():
        for lr in lrs:
            out["runs"][f"{arm}@{lr:g}"] = {"lr": lr, **_run(assets, arm, lr, steps)}
    for arm, lrs in grid.items():
        # a diverged run (NaN loss) is never the best
        runs = [(out["runs"][f"{arm}@{lr:g}"]["last10_mean_loss"], f"{arm}@{lr:g}") for lr in lrs]
        best = min((r for r in runs if math.isfinite(r[0])), default=(math.nan, None))
        out[f"best_{arm}"] = {"run": best[1], "last10_mean_loss": best[0]}
    out["best_loss_ratio_oplora_over_lora"] = (
        out["best_op-lora"]["last10_mean_loss"] / out["best_lora"]["last10_mean_loss"]
    )
    out["best_loss_ratios"] = ratios({k: out[f"best_{k}"]["last10_mean_loss"] for k in grid})
    lrs = {k: out["runs"][out[f"best_{k}"]["run"]]["lr"] for k in ("op-dora", "op-dora-direct")}
    losses = {
        k: [out[f"best_{k}"]["last10_mean_loss"]]
        + [_run(assets, k, lr, steps, s)["last10_mean_loss"] for s in seeds[1:]]
        for k, lr in lrs.items()
    }
    out["magnitude"] = magnitude_comparison(lrs, losses, seeds)
    out["mf_like_dora"] = mf_dora()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        import torch

        torch.set_num_threads(1)
        _memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text_to_image.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="rerun only the speed part into --out")
    a = ap.parse_args()
    import torch
    from tiny_sd import build_tiny_sd

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    assets = build_tiny_sd(small=True)
    q = a.quick
    arms = list(ARMS)
    # 40 steps x 4 lrs x 5 arms through the runner is most of this bench's time; --quick runs one lr each
    grid = {k: [1e-3] if q else [1e-3, 3e-3, 1e-2, 3e-2] for k in arms}
    result = {
        "setup": "SD UNet 64/128 ch, 2 layers/block, res 32, batch 2, r=8, to_q/k/v/out.0, AdamW, 1 CPU thread; "
        "arms lora, op-lora, dora (lora + use_dora), op-dora (magnitude generated), op-dora-direct",
        "speed": speed(assets, 3 if q else 8, arms),
    }
    if a.speed_only:
        old = json.loads(a.out.read_text()) if a.out.exists() else {}
        a.out.write_text(json.dumps({**old, **result}, indent=2))
        return
    result["memory"] = memory(assets, 2 if q else 4, arms)
    result["quality"] = quality(assets, 12 if q else 40, grid, [0, 1] if q else [0, 1, 2])
    result["wall_s"] = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
