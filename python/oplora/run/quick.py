"""The SDK's quick lane (pythonia): small typed calls that take and return JSON strings.

Every function here takes one JSON string of keyword arguments and returns a JSON envelope,
`{"ok": true, "value": ...}` or `{"ok": false, "error": {"type", "message", "traceback"}}`, so results
cross the bridge as plain data and Python's exceptions arrive whole (pythonia drops their message).
Standard output is redirected to standard error during a call: the SDK's process owns stdout.

    doctor()                          environment: versions, CUDA devices, missing packages
    list_target_modules(model, task)  LoRA-targetable modules of a model, built on the meta device
    plan(spec)                        parameter counts and training memory (oplora.plan)
    read_adapter(dir)                 adapter_config.json + tensor names, shapes and dtypes
    echo(value), sleep(seconds), pid()  for tests and benchmarks
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import inspect as inspection


def _envelope(fn: Callable[..., Any], payload: str) -> str:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            kwargs = json.loads(payload) if payload else {}
            value = fn(**kwargs)
        return json.dumps({"ok": True, "value": value}, allow_nan=False, default=str)
    except Exception as e:  # everything a call raises goes back as data, with its traceback
        error = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
        return json.dumps({"ok": False, "error": error})


def _doctor() -> dict[str, Any]:
    from .environment import doctor as env_doctor

    report = env_doctor()
    report["oplora_path"] = str(Path(__file__).resolve().parents[1])  # the package, not its run/ folder
    return report


# --- target modules -------------------------------------------------------------------------------------------


def _plan(spec: Any) -> dict[str, Any]:
    from ..plan import plan as make_plan

    return make_plan(spec)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# --- the lane's entry points (one JSON string in, one JSON string out) ------------------------------------------


def doctor(payload: str = "{}") -> str:
    return _envelope(_doctor, payload)


def list_target_modules(payload: str) -> str:
    return _envelope(inspection.list_target_modules, payload)


def plan(payload: str) -> str:
    return _envelope(_plan, payload)


def read_adapter(payload: str) -> str:
    return _envelope(inspection.read_adapter, payload)


def echo(payload: str) -> str:
    return _envelope(lambda **kw: kw, payload)


def sleep(payload: str) -> str:
    return _envelope(_sleep, payload)


def pid(payload: str = "{}") -> str:
    return _envelope(lambda: os.getpid(), payload)
