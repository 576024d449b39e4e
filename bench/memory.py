"""Memory benchmark: the plan's estimate (python/oplora/plan.py) against the peaks real runs record.

For each task (matrix factorisation, text-to-image, LLaVA) x model size x adapter kind (lora, op-lora):
`plan(spec)["memory_bytes"]["total"]` (estimate) against two measurements of the same spec, each a real
run through the runner in its own fresh process (CPU peaks cannot be reset and RSS is per process), on one
torch thread:

    rss      the result's `peak_memory_bytes`: on the CPU the RSS growth over the RSS just before the model
             was built (python/oplora/training/loop.py), which also holds lazily loaded library code and
             allocator arenas no shape formula predicts; on CUDA the allocator's peak
    tensors  the result's `peak_tensor_bytes` (OPLORA_PEAK_TENSOR_BYTES=1, its own run so the profiler's
             records stay out of the other run's RSS): the peak bytes of the tensors allocated after that
             same point, what the estimate counts

Sizes: "tiny" are the test fixtures (scripts/tiny_models.py, make_tiny_sd.py, make_tiny_llava.py), "small"
the models bench/text_to_image.py and bench/llava.py build; MF adds a 1024x1024 matrix, and (not with
--quick) LoRA variants move the batch size, gradient checkpointing, mixed precision, the pipeline (SDXL) and
LLaVA's max_length (see llava_spec).

    python bench/memory.py [--out bench/results/memory.json] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "python"))
GEN = {"embedding_dim": 128, "hidden_dim": 32}


def _adapter(kind: str, r: int) -> dict[str, Any]:
    return {"kind": kind, "r": r, **({"generator": GEN} if kind == "op-lora" else {})}


def mf_spec(rows: int, cols: int, r: int, kind: str, steps: int) -> dict[str, Any]:
    return {
        "task": "matrix_factorization",
        "device": "cpu",
        "matrix": {"rows": rows, "cols": cols},
        "adapter": _adapter(kind, r),
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"steps": steps, "log_every": steps},
    }


def t2i_spec(assets: Path, kind: str, steps: int) -> dict[str, Any]:
    """bench/text_to_image.py's spec: resolution 32, batch 2, r = 8, attention targets, no eval images."""
    return {
        "task": "text_to_image",
        "device": "cpu",
        "seed": 0,
        "model": {"pretrained": str(assets / "sd")},
        "adapter": _adapter(kind, 8),
        "data": {"folder": str(assets / "data" / "train"), "resolution": 32},
        "optimizer": {"lr": 1e-4},
        "train": {"steps": steps, "batch_size": 2},
        "eval": {"prompts": []},
    }


def llava_spec(root: Path, kind: str, steps: int, fill: bool = True) -> dict[str, Any]:
    """The tests' llava spec (test/python/tiny_llava.py) with r = 8, batch 4, no eval. With `fill`,
    data.max_length is the longest train record's encoded length (image tokens included), so the batch
    holding that record pads to max_length, the length the plan's activation term is stated for; the
    tests' 64 is over twice these records' length, where the plan's term is a bound (the "max_length 64" row).
    """
    from oplora.run.spec import validate_spec
    from oplora.tasks.llava.task import check_inputs
    from tiny_llava import llava_spec as base

    spec = base(root, adapter=_adapter(kind, 8), train={"steps": steps, "batch_size": 4})
    spec["data"].pop("eval_json")
    spec["eval"] = {"vqa": False}
    if fill:
        _, encoder, train, _ = check_inputs(validate_spec(spec))
        spec["data"]["max_length"] = max(len(encoder.encode(r)["input_ids"]) for r in train)
    return spec


def _llava_assets(work: Path) -> dict[str, Path]:
    from tiny_llava import build_tiny_llava

    mod_spec = importlib.util.spec_from_file_location(
        "make_tiny_llava", ROOT / "scripts" / "make_tiny_llava.py"
    )
    mk = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mk)
    small = work / "llava-small"
    mk.build_model(small, image_size=32, hidden=256, layers=4)  # bench/llava.py's small model
    mk.build_data(small, n_train=16, n_eval=4)
    return {"tiny": build_tiny_llava(), "small": small}


def cases(work: Path, quick: bool) -> list[tuple[str, str, dict[str, Any]]]:
    from tiny_sd import build_tiny_sd

    steps = 2 if quick else 3
    mf_sizes = {"tiny": (24, 40, 3), "small": (128, 128, 4)} | ({} if quick else {"1024": (1024, 1024, 8)})
    sd = {"tiny": build_tiny_sd(), "small": build_tiny_sd(small=True)}
    llava = _llava_assets(work)
    out = []
    for kind in ("lora", "op-lora"):
        for size, (rows, cols, r) in mf_sizes.items():
            out.append(("matrix_factorization", size, mf_spec(rows, cols, r, kind, 20 * steps)))
        for size, assets in sd.items():
            out.append(("text_to_image", size, t2i_spec(assets, kind, steps)))
        for size, root in llava.items():
            out.append(("llava", size, llava_spec(root, kind, steps)))
    return out if quick else out + variants(sd, llava, steps)


