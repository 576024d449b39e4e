"""One writer per run directory: DIR/run.lock holds {pid, hostname, started_at} for the run's lifetime.

The file is created exclusively (O_EXCL) and removed when the run ends. A lock whose process is gone (same
host, pid not alive) is stale and taken over, so a run killed with SIGKILL never blocks the next one; a
lock from another host is always live (its pid cannot be checked from here). sdk/lock.ts reads and writes
the same format, and sweeps hold their store with it (STORE/sweep.lock): a run inside a store a live sweep
holds is refused unless that sweep started it (env OPLORA_SWEEP_HOLDER = "pid@host" of the sweep's lock).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_LOCK = "run.lock"
SWEEP_LOCK = "sweep.lock"
SWEEP_HOLDER_ENV = "OPLORA_SWEEP_HOLDER"


class LockHeld(Exception):
    """A live process holds the lock; `holder` is what its lock file says."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        super().__init__(
            f"{path.parent} is in use by another {'sweep' if path.name == SWEEP_LOCK else 'run'} "
            f"(pid {holder.get('pid')} on {holder.get('hostname', '?')} since {holder.get('started_at', '?')}); "
            "wait for it or cancel it"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_holder(path: Path) -> dict[str, Any] | None:
    """What the lock file at `path` says when a live process holds it; None when absent or stale."""
    held = _read(path)
    if held is None or not isinstance(held.get("pid"), int):
        return None
    if held.get("hostname", socket.gethostname()) != socket.gethostname():
        return held
    return held if _alive(held["pid"]) else None


def check_sweep_store(run_dir: Path, in_sweep: bool = False) -> bool:
    """Refuse a run inside a store (STORE/runs/<id>) that a live sweep holds, unless that sweep started it
    (`in_sweep`, or env OPLORA_SWEEP_HOLDER naming the holder). True when the run belongs to that sweep."""
    store = run_dir.resolve().parent.parent
    held = live_holder(store / SWEEP_LOCK)
    if held is None:
        return False
    if in_sweep or os.environ.get(SWEEP_HOLDER_ENV) == f"{held['pid']}@{held.get('hostname')}":
        return True
    raise LockHeld(store / SWEEP_LOCK, held)


def acquire_run_lock(run_dir: Path, take_over: bool = False) -> Callable[[], None]:
    """Take RUN_DIR/run.lock (creating RUN_DIR), or raise LockHeld naming the live holder. `take_over`: any
    holder counts as stale (a trial of the sweep holding the store: the sweep already excludes every other
    writer, and a Ray retry on another node must take over the lock of the node that died). Returns the
    function that releases it (removes the file when it is still ours, and RUN_DIR when it made it empty)."""
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_LOCK
    mine = {"pid": os.getpid(), "hostname": socket.gethostname(), "started_at": _now()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = None if take_over else live_holder(path)
            if held is not None:
                raise LockHeld(path, held) from None
            # stale (dead owner, or unreadable): move it aside atomically, then try again
            stale = path.with_name(f"{RUN_LOCK}.stale.{secrets.token_hex(4)}")
            try:
                os.rename(path, stale)
                stale.unlink()
            except OSError:
                pass  # another process took it over first
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(mine) + "\n")
        return lambda: _release(path, mine, made)
    raise LockHeld(path, _read(path) or {"pid": "?"})


def _release(path: Path, mine: dict[str, Any], made: bool) -> None:
    if _read(path) == mine:
        path.unlink(missing_ok=True)
    if made and path.parent.exists() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
