"""Benchmark: the OP-LoRA generator's formulations, and a training step of OP-LoRA vs plain PEFT LoRA.

1. Generator forward + backward on an SDXL-shaped set of layers (UNet attention projections, r = 4,
   h = 32, e = 128; 560 layers: 60 of 640x640, 20 of 2048->640, 360 of 1280x1280, 120 of 2048->1280):
   "loop" vs "batched" on the same generator (grouped as attach groups on the device), plus "batched" with
   the other grouping (CPU: unchunked, one stack per shape group; CUDA: 16 MiB chunks, the CPU default)
   to show what the device's grouping buys. Repetitions interleave the
   variants; medians are reported. Checks whether OPLoRAConfig(formulation="auto") picks the faster one.
2. Training step (forward, backward, AdamW step) of a small llama (4 layers, hidden 256, r = 8, all
   linears, vocab 2048): OP-LoRA (attach, default config) vs plain PEFT LoRA, as the median of the
   per-repetition ratios, with the tasks' optimizer (build_optimizer: fused AdamW) at batch 4x128 (the
   default row) and 8x256 tokens (the generator's cost is per step, not per token), and with torch's
   per-parameter AdamW loop at 4x128 (OP-LoRA's optimiser updates (h+1)x as many values), and with a
   narrower generator (hidden_dim 8 and 16, default 32) at 4x128: what a smaller default would buy.

    python bench/generator.py --out bench/results/generator.json [--device cpu|cuda] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from oplora.bind import attach
from oplora.config import OPLoRAConfig, resolve_formulation
from oplora.generator import CPU_CHUNK_BYTES, FactorGenerator, default_chunk_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # tiny_models.py

SDXL_SET = [(640, 640, 60), (2048, 640, 20), (1280, 1280, 360), (2048, 1280, 120)]  # (d_in, d_out, count)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _interleaved(
    variants: dict[str, Callable[[], object]], reps: int, device: torch.device
) -> dict[str, list[float]]:
    for fn in variants.values():  # warm-up: first-touch allocations, kernel selection
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            samples[name].append(_time(fn, device))
    return samples


def _fwd_bwd(gen: FactorGenerator, formulation: str) -> Callable[[], None]:
    def step() -> None:
        gen.zero_grad(set_to_none=True)  # as a training loop does: gradients are allocated afresh
        out = gen(formulation)
        tensors = [t for pair in out for t in pair]
        torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])

    return step


def bench_generator(device: torch.device, reps: int, scale: float) -> dict:
    r, config = 4, OPLoRAConfig(embedding_dim=128, hidden_dim=32)
    shapes = [((r, d_in), (d_out, r)) for d_in, d_out, n in SDXL_SET for _ in range(max(1, round(n * scale)))]
    torch.manual_seed(0)
    gen = FactorGenerator(shapes, config, device=device)  # grouped as attach would on this device
    other_chunks = CPU_CHUNK_BYTES if default_chunk_bytes(device) is None else None
    other = FactorGenerator(shapes, config, device=device, chunk_bytes=other_chunks)
    with torch.no_grad():
        for p in list(gen.parameters()) + list(other.parameters()):
            p.normal_(0, 0.02)
    variants = {
        "loop": _fwd_bwd(gen, "loop"),
        "batched": _fwd_bwd(gen, "batched"),
        "batched_other_grouping": _fwd_bwd(other, "batched"),
    }
    samples = _interleaved(variants, reps, device)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    fastest = min(("loop", "batched"), key=medians.__getitem__)
    auto = resolve_formulation("auto", device)
    result = {
        "layers": len(shapes),
        "groups": len(gen.groups),
        "other_grouping_groups": len(other.groups),
        "generator_params": sum(p.numel() for p in gen.parameters()),
        "median_ms": medians,
        "min_ms": {k: min(v) for k, v in samples.items()},
        "samples_ms": samples,
        "ratio_batched_over_loop": medians["batched"] / medians["loop"],
        "auto": {"picks": auto, "fastest": fastest, "ok": auto == fastest},
    }
    del gen, other, variants
    gc.collect()
    return result


def _tiny_llama(device: torch.device, seed: int = 0) -> torch.nn.Module:
    from tiny_models import llama_config
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = llama_config(
        hidden=256, intermediate=688, layers=4, heads=4, kv_heads=4, vocab=2048, positions=256
    )
    return LlamaForCausalLM(config).to(device)


NARROWER = (8, 16)  # hidden_dim values timed beside the default (32)


def bench_train_step(device: torch.device, reps: int) -> dict:
    from oplora.training.loop import build_optimizer, optimizer_kernel
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(_tiny_llama(device), LoraConfig(r=8, lora_alpha=16, target_modules=targets)).train()
    op = attach(get_peft_model(_tiny_llama(device), LoraConfig(r=8, lora_alpha=16, target_modules=targets)))
    op.train()
    tokens = {"4x128": (4, 128), "8x256": (8, 256)}
    ids = {
        k: torch.randint(0, 2048, shape, generator=torch.Generator().manual_seed(0)).to(device)
        for k, shape in tokens.items()
    }

    def stepper(
        model: torch.nn.Module, params: list[torch.Tensor], batch: str, plain: bool = False
    ) -> Callable[[], None]:
        # The tasks' optimizer (build_optimizer: fused AdamW here), or torch's per-parameter AdamW loop.
        opt = (
            torch.optim.AdamW(params, lr=1e-4, foreach=False, fused=False)
            if plain
            else build_optimizer(params, {"name": "adamw", "lr": 1e-4})
        )
        x = ids[batch]

        def step() -> None:
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    lora_params = [p for p in lora.parameters() if p.requires_grad]
    op_params = op.trainable_parameters()
    variants: dict[str, Callable[[], object]] = {}
    for batch in tokens:
        variants[f"lora {batch}"] = stepper(lora, lora_params, batch)
        variants[f"oplora {batch}"] = stepper(op, op_params, batch)
    variants["lora 4x128 plain_adamw"] = stepper(lora, lora_params, "4x128", plain=True)
    variants["oplora 4x128 plain_adamw"] = stepper(op, op_params, "4x128", plain=True)
    for h in NARROWER:
        narrow = attach(
            get_peft_model(_tiny_llama(device), LoraConfig(r=8, lora_alpha=16, target_modules=targets)),
            OPLoRAConfig(hidden_dim=h),
        ).train()
        variants[f"oplora h={h} 4x128"] = stepper(narrow, narrow.trainable_parameters(), "4x128")
    variants["oplora_generator_only"] = _fwd_bwd(op.generator, op.formulation)
    samples = _interleaved(variants, reps, device)
    medians = {k: statistics.median(v) for k, v in samples.items()}

    def ratio(op_key: str, lora_key: str) -> float:
        # paired: each repetition times both arms back to back, so a slow spell of the shared machine
        # lands on both; the median of the per-repetition ratios
        return statistics.median(o / b for o, b in zip(samples[op_key], samples[lora_key], strict=True))

    return {
        "lora_params": sum(p.numel() for p in lora_params),
        "generator_params": op.num_generator_parameters(),
        "formulation": op.formulation,
        "optimizer": f"AdamW {optimizer_kernel(op_params)} (build_optimizer)",
        "median_ms": medians,
        "min_ms": {k: min(v) for k, v in samples.items()},
        "samples_ms": samples,
        "ratio": "median over repetitions of OP-LoRA / LoRA, both timed in the same repetition",
        # the default: build_optimizer's fused AdamW, batch 4 x 128 tokens
        "ratio_oplora_over_lora": ratio("oplora 4x128", "lora 4x128"),
        "ratio_oplora_over_lora_by_batch": {b: ratio(f"oplora {b}", f"lora {b}") for b in tokens},
        "overhead_ms_by_batch": {b: medians[f"oplora {b}"] - medians[f"lora {b}"] for b in tokens},
        "ratio_oplora_over_lora_plain_adamw": ratio("oplora 4x128 plain_adamw", "lora 4x128 plain_adamw"),
        "ratio_oplora_over_lora_by_hidden_dim": {
            **{str(h): ratio(f"oplora h={h} 4x128", "lora 4x128") for h in NARROWER},
            str(OPLoRAConfig().hidden_dim): ratio("oplora 4x128", "lora 4x128"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/generator.json"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="a quarter of the SDXL set, fewer repetitions")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a busy machine"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    reps = 3 if args.quick else 5
    info = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    gen = bench_generator(device, reps, scale=0.25 if args.quick else 1.0)
    step = bench_train_step(device, reps=3 if args.quick else 15)

    info["loadavg_after"] = os.getloadavg()
    g, s = gen["median_ms"], step["median_ms"]
    print(f"device {args.device} ({info['device']}), torch {info['torch']}, {info['threads']} threads")
    busiest = max(info["loadavg_before"][0], info["loadavg_after"][0])
    if device.type == "cpu" and busiest > (os.cpu_count() or 1):
        print(
            f"warning: load average up to {busiest:.1f} on {os.cpu_count()} CPUs: other work skewed these timings"
        )
    print(
        f"\ngenerator fwd+bwd, SDXL-shaped set: {gen['layers']} layers, {gen['generator_params'] / 1e6:.0f}M params, "
        f"{gen['groups']} groups (other grouping: {gen['other_grouping_groups']}); median of {reps}"
    )
    for name in ("loop", "batched", "batched_other_grouping"):
        ratio = g[name] / g["loop"]
        print(f"  {name:<24} {g[name]:9.1f} ms  (min {gen['min_ms'][name]:7.1f})   {ratio:5.2f}x loop")
    verdict = "faster" if gen["auto"]["ok"] else "SLOWER"
    print(f"  auto picks {gen['auto']['picks']!r}: the {verdict} formulation here")
    print(
        f"\ntraining step, llama 4x256, r = 8, all linears (LoRA {step['lora_params'] / 1e3:.0f}k params, "
        f"generator {step['generator_params'] / 1e6:.1f}M), {step['optimizer']}"
    )
    by = step["ratio_oplora_over_lora_by_batch"]
    rows = [(f"plain PEFT LoRA, batch {b}", f"lora {b}", None) for b in by]
    rows += [(f"OP-LoRA, batch {b}", f"oplora {b}", by[b]) for b in by]
    rows += [
        ("plain PEFT LoRA, per-param AdamW", "lora 4x128 plain_adamw", None),
        ("OP-LoRA, per-param AdamW", "oplora 4x128 plain_adamw", step["ratio_oplora_over_lora_plain_adamw"]),
        (f"generator alone ({step['formulation']})", "oplora_generator_only", None),
    ]
    by_h = step["ratio_oplora_over_lora_by_hidden_dim"]
    rows += [(f"OP-LoRA hidden_dim {h}, batch 4x128", f"oplora h={h} 4x128", by_h[str(h)]) for h in NARROWER]
    for label, key, ratio in rows:
        line = f"  {label:<34} {s[key]:9.1f} ms  (min {step['min_ms'][key]:7.1f})"
        print(line + (f"   {ratio:5.2f}x LoRA" if ratio is not None else ""))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**info, "generator": gen, "train_step": step}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
