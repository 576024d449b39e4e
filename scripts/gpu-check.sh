#!/usr/bin/env bash
# The device check for a lent GPU machine (budget: < 5 minutes on an H200).
#   1. the OP-LoRA core tests, whose `device` fixture adds a cuda variant when CUDA is available;
#   2. bench/generator.py --device cuda: batched vs loop (and "auto"'s pick), OP-LoRA vs LoRA step.
# Outputs go under ${OUT:-bench/results}: pytest-cuda.txt, junit-cuda.xml, generator-cuda.json/.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"  # oplora without an editable install
# OPLORA_PYTHON, else the first of .venv / python3 whose torch sees CUDA, else the first that runs.
PY="${OPLORA_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in .venv/bin/python "$(command -v python3)"; do
    [ -x "$cand" ] || continue
    [ -z "$PY" ] && PY="$cand"
    if "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      PY="$cand"
      break
    fi
  done
fi

"$PY" - <<'PY' 2>&1 | tee "$OUT_DIR/env-cuda.txt"
import torch, peft, transformers, diffusers
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("peft", peft.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__)
PY

status=0
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=10 --junitxml="$OUT_DIR/junit-cuda.xml" \
  test/python/test_generator.py test/python/test_bind.py test/python/test_collapse.py \
  test/python/test_checkpoint.py 2>&1 | tee "$OUT_DIR/pytest-cuda.txt" || status=1

timeout 90 "$PY" bench/generator.py --device cuda --out "$OUT_DIR/generator-cuda.json" 2>&1 \
  | tee "$OUT_DIR/generator-cuda.txt" || status=1
exit $status
