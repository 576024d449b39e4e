"""Session fixture: the tiny LLaVA (2-layer llama, 2-layer CLIP tower, offline tokenizer + processor) and
the shapes VQA set built by scripts/make_tiny_llava.py, cached under the temp dir by the script's hash."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_llava.py"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("make_tiny_llava", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_tiny_llava() -> Path:
    """OUT/model and OUT/data ({train,eval}.json, images/): 16 train and 6 eval records, 32 px images."""
    digest = hashlib.sha256(
        SCRIPT.read_bytes() + (SCRIPT.parent / "tiny_models.py").read_bytes()
    ).hexdigest()[:12]
    root = Path(os.environ.get("OPLORA_TEST_CACHE", tempfile.gettempdir())) / f"oplora-tiny-llava-{digest}"
    if (root / "DONE").exists():
        return root
    mod = _load_script()
    tmp = Path(tempfile.mkdtemp(prefix="tiny-llava-", dir=root.parent))
    mod.build_model(tmp)
    mod.build_data(tmp, n_train=16, n_eval=6)
    (tmp / "DONE").write_text("ok")
    try:
        tmp.rename(root)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def llava_spec(root: Path, **over: Any) -> dict[str, Any]:
    """A small, fast llava spec on the tiny assets; keyword args replace top-level blocks."""
    spec: dict[str, Any] = {
        "task": "llava",
        "device": "cpu",
        "model": {"pretrained": str(root / "model")},
        "adapter": {"kind": "lora", "r": 4},
        "data": {
            "train_json": str(root / "data" / "train.json"),
            "image_folder": str(root / "data" / "images"),
            "eval_json": str(root / "data" / "eval.json"),
            "max_length": 64,
        },
        "optimizer": {"lr": 3e-3},
        "train": {"steps": 3, "batch_size": 2},
        "eval": {"batch_size": 3, "max_new_tokens": 3},
    }
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def one_thread():
    """These models are tiny: one torch thread is several times faster than two OpenMP threads spinning
    against other work on a shared 2-core machine. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
