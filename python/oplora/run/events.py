"""Typed progress events, as NDJSON: appended to `DIR/events.ndjson` and, when the SDK runs us, written to a
dedicated pipe (`--events-fd N`), so library chatter on stdout/stderr never mixes with them.

Event types (the SDK's zod schemas in `sdk/events.ts` are the reference):

    started     {task, run_dir, pid, device: null, versions}     before torch is imported
    phase       {phase: "loading"}                               importing torch and the task
                {phase: "running", device}                       the task starts, on `device`
    step        {step, total_steps, loss, lr?, metrics?}
    eval        {step, metrics}
    checkpoint  {step, path}
    artifact    {kind, path, step?, label?}        path relative to the run directory
    completed   {result}
    error       {error: {type, message, traceback}}
    cancelled   {step?}

Every event also carries `type`, `time` (seconds since the epoch) and `seq` (0, 1, 2, ...).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from .rundir import to_json_line


class EventSink:
    """Writes events to the run directory's log and, optionally, to an inherited file descriptor."""

    def __init__(self, log_path: Path | None, fd: int | None = None) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._log: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._pipe: IO[str] | None = (
            os.fdopen(fd, "w", encoding="utf-8", buffering=1) if fd is not None else None
        )

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:  # noqa: A002
        with self._lock:
            event = {"type": type, "seq": self._seq, "time": time.time(), **fields}
            self._seq += 1
            line = to_json_line(event) + "\n"
            if self._log is not None:
                self._log.write(line)
            if self._pipe is not None:
                try:
                    self._pipe.write(line)
                    self._pipe.flush()
                except (BrokenPipeError, OSError):
                    self._pipe = None  # the reader went away; the log file still has everything
            return event

    def close(self) -> None:
        for f in (self._log, self._pipe):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._log = self._pipe = None
