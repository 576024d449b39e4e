"""The run directory: atomic writes, so a reader never sees a half-written file.

DIR/spec.json        the validated spec, defaults filled in
DIR/events.ndjson    one JSON event per line, appended as the run goes
DIR/result.json      written once, at the end (succeeded / failed / cancelled)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """A run file's JSON; ValueError naming the file when it is missing or not JSON (truncated, foreign)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e})") from None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600; give it the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: put it back at once). Read once, at import, so no
    thread's file is ever created while it is 0."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically. Non-finite floats (a diverged run's loss) become null."""
    text = json.dumps(_finite(obj), indent=2, allow_nan=False, default=_default)
    write_bytes_atomic(path, (text + "\n").encode())


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json_line(obj: Any) -> str:
    """One NDJSON line (no trailing newline). Non-finite floats become null, so the line is valid JSON."""
    return json.dumps(_finite(obj), default=_default, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
