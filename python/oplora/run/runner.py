"""Runs one spec in a run directory: validate, record, dispatch to the task, write the result.

    spec (dict) ──validate_spec──► DIR/spec.json ──tasks.<task>.run(spec, ctx)──► metrics
                                        │                     │ ctx.step / eval / artifact / checkpoint
                                        ▼                     ▼
                                 DIR/events.ndjson  ◄──── EventSink ────► events pipe (SDK)
                                        DIR/result.json  (status succeeded | failed | cancelled)

A task is a module under `oplora.tasks` with `run(spec: dict, ctx: RunContext) -> dict` returning its
metrics. It raises `InputError` for bad input it finds itself (a missing image, an unknown column) before
heavy work starts. SIGTERM / SIGINT raise `Cancelled` in the main thread wherever the task is.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .environment import resolve_device, versions
from .events import EventSink
from .lock import RUN_LOCK, LockHeld, acquire_run_lock, check_sweep_store
from .rundir import write_json_atomic
from .spec import SpecError, validate_spec
from .tracking import Tracking, check_available

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


class Cancelled(BaseException):
    """The run was asked to stop (SIGTERM, SIGINT, or the SDK's stdin closing). A BaseException, so a
    task's `except Exception` does not swallow it."""


class InputError(ValueError):
    """Bad input a task found before training: names the field, file or record at fault."""


@dataclass
class RunContext:
    """What a task gets: the validated spec, its run directory, the device and the event helpers."""

    spec: dict[str, Any]
    run_dir: Path
    events: EventSink
    device: Any = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    last_step: int | None = None
    tracking: Any = None  # run.tracking.Tracking when train.report_to names trackers

    def _emit(self, event: str, **fields: Any) -> None:
        self.events.emit(event, **fields)
        if self.tracking is not None:
            self.tracking.event(event, fields, self.run_dir)

    def path(self, *parts: str) -> Path:
        """A path inside the run directory (parents created)."""
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def rel(self, path: Path) -> str:
        """`path` relative to the run directory, as events and result.json carry it."""
        try:
            return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(Path(path).resolve())

    def step(self, step: int, total_steps: int, loss: float, **extra: Any) -> None:
        self.last_step = step
        self._emit("step", step=step, total_steps=total_steps, loss=float(loss), **extra)

    def warn(self, field: str, message: str) -> None:
        """A spec value that runs but is likely a mistake (the run goes on): a `warning` event naming it."""
        self._emit("warning", field=field, message=message)

    def eval(self, step: int, metrics: dict[str, Any]) -> None:
        self._emit("eval", step=step, metrics=metrics)

    def checkpoint(self, step: int, path: Path) -> None:
        self.events.emit("checkpoint", step=step, path=self.rel(path))

    def artifact(self, kind: str, path: Path, step: int | None = None, label: str | None = None) -> None:
        entry: dict[str, Any] = {"kind": kind, "path": self.rel(path)}
        if step is not None:
            entry["step"] = step
        if label is not None:
            entry["label"] = label
        self.artifacts.append(entry)
        self._emit("artifact", **entry)


TASK_MODULES = {
    "matrix_factorization": "oplora.tasks.matrix_factorization.task",
    "matrix_factorization_study": "oplora.tasks.matrix_factorization.study",
    "text_to_image": "oplora.tasks.text_to_image.task",
    "llava": "oplora.tasks.llava.task",
}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def raise_cancelled(signum: int, _frame: Any) -> None:
    """Signal handler: raise `Cancelled` (named after the signal) wherever the run is."""
    raise Cancelled(signal.Signals(signum).name)


def _watch_stdin() -> None:
    """When the parent (Node) dies, our stdin reaches EOF: cancel, and exit hard if that does not finish."""

    def watch() -> None:
        try:
            while os.read(0, 4096):  # unbuffered: a buffered read holds a lock that aborts shutdown
                pass
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(EXIT_CANCELLED)

    threading.Thread(target=watch, name="oplora-stdin-watchdog", daemon=True).start()


REFUSAL_FILES = {"spec.json", "events.ndjson", "result.json", RUN_LOCK}


def _result_of(run_dir: Path) -> dict[str, Any]:
    """The run's result.json; {} when there is none (a killed run) or it cannot be read."""
    import json

    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) else {}


def _refused_for_input(run_dir: Path) -> bool:
    """Whether `run_dir` holds only a run that stopped at an InputError (bad data, model or targets, found
    before training): no checkpoint, adapter or log in it, nothing worth keeping."""
    if not {p.name for p in run_dir.iterdir()} <= REFUSAL_FILES:
        return False
    result = _result_of(run_dir)
    return result.get("status") == "failed" and (result.get("error") or {}).get("type") == "InputError"


