"""One writer per run directory (run/lock.py), with real `python -m oplora run` processes: a second writer
is refused naming the holder and changes nothing; a SIGKILLed holder's lock is taken over by the next run;
a run inside a store a live sweep holds is refused unless that sweep started it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from oplora.run.lock import RUN_LOCK, SWEEP_HOLDER_ENV, acquire_run_lock
from oplora.run.runner import EXIT_INVALID, EXIT_OK, check_run_dir, run_spec

ROOT = Path(__file__).resolve().parents[3]
SPEC = {
    "task": "matrix_factorization",
    "device": "cpu",
    "matrix": {"rows": 16, "cols": 16},
    "adapter": {"kind": "lora", "r": 2},
    "train": {"steps": 1500, "log_every": 500},
}


def _oplora_run(spec_file: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "oplora", "run", str(spec_file), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _snapshot(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()
    }


def _wait_started(out: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = out / "events.ndjson"
        if events.exists() and '"started"' in events.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the first run never started")


def test_second_writer_refused_then_lock_taken_over_after_sigkill(tmp_path):
    spec_file, out = tmp_path / "spec.json", tmp_path / "run"
    spec_file.write_text(json.dumps(SPEC))
    first = _oplora_run(spec_file, out)
    try:
        _wait_started(out, first)
        os.kill(first.pid, signal.SIGSTOP)  # hold it still: every byte it wrote must stay as it is
        holder = json.loads((out / RUN_LOCK).read_text())
        assert holder["pid"] == first.pid and holder["hostname"] == socket.gethostname()
        before = _snapshot(out)
        second = _oplora_run(spec_file, out, "--resume")
        _, err = second.communicate(timeout=120)
        assert second.returncode == EXIT_INVALID, err
        assert f"pid {first.pid} on {socket.gethostname()} since {holder['started_at']}" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(out) == before
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert json.loads((out / RUN_LOCK).read_text())["pid"] == first.pid  # left behind by the kill
    third = _oplora_run(spec_file, out, "--resume")
    _, err = third.communicate(timeout=300)
    assert third.returncode == EXIT_OK, err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded"
    started = [json.loads(x) for x in (out / "events.ndjson").read_text().splitlines() if '"started"' in x]
    assert started[-1]["pid"] == third.pid
    assert not (out / RUN_LOCK).exists()  # released on exit


def test_lock_file_alone_is_an_empty_folder(tmp_path):
    out = tmp_path / "run"
    release = acquire_run_lock(out)
    check_run_dir(out, SPEC, resume=False)  # only run.lock inside: still empty
    release()
    assert not out.exists()  # the lock made the folder, releasing it leaves nothing


def test_run_inside_a_store_held_by_a_sweep(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    store.mkdir()
    me = {"pid": os.getpid(), "hostname": socket.gethostname(), "started_at": "2026-01-01T00:00:00Z"}
    (store / "sweep.lock").write_text(json.dumps(me))  # this live process holds the store
    out = store / "runs" / "abc"
    spec = {**SPEC, "train": {"steps": 5, "log_every": 5}}
    monkeypatch.delenv(SWEEP_HOLDER_ENV, raising=False)
    result, code = run_spec(spec, out)
    assert (result, code) == (None, EXIT_INVALID)
    err = capsys.readouterr().err
    assert f"{store} is in use by another sweep (pid {os.getpid()} on {me['hostname']}" in err
    assert not out.exists()
    monkeypatch.setenv(SWEEP_HOLDER_ENV, f"{os.getpid()}@{me['hostname']}")  # the sweep's own trial
    result, code = run_spec(spec, out)
    assert code == EXIT_OK, result
    assert not (out / RUN_LOCK).exists()
