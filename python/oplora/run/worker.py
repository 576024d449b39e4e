"""A warm worker: runs many specs in one process, so a sweep's trials pay Python's start-up (importing torch,
diffusers, transformers) once per worker instead of once per trial.

    SDK ──stdin──► {"id": "t1", "spec": {...}, "out_dir": "/sweep/runs/ab12"}   one JSON request per line
    SDK ◄──fd 3──  {"worker": "ready", "pid": 123}                              once, at start
                   {"type": "started", ...} {"type": "step", ...} ...          the run's events (runner.py)
                   {"reply": "t1", "code": 0, "result": {...} | null}          when the run is over

Requests run one at a time through `oplora.run.runner.run_spec`, in the main thread (so SIGTERM cancels the
run in progress exactly as it cancels `python -m oplora run`: the reply then carries a cancelled result).
The channel is the file descriptor in `OPLORA_WORKER_FD` (default 3); without one the worker uses its
stdout and sends library chatter to stderr. Standard input reaching EOF (the SDK closed it, or died)
cancels the run in progress and ends the worker; SIGTERM while idle ends it too.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .rundir import to_json_line
from .runner import EXIT_CANCELLED, EXIT_INVALID, run_spec

HARD_EXIT_AFTER_S = 10.0


class _Channel:
    """Writes whole JSON lines to the SDK's channel file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        data = (to_json_line(obj) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]


def _open_channel() -> _Channel:
    fd = int(os.environ.get("OPLORA_WORKER_FD", "3"))
    try:
        os.fstat(fd)
        return _Channel(fd)
    except OSError:  # no dedicated pipe: answer on stdout, move chatter to stderr
        out = os.dup(sys.stdout.fileno())
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        return _Channel(out)


def _exit_on_term(_signum: int, _frame: Any) -> None:
    raise SystemExit(EXIT_CANCELLED)


def serve() -> int:
    """Serve requests until standard input closes. Returns the process exit code."""
    channel = _open_channel()
    requests: queue.Queue[str | None] = queue.Queue()
    busy = threading.Event()

    def read_stdin() -> None:
        try:
            for line in sys.stdin:
                requests.put(line)
        except (OSError, ValueError):
            pass
        requests.put(None)
        if busy.is_set():  # the SDK went away mid-run: cancel it, and exit hard if that does not finish
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(HARD_EXIT_AFTER_S)
            os._exit(EXIT_CANCELLED)

    # SIGTERM / SIGINT while idle end the worker; during a run the runner installs its own handlers
    # (raising Cancelled) and restores these afterwards.
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _exit_on_term)
    threading.Thread(target=read_stdin, name="oplora-worker-stdin", daemon=True).start()
    channel.send({"worker": "ready", "pid": os.getpid()})

    while True:
        try:
            line = requests.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            return 0
        if not line.strip():
            continue
        _handle(line, channel, busy)


def _handle(line: str, channel: _Channel, busy: threading.Event) -> None:
    try:
        request = json.loads(line)
        req_id = str(request["id"])
        spec, out_dir = request["spec"], Path(request["out_dir"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        channel.send({"reply": None, "code": EXIT_INVALID, "result": None, "error": f"bad request: {e!r}"})
        return
    # Each run gets its own duplicate of the channel: the run's EventSink closes it when the run ends.
    events_fd = os.dup(channel.fd)
    busy.set()
    try:
        result, code = run_spec(spec, out_dir, events_fd=events_fd)
    finally:
        busy.clear()
    channel.send({"reply": req_id, "code": code, "result": result})