def check_run_dir(run_dir: Path, spec: dict[str, Any], resume: bool, in_sweep: bool = False) -> None:
    """Refuse to write into a folder holding another run: nothing already written gets lost. Its lock file
    alone does not count (run.lock: the lock itself decides whether its holder is alive). Resuming a run
    that already succeeded is refused too (it would retrain its tail and rewrite its result and adapter),
    except for a sweep's trial (`in_sweep`: Ray retries a task whose node died after the run finished)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir}: is a file, not a folder; choose a new folder")
    if not run_dir.exists() or all(p.name == RUN_LOCK for p in run_dir.iterdir()):
        return
    if not resume and _refused_for_input(run_dir):
        return  # rerunning after fixing the input replaces the refusal (`run_spec` starts its files anew)
    if not resume:
        raise InputError(
            f"--out {run_dir}: the folder is not empty; choose a new folder, or resume the run that is there"
            " (--resume; from TypeScript: outDir, resume: true)"
        )
    old = run_dir / "spec.json"
    if not old.exists():
        raise InputError(f"--out {run_dir}: resume asked for, but the folder holds no run (no spec.json)")
    import json

    if json.loads(old.read_text()) != spec:
        raise InputError(f"--out {run_dir}: resume asked for, but its spec.json differs from this spec")
    if _result_of(run_dir).get("status") == "succeeded" and not in_sweep:
        raise InputError(
            f"--out {run_dir}: the run there already succeeded (result.json); nothing to resume. "
            "To train again, choose a new folder"
        )


def run_spec(
    raw_spec: Any,
    run_dir: Path,
    events_fd: int | None = None,
    watch_stdin: bool = False,
    resume: bool = False,
    in_sweep: bool = False,
) -> tuple[dict[str, Any] | None, int]:
    """Run one spec. Returns (result, exit code); result is None when the spec or run dir was refused
    (then nothing was created and the reason was printed to stderr). The run holds RUN_DIR/run.lock while it
    writes (run/lock.py); `in_sweep`: it is a trial of the sweep holding the store it is in."""
    try:
        spec = validate_spec(raw_spec)
        check_available(spec.get("train", {}).get("report_to") or [])
        check_run_dir(run_dir, spec, resume, in_sweep)
        release = acquire_run_lock(run_dir, take_over=check_sweep_store(run_dir, in_sweep))
    except (SpecError, InputError, LockHeld) as e:
        if events_fd is None:  # with an events fd the caller reports the error event (no second copy)
            print(f"oplora: {e}", file=sys.stderr)
        sink = EventSink(None, events_fd)
        sink.emit("error", error={"type": type(e).__name__, "message": str(e), "traceback": ""})
        sink.close()
        return None, EXIT_INVALID
    try:  # the lock is held until result.json and the terminal event are written
        if not resume:  # a new run: its folder is empty or holds a refusal for input, which it replaces
            for name in ("events.ndjson", "result.json"):
                (run_dir / name).unlink(missing_ok=True)
        return _run_locked(spec, run_dir, events_fd, watch_stdin)
    finally:
        release()


def _run_locked(
    spec: dict[str, Any], run_dir: Path, events_fd: int | None, watch_stdin: bool
) -> tuple[dict[str, Any], int]:
    """The run itself, with RUN_DIR/run.lock held: spec.json, events, the task, result.json."""
    write_json_atomic(run_dir / "spec.json", spec)
    sink = EventSink(run_dir / "events.ndjson", events_fd)
    ctx = RunContext(spec=spec, run_dir=run_dir, events=sink)
    started_at, t0 = _now(), time.perf_counter()
    result: dict[str, Any] = {
        "status": "failed",
        "task": spec["task"],
        "run_dir": str(run_dir.resolve()),
        "metrics": None,
        "artifacts": ctx.artifacts,
        "error": None,
        "versions": versions(),
        "device": None,
    }
    code = EXIT_FAILED
    previous = {s: signal.signal(s, raise_cancelled) for s in (signal.SIGTERM, signal.SIGINT)}
    if watch_stdin:
        _watch_stdin()
    try:
        try:
            # `started` and `loading` go out before torch is imported (~2 s): spawn to first event stays fast.
            sink.emit(
                "started",
                task=spec["task"],
                run_dir=result["run_dir"],
                pid=os.getpid(),
                device=None,
                versions=result["versions"],
            )
            sink.emit("phase", phase="loading")
            ctx.device = resolve_device(spec.get("device", "auto"))  # imports torch
            result["device"] = str(ctx.device)
            ctx.tracking = Tracking(spec, run_dir, ctx.device)
            task = importlib.import_module(TASK_MODULES[spec["task"]])
            sink.emit("phase", phase="running", device=result["device"])
            result["metrics"] = task.run(spec, ctx)
            result["status"], code = "succeeded", EXIT_OK
        except Cancelled:
            result["status"], code = "cancelled", EXIT_CANCELLED
        except Exception as e:  # the run failed: record why, with Python's own traceback
            result["error"] = {
                "type": type(e).__name__,
                "message": str(e),
                "traceback": traceback.format_exc(),
            }
            code = EXIT_INVALID if isinstance(e, InputError) else EXIT_FAILED
    except Cancelled:  # a second signal while we were already handling the first
        result["status"], code = "cancelled", EXIT_CANCELLED
    finally:
        for s in previous:  # the result must be written whole: no Cancelled while we write it
            signal.signal(s, signal.SIG_IGN)
        finished = time.perf_counter()
        result["timing"] = {"started_at": started_at, "finished_at": _now(), "wall_s": finished - t0}
        write_json_atomic(run_dir / "result.json", result)
        if ctx.tracking is not None:
            try:
                ctx.tracking.finish(result["metrics"], ctx.last_step)
            except Exception as e:  # a tracker's own failure must not change the run's outcome
                print(
                    f"oplora: warning: closing the trackers failed: {type(e).__name__}: {e}", file=sys.stderr
                )
        if result["status"] == "succeeded":
            sink.emit("completed", result=result)
        elif result["status"] == "cancelled":
            sink.emit("cancelled", step=ctx.last_step)
        else:
            sink.emit("error", error=result["error"])
        sink.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return result, code
