"""Session fixture: the tiny SD / SDXL pipelines, tiny CLIP and captioned data built by
scripts/make_tiny_sd.py, cached under the temp dir by the script's hash (built once, reused across runs)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_sd.py"


def build_tiny_sd(small: bool = False) -> Path:
    digest = hashlib.sha256(
        SCRIPT.read_bytes() + (SCRIPT.parent / "tiny_models.py").read_bytes()
    ).hexdigest()[:12]
    root = (
        Path(os.environ.get("OPLORA_TEST_CACHE", tempfile.gettempdir()))
        / f"oplora-tiny-sd-{digest}{'-small' if small else ''}"
    )
    if (root / "DONE").exists():
        return root
    spec = importlib.util.spec_from_file_location("make_tiny_sd", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tmp = Path(tempfile.mkdtemp(prefix="tiny-sd-", dir=root.parent))
    mod.build_all(tmp, small=small)
    try:
        tmp.rename(root)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@pytest.fixture(scope="session")
def tiny_sd_assets() -> Path:
    return build_tiny_sd()
