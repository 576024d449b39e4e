#!/usr/bin/env bash
# The real LLaVA comparison, LoRA vs OP-LoRA vs DoRA vs OP-DoRA (bench/arms.py) on llava-1.5-7b-hf, for a
# machine with a CUDA GPU and the
# weights (hub access or a local copy). Prepared for users; not run in this project's CI (no GPU there).
#
#   DATA_JSON=/data/vqa/train.json IMAGE_FOLDER=/data/vqa/images EVAL_JSON=/data/vqa/val.json \
#     scripts/gpu-llava.sh [OUT_DIR]
#
# Data: LLaVA conversation JSON (+ `answers` lists for VQAv2-style scoring in the eval file). Knobs (env):
#   LLAVA_MODEL (llava-hf/llava-1.5-7b-hf)   R (16)   HIDDEN_DIM (32)   STEPS (1000)   BATCH (4)   ACCUM (4)
#   LORA_LRS ("1e-4 2e-4 5e-4")   OP_LRS ("5e-4 1e-3 2e-3")   MAX_EVAL (500)   MAX_LENGTH (1024)
#   ARMS ("lora op-lora dora op-dora op-dora-direct"; op-dora-direct is the default magnitude): LORA_LRS for lora/dora, OP_LRS for the op- arms
# Each arm runs at every lr of its grid; result.json per run and a summary under OUT_DIR.
# Memory: the generator is (h+1) x the LoRA's size. At r = 16, h = 32 on every language-model linear
# (~40M LoRA params) it holds ~1.3B params (~21 GB fp32 with Adam) on top of the bf16 base (~14 GB);
# r = 128 with h = 32 does not fit anywhere. Each run plans first and refuses if it does not fit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${OPLORA_PYTHON:-$ROOT/.venv/bin/python}"
OUT="${1:-$ROOT/bench/results/llava-gpu}"
MODEL="${LLAVA_MODEL:-llava-hf/llava-1.5-7b-hf}"
R="${R:-16}"; H="${HIDDEN_DIM:-32}"; STEPS="${STEPS:-1000}"; BATCH="${BATCH:-4}"; ACCUM="${ACCUM:-4}"
LORA_LRS="${LORA_LRS:-1e-4 2e-4 5e-4}"; OP_LRS="${OP_LRS:-5e-4 1e-3 2e-3}"
MAX_EVAL="${MAX_EVAL:-500}"; MAX_LENGTH="${MAX_LENGTH:-1024}"; ARMS="${ARMS:-lora op-lora dora op-dora op-dora-direct}"
: "${DATA_JSON:?set DATA_JSON to a LLaVA conversation JSON}"
: "${EVAL_JSON:?set EVAL_JSON to held-out records (with answers)}"
IMAGE_FOLDER="${IMAGE_FOLDER:-$(dirname "$DATA_JSON")}"

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script needs a GPU")'
mkdir -p "$OUT"

spec() { # arm lr
  "$PY" - "$1" "$2" <<EOF
import json, sys
sys.path.insert(0, "$ROOT/bench")
from arms import adapter as arm_adapter
arm, lr = sys.argv[1], float(sys.argv[2])
adapter = {**arm_adapter(arm, $R, {"embedding_dim": 128, "hidden_dim": $H}), "lora_alpha": 2 * $R}
print(json.dumps({
    "task": "llava", "device": "cuda", "seed": 0,
    "model": {"pretrained": "$MODEL", "dtype": "bfloat16"},
    "adapter": adapter,
    "data": {"train_json": "$DATA_JSON", "image_folder": "$IMAGE_FOLDER", "eval_json": "$EVAL_JSON",
             "max_length": $MAX_LENGTH, "max_eval_examples": $MAX_EVAL},
    "optimizer": {"name": "adamw", "lr": lr},
    "train": {"steps": $STEPS, "batch_size": $BATCH, "gradient_accumulation_steps": $ACCUM,
              "lr_scheduler": "cosine", "lr_warmup_steps": $(( STEPS / 30 )), "mixed_precision": "bf16",
              "gradient_checkpointing": True, "checkpoint_every": 250, "eval_every": 250, "log_every": 10},
    "eval": {"batch_size": 8, "max_new_tokens": 8},
}))
EOF
}

for kind in $ARMS; do
  case "$kind" in op-*) lrs="$OP_LRS";; *) lrs="$LORA_LRS";; esac
  for lr in $lrs; do
    dir="$OUT/$kind-lr$lr"
    spec "$kind" "$lr" > "$OUT/$kind-lr$lr.spec.json"
    "$PY" -c "import json,sys; from oplora.plan import plan; p = plan(json.load(open(sys.argv[1]))); print(p['message'])" \
      "$OUT/$kind-lr$lr.spec.json"
    resume=(); [ -d "$dir" ] && resume=(--resume)
    "$PY" -m oplora run "$OUT/$kind-lr$lr.spec.json" --out "$dir" "${resume[@]}" || echo "run $dir failed (see $dir/result.json)"
  done
done

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
from oplora.plan import plan
out = pathlib.Path(sys.argv[1])
rows = []
for res in sorted(out.glob("*/result.json")):
    r = json.loads(res.read_text()); m = r.get("metrics") or {}
    peak = m.get("peak_memory_bytes")  # CUDA allocator peak; next to it the plan's estimate (the step's peak, activations included)
    est = plan(json.loads((out / f"{res.parent.name}.spec.json").read_text()))["memory_bytes"]["total"]
    rows.append({"run": res.parent.name, "status": r["status"], "eval_loss": m.get("eval_loss"),
                 "vqa_accuracy": m.get("vqa_accuracy"), "peak_memory_gib": (peak or 0) / 2**30,
                 "plan_estimate_gib": est / 2**30, "estimate_over_measured": est / peak if peak else None,
                 "tokens_per_second": m.get("tokens_per_second")})
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for row in rows:
    print(row)
EOF
