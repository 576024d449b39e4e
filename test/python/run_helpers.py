"""Helpers shared by test files across folders (pytest puts this folder on sys.path through conftest.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from oplora.run.runner import EXIT_INVALID, run_spec


def assert_refused(spec: dict, tmp_path: Path, *needles: str) -> None:
    """`spec` fails with exit code 2 before training (no checkpoints), its message naming every needle."""
    run_dir = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    result, code = run_spec(spec, run_dir)
    assert code == EXIT_INVALID, result and result["error"]
    msg = result["error"]["message"]
    for n in needles:
        assert n in msg, msg
    assert not (run_dir / "checkpoints").exists()