def variants(
    sd: dict[str, Path], llava: dict[str, Path], steps: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """LoRA rows that move one spec value the formula depends on: SDXL (two text encoders), batch 4,
    gradient checkpointing, bf16 mixed precision (half weights and activations), LLaVA's max_length above
    every record's length."""
    sdxl = t2i_spec(sd["tiny"], "lora", steps)
    sdxl["model"]["pretrained"] = str(sd["tiny"] / "sdxl")
    batch4 = t2i_spec(sd["small"], "lora", steps)
    batch4["train"]["batch_size"] = 4
    ckpt = t2i_spec(sd["small"], "lora", steps)
    ckpt["train"]["gradient_checkpointing"] = True
    bf16 = t2i_spec(sd["small"], "lora", steps)
    bf16["train"]["mixed_precision"] = "bf16"
    llava_ckpt = llava_spec(llava["small"], "lora", steps)
    llava_ckpt["train"]["gradient_checkpointing"] = True
    return [
        ("text_to_image", "tiny sdxl", sdxl),
        ("text_to_image", "small batch 4", batch4),
        ("text_to_image", "small checkpointing", ckpt),
        ("text_to_image", "small bf16", bf16),
        ("llava", "small checkpointing", llava_ckpt),
        ("llava", "small max_length 64", llava_spec(llava["small"], "lora", steps, fill=False)),
    ]


def _child(spec_path: str, run_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    from oplora.run.runner import run_spec

    res, code = run_spec(json.loads(Path(spec_path).read_text()), Path(run_dir))
    if code != 0:
        raise SystemExit(f"run failed: {res and res.get('error')}")
    m = res["metrics"]
    print(json.dumps({k: m.get(k) for k in ("peak_memory_bytes", "peak_tensor_bytes")}))


def measure(spec: dict[str, Any], work: Path, metric: str) -> int:
    """The result's `metric` of one real run of `spec`, in a fresh process; "peak_tensor_bytes" turns the
    tensor count on (OPLORA_PEAK_TENSOR_BYTES=1) in its own run, so its profiler's records stay out of the
    other run's RSS."""
    from oplora.training.loop import TENSOR_PEAK_ENV

    d = Path(tempfile.mkdtemp(dir=work))
    (d / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != TENSOR_PEAK_ENV}
    if metric == "peak_tensor_bytes":
        env[TENSOR_PEAK_ENV] = "1"
    p = subprocess.run(
        [sys.executable, __file__, "--child", str(d / "spec.json"), str(d / "run")],
        capture_output=True,
        text=True,
        env=env,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{spec['task']} child failed:\n{p.stderr[-3000:]}")
    return int(json.loads(p.stdout.strip().splitlines()[-1])[metric])


def _ratio(est: int, measured: int) -> float | None:
    return est / measured if measured else None


def _within(rows: list[dict[str, Any]], key: str) -> str:
    ok = [r for r in rows if r[key] is not None and abs(r[key] - 1) <= 0.15]
    return f"{len(ok)}/{len(rows)}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    from oplora.plan import plan

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="oplora-memory-bench-"))
    rows = []
    for task, size, spec in cases(work, a.quick):
        p = plan(spec)
        est = int(p["memory_bytes"]["total"])
        rss, tensors = measure(spec, work, "peak_memory_bytes"), measure(spec, work, "peak_tensor_bytes")
        row = {
            "task": task,
            "size": size,
            "adapter": spec["adapter"]["kind"],
            "estimate_bytes": est,
            "rss_bytes": rss,
            "tensor_bytes": tensors,
            "ratio_estimate_over_rss": _ratio(est, rss),
            "ratio_estimate_over_tensors": _ratio(est, tensors),
            "estimate_terms": p["memory_bytes"],
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "estimate_terms"}), flush=True)
    result = {
        "setup": "CPU, 1 torch thread, each measurement a real run in a fresh process; rss = result "
        "peak_memory_bytes (RSS growth over the RSS before the model was built), tensors = result "
        "peak_tensor_bytes (peak bytes of tensors allocated after that point, OPLORA_PEAK_TENSOR_BYTES=1, "
        "its own run); estimate = plan() memory_bytes.total",
        "rows": rows,
        "within_15_percent_of_rss": _within(rows, "ratio_estimate_over_rss"),
        "within_15_percent_of_tensors": _within(rows, "ratio_estimate_over_tensors"),
        "wall_s": time.perf_counter() - t0,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
