"""LLaVA benchmark on the CPU: LoRA, OP-LoRA, DoRA, OP-DoRA (magnitude generated) and OP-DoRA with the
magnitude direct (bench/arms.py), on a small LLaVA and the generated shapes VQA set.

    1. speed    step time (forward + backward + AdamW), every arm built in one process and stepped in
                turns (interleaved), on a small LLaVA (4-layer llama, hidden 256; all LM linears, r = 8,
                e = 128, h = 32): median ratios against LoRA (and OP-DoRA / DoRA); LoRA and OP-LoRA again
                ("speed_medium") on a larger LLaVA whose vision tower and LM dominate the step (MEDIUM:
                8-layer llama at hidden 512)
    2. memory   peak RSS of each arm while training, in its own fresh process (CPU peaks cannot be reset),
                total and above the RSS before the first step; ratios against LoRA
    3. quality  eval loss and VQA accuracy after N steps through the real task (runner), each arm at its
                best learning rate (by final eval loss) from a shared grid (1e-3 .. 3e-2)

Runs on one CPU thread (see main).
    python bench/llava.py --out bench/results/llava.json [--quick]

Selection and reporting use the same eval set (no separate test split): read quality as indicative only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from arms import ARMS, adapter, magnitude_comparison, per_micro_batch, ratios

ROOT = Path(__file__).resolve().parents[1]
# The larger LLaVA of the speed part: 8-layer llama at hidden 512 (~27 M parameters) under a 4-layer CLIP
# tower at hidden 256, 64x64 images (64 image tokens); every LM linear LoRA'd at r = 8 as in the small one.
GENERATOR = {"embedding_dim": 128, "hidden_dim": 32}
MEDIUM = {"image_size": 64, "hidden": 512, "layers": 8, "vision_hidden": 256, "vision_layers": 4}


def _builder():
    spec = importlib.util.spec_from_file_location("make_tiny_llava", ROOT / "scripts" / "make_tiny_llava.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arm(model_dir: Path, data_dir: Path, arm: str, r: int = 8, batch: int = 4, optimizer: str = "default"):
    """(module, optimizer, batch, n params) for one arm (bench/arms.py): PEFT LoRA (DoRA) on every LM linear,
    OP-LoRA attached or not; `optimizer` "default" is the tasks' `build_optimizer` (fused AdamW), "plain" torch's per-parameter
    AdamW loop (foreach=False, fused=False)."""
    from oplora.adapter import apply_adapter, lora_config_kwargs
    from oplora.tasks.llava.data import Encoder, collate, load_records
    from oplora.tasks.llava.model import default_target_modules
    from oplora.training.loop import build_optimizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model.requires_grad_(False)
    block = adapter(arm, r, GENERATOR)
    peft = get_peft_model(
        model, LoraConfig(**lora_config_kwargs(block), target_modules=default_target_modules(model))
    )
    module, params = apply_adapter(peft, block)
    if optimizer == "plain":
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=False, fused=False)
    else:
        opt = build_optimizer(params, {"name": "adamw", "lr": 1e-4})
    enc = Encoder(AutoProcessor.from_pretrained(model_dir), 128)
    recs = load_records(data_dir / "train.json", data_dir / "images", "train")[:batch]
    return module, opt, collate([enc.encode(x) for x in recs], enc), sum(p.numel() for p in params)


def _step(module, opt, batch, accelerator=None) -> float:
    """One optimizer step through the tasks' `optimizer_step` (accelerator's accumulation micro-batches,
    each on `batch`); without an accelerator one plain forward + backward + step."""
    from oplora.tasks.llava.train import forward_logits, masked_loss
    from oplora.training.loop import optimizer_step

    def loss() -> torch.Tensor:
        total, count = masked_loss(forward_logits(module, batch), batch["labels"])
        return total / count

    t0 = time.perf_counter()
    if accelerator is None:
        loss().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        params = [p for g in opt.param_groups for p in g["params"]]
        micro = (loss for _ in range(accelerator.gradient_accumulation_steps))
        optimizer_step(accelerator, module, opt, params, 1.0, micro)
    return time.perf_counter() - t0


def _timed(arms: dict, steps: int, accelerator=None) -> dict[str, float]:
    """Median step seconds per arm, arms stepped in turns (interleaved) after 2 warm-up steps."""
    times: dict[str, list[float]] = {k: [] for k in arms}
    for i in range(steps + 2):
        for k, (module, opt, batch, _) in arms.items():
            t = _step(module, opt, batch, accelerator)
            if i >= 2:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def speed(model_dir: Path, data_dir: Path, steps: int, names: list[str], plain_adamw: bool = True) -> dict:
    """Step time of the arms `names`: plain step with the default (fused) and (`plain_adamw`, LoRA and
    OP-LoRA) the plain AdamW loop; and, LoRA and OP-LoRA, an optimizer step of 4 accumulation micro-batches
    through `optimizer_step`, with OP-LoRA also generating per micro-batch (the schedule before one generation
    per optimizer step)."""
    from oplora.training.loop import build_accelerator

    arms = {k: _arm(model_dir, data_dir, k) for k in names}
    pair = ("lora", "op-lora")
    plain = {k: _arm(model_dir, data_dir, k, optimizer="plain") for k in pair} if plain_adamw else {}
    med = _timed({**arms, **{f"{k}/plain_adamw": a for k, a in plain.items()}}, steps)
    acc = build_accelerator({"gradient_accumulation_steps": 4}, torch.device("cpu"))
    prepared = {
        k: (m, acc.prepare(o), b, n) for k, (m, o, b, n) in arms.items() if k in pair
    }  # steps on the 4th
    m, o, b, n = _arm(model_dir, data_dir, "op-lora")  # the schedule before one generation per step
    prepared["op-lora/per_micro_batch"] = (per_micro_batch(m), acc.prepare(o), b, n)
    med4 = _timed(prepared, max(2, steps // 2), acc)
    base = arms["lora"][0].base_model.model
    return {
        "median_step_s": med,
        "step_time_ratio_op_over_lora": med["op-lora"] / med["lora"],
        "step_time_ratios": ratios({k: med[k] for k in arms}),
        "fused_over_plain_adamw_step_time": {k: med[k] / med[f"{k}/plain_adamw"] for k in plain},
        "model_parameters": {
            "vision_tower": sum(p.numel() for p in base.model.vision_tower.parameters()),
            "language_model": sum(p.numel() for p in base.model.language_model.parameters()),
        },
        "accumulation_4": {
            "median_optimizer_step_s": med4,
            "step_time_ratio_op_over_lora": med4["op-lora"] / med4["lora"],
            "step_time_ratio_op_per_micro_batch_over_lora": med4["op-lora/per_micro_batch"] / med4["lora"],
        },
        "trainable_parameters": {k: a[3] for k, a in arms.items()},
        "steps_timed": steps,
    }


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(model_dir: Path, data_dir: Path, arm: str) -> None:
    """Current RSS sampled every 2 ms while training: its peak, and the RSS before the first step."""
    import threading

    module, opt, batch, n = _arm(model_dir, data_dir, arm)
    before = _rss_now()
    peak, stop = [before], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_now())
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(3):
        _step(module, opt, batch)
    stop.set()
    t.join()
    print(json.dumps({"rss_before_training": before, "peak_rss": peak[0], "trainable_parameters": n}))


def memory(model_dir: Path, data_dir: Path, names: list[str]) -> dict:
    out = {}
    for arm in names:
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-arm",
                arm,
                "--model",
                str(model_dir),
                "--data",
                str(data_dir),
            ],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        out[arm] = json.loads(p.stdout.strip().splitlines()[-1])
    over = {k: v["peak_rss"] - v["rss_before_training"] for k, v in out.items()}
    return {
        "arms": out,
        "peak_rss_ratio_op_over_lora": out["op-lora"]["peak_rss"] / out["lora"]["peak_rss"],
        "peak_rss_ratios": ratios({k: v["peak_rss"] for k, v in out.items()}),
        "training_overhead_ratios": ratios({k: max(v, 1) for k, v in over.items()}),
        "training_overhead_bytes": over,
        "training_overhead_ratio_op_over_lora": over["op-lora"] / max(over["lora"], 1),
    }


def _run(model_dir: Path, data_dir: Path, arm: str, lr: float, steps: int, work: Path, seed: int = 0) -> dict:
    """One run through the real task (runner): its eval loss, VQA accuracy, final train loss and seconds."""
    from oplora.run.runner import run_spec

    spec = {
        "task": "llava",
        "device": "cpu",
        "seed": seed,
        "model": {"pretrained": str(model_dir)},
        "adapter": adapter(arm, 8, GENERATOR),
        "data": {
            "train_json": str(data_dir / "train.json"),
            "image_folder": str(data_dir / "images"),
            "eval_json": str(data_dir / "eval.json"),
            "max_length": 64,
        },
        "optimizer": {"lr": lr},
        "train": {"steps": steps, "batch_size": 8, "log_every": steps},
        "eval": {"batch_size": 16, "max_new_tokens": 3},
    }
    t0 = time.perf_counter()
    result, code = run_spec(spec, work / f"{arm}-{lr:g}-seed{seed}")
    if code != 0:
        raise RuntimeError(f"{arm} lr={lr} seed={seed}: {result and result['error']}")
    m = result["metrics"]
    run = {
        "kind": arm,
        "lr": lr,
        "seed": seed,
        "eval_loss": m["eval_loss"],
        "vqa_accuracy": m["vqa_accuracy"],
        "final_train_loss": m["final_loss"],
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(run), flush=True)
    return run


def quality(
    model_dir: Path, data_dir: Path, steps: int, grid: dict[str, list[float]], seeds: list[int], work: Path
) -> dict:
    """Each arm over its lr grid (seed 0); then the two OP-DoRA magnitude modes at their best lrs again
    with `seeds` (seed 0 the grid's run)."""
    runs = [_run(model_dir, data_dir, arm, lr, steps, work) for arm, lrs in grid.items() for lr in lrs]
    # a diverged run (NaN eval loss) is never the best
    finite = [r for r in runs if math.isfinite(r["eval_loss"])]
    best = {
        k: min((r for r in finite if r["kind"] == k), key=lambda r: r["eval_loss"], default=None)
        for k in grid
    }
    found = {k: v for k, v in best.items() if v}
    seeded = {
        k: [best[k]] + [_run(model_dir, data_dir, k, best[k]["lr"], steps, work, s) for s in seeds[1:]]
        for k in ("op-dora", "op-dora-direct")
    }
    magnitude = magnitude_comparison(
        {k: best[k]["lr"] for k in seeded}, {k: [r["eval_loss"] for r in v] for k, v in seeded.items()}, seeds
    )
    magnitude["vqa_accuracy"] = {k: [r["vqa_accuracy"] for r in v] for k, v in seeded.items()}
    return {
        "steps": steps,
        "grid": grid,
        "runs": runs,
        "best": best,
        "best_eval_loss_ratios": ratios({k: v["eval_loss"] for k, v in found.items()}),
        "best_vqa_accuracy_ratios": ratios({k: max(v["vqa_accuracy"], 1e-9) for k, v in found.items()}),
        "magnitude": magnitude,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llava.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="rerun only the speed part into --out")
    ap.add_argument("--memory-arm")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path)
    a = ap.parse_args()
    if a.memory_arm:
        memory_child(a.model, a.data, a.memory_arm)
        return
    # One thread: these models are tiny, and on a shared 2-core machine several OpenMP threads spin against
    # each other (measured here: 20x slower steps with 2 threads under load).
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="oplora-bench-llava-"))
    mk = _builder()
    t0 = time.perf_counter()
    small = work / "small"
    mk.build_model(small, image_size=32, hidden=256, layers=4)
    mk.build_data(small, n_train=16, n_eval=4)
    tiny = work / "tiny"
    mk.build_model(tiny, image_size=32, hidden=64, layers=2)
    mk.build_data(tiny, n_train=128, n_eval=32)
    names = list(ARMS)
    result = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
        "setup": "small LLaVA (4-layer llama hidden 256, CLIP 32 px) for speed and memory, tiny (2 layers, "
        "hidden 64, 128 train / 32 eval) for quality; every LM linear, r=8, e=128, h=32, 1 CPU thread; arms "
        "lora, op-lora, dora (lora + use_dora), op-dora (magnitude generated), op-dora-direct; speed_medium "
        "and accumulation_4: lora and op-lora only",
    }
    result["speed"] = speed(small / "model", small / "data", 4 if a.quick else 10, names)
    print(json.dumps(result["speed"]), flush=True)
    # A size where the vision tower and the LM, not the adapter, dominate the step (see MEDIUM).
    medium = work / "medium"
    mk.build_model(medium, **MEDIUM)
    mk.build_data(medium, n_train=8, n_eval=2, image_size=MEDIUM["image_size"])
    result["speed_medium"] = {
        "config": MEDIUM,
        **speed(medium / "model", medium / "data", 3 if a.quick else 6, ["lora", "op-lora"], False),
    }
    print(json.dumps(result["speed_medium"]), flush=True)
    if a.speed_only:
        old = json.loads(a.out.read_text()) if a.out.exists() else {}
        a.out.write_text(json.dumps({**old, **result}, indent=1))
        return
    result["memory"] = memory(small / "model", small / "data", names)
    print(json.dumps({k: v for k, v in result["memory"].items() if k != "arms"}), flush=True)
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    grid = {k: lrs for k in names}
    if a.quick:  # one lr each: LoRA's and OP-LoRA's best of the full grid, the DoRA arms at their kind's
        grid = {k: [1e-2] if ARMS[k]["kind"] == "lora" else [3e-3] for k in names}
    seeds = [0, 1] if a.quick else [0, 1, 2, 3, 4]
    result["quality"] = quality(
        tiny / "model", tiny / "data", 30 if a.quick else 100, grid, seeds, work / "runs"
    )
    result["wall_s"] = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"best": result["quality"]["best"], "wall_s": result["wall_s"]}, indent=1))


if __name__ == "__main__":
    main()
