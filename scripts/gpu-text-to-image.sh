#!/usr/bin/env bash
# The real text-to-image comparison, for a machine with a CUDA GPU and the weights (not run in CI):
# LoRA vs OP-LoRA vs DoRA vs OP-DoRA (bench/arms.py) at equal rank on SDXL (or SD 1.5), same data, steps and
# seed; each run's result.json holds
# the loss curve, CMMD over steps (eval_every), sample images, adapters, peak memory and steps/s; the
# comparison prints the plan's memory estimate next to each run's peak_memory_bytes (CUDA allocator peak).
#
#   scripts/gpu-text-to-image.sh DATA_DIR REFERENCE_DIR [MODEL] [OUT_DIR]
#     DATA_DIR        imagefolder: images + metadata.jsonl {"file_name", "text"} (e.g. WikiArt Monet, Naruto)
#     REFERENCE_DIR   held-out images (+ metadata.jsonl captions) for CMMD
#     MODEL           default stabilityai/stable-diffusion-xl-base-1.0 (or runwayml/stable-diffusion-v1-5)
#   env: STEPS (1000) RANK (4) RES (1024 SDXL / 512 SD) LORA_LR (1e-4) OPLORA_LR (1e-3) VAE (madebyollin/sdxl-vae-fp16-fix for SDXL)
#        ARMS ("lora op-lora dora op-dora op-dora-direct"; op-dora-direct is the default magnitude): LORA_LR for lora/dora, OPLORA_LR for the op- arms
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA=${1:?data folder}; REF=${2:?reference folder}
MODEL=${3:-stabilityai/stable-diffusion-xl-base-1.0}; OUT=${4:-runs/t2i-$(date +%Y%m%d-%H%M%S)}
PY=${OPLORA_PYTHON:-$ROOT/.venv/bin/python}
ARMS=${ARMS:-lora op-lora dora op-dora op-dora-direct}
STEPS=${STEPS:-1000}; RANK=${RANK:-4}; LORA_LR=${LORA_LR:-1e-4}; OPLORA_LR=${OPLORA_LR:-1e-3}
case "$MODEL" in *xl*) RES=${RES:-1024}; VAE=${VAE:-madebyollin/sdxl-vae-fp16-fix};; *) RES=${RES:-512}; VAE=${VAE:-};; esac
"$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this script is for GPU machines')"
mkdir -p "$OUT"
for ARM in $ARMS; do
  case "$ARM" in op-*) LR=$OPLORA_LR;; *) LR=$LORA_LR;; esac
  "$PY" - "$OUT/spec-$ARM.json" <<PY
import json, sys
sys.path.insert(0, "$ROOT/bench")
from arms import adapter
spec = {
  "task": "text_to_image", "device": "cuda", "seed": 0,
  "model": {"pretrained": "$MODEL", **({"vae": "$VAE"} if "$VAE" else {})},
  "adapter": adapter("$ARM", $RANK),
  "data": {"folder": "$DATA", "resolution": $RES, "random_flip": True},
  "optimizer": {"name": "adamw", "lr": $LR},
  "train": {"steps": $STEPS, "batch_size": 1, "gradient_accumulation_steps": 4, "mixed_precision": "fp16",
            "gradient_checkpointing": True, "lr_scheduler": "constant", "lr_warmup_steps": 0,
            "checkpoint_every": 250, "eval_every": 250, "snr_gamma": 5.0},
  "eval": {"prompts": [], "reference_folder": "$REF", "cmmd_num_images": 64, "num_inference_steps": 30},
}
json.dump(spec, open(sys.argv[1], "w"), indent=2)
PY
  echo "== $ARM (lr $LR, r $RANK) -> $OUT/$ARM"
  "$PY" -m oplora run "$OUT/spec-$ARM.json" --out "$OUT/$ARM" || echo "$ARM failed (see $OUT/$ARM/result.json)"
done
"$PY" - "$OUT" $ARMS <<'PY'
import json, sys, pathlib
from oplora.plan import plan
out = pathlib.Path(sys.argv[1])
rows = {}
for kind in sys.argv[2:]:
    if not (out / kind / "result.json").exists():
        rows[kind] = {"status": "no result.json"}
        continue
    r = json.loads((out / kind / "result.json").read_text())
    m = r.get("metrics") or {}
    rows[kind] = {k: m.get(k) for k in ("cmmd", "cmmd_curve", "final_loss", "peak_memory_bytes", "steps_per_s",
                                        "lora_parameters", "generator_parameters")} | {"status": r["status"]}
    # the plan's estimate (the step's peak, activations included) next to the CUDA allocator's peak
    est = plan(json.loads((out / f"spec-{kind}.json").read_text()))["memory_bytes"]["total"]
    peak = m.get("peak_memory_bytes")
    rows[kind] |= {"plan_estimate_bytes": est, "estimate_over_measured": est / peak if peak else None}
(out / "comparison.json").write_text(json.dumps(rows, indent=2))
keys = ("status", "cmmd", "final_loss", "peak_memory_bytes", "plan_estimate_bytes", "estimate_over_measured")
print(json.dumps({k: {x: v.get(x) for x in keys} for k, v in rows.items()}, indent=2))
PY
