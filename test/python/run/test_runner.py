"""The runner: run directory contract, exit codes, events, refusal before any work, cancellation."""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest
from oplora.run import runner
from oplora.run.rundir import write_json_atomic


@pytest.fixture
def fake_task(monkeypatch):
    """Registers an in-memory task module under the MF task name, so the runner itself is what is tested."""
    mod = types.ModuleType("oplora_fake_task")
    calls: dict = {}

    def run(spec, ctx):
        calls["spec"] = spec
        behaviour = calls.get("behaviour", "ok")
        ctx.step(1, 2, 0.5)
        if behaviour == "raise":
            raise RuntimeError("boom in task")
        if behaviour == "input":
            raise runner.InputError("data.folder: /nope does not exist")
        if behaviour == "cancel":
            os.kill(os.getpid(), signal.SIGTERM)
        p = ctx.path("adapter", "weights.bin")
        p.write_bytes(b"x")
        ctx.artifact("adapter", p)
        ctx.step(2, 2, 0.25)
        return {"final_loss": 0.25}

    mod.run = run
    monkeypatch.setitem(sys.modules, "oplora_fake_task", mod)
    monkeypatch.setitem(runner.TASK_MODULES, "matrix_factorization", "oplora_fake_task")
    return calls


SPEC = {"task": "matrix_factorization", "device": "cpu"}


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.ndjson").read_text().splitlines()]


def test_success_writes_the_run_directory(tmp_path, fake_task):
    out = tmp_path / "run"
    result, code = runner.run_spec(SPEC, out)
    assert code == runner.EXIT_OK
    assert result is not None and result["status"] == "succeeded"
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["metrics"] == {"final_loss": 0.25}
    assert on_disk["artifacts"] == [{"kind": "adapter", "path": "adapter/weights.bin"}]
    assert on_disk["versions"]["torch"] and on_disk["versions"]["peft"]
    assert on_disk["timing"]["wall_s"] >= 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["adapter"]["generator"]["hidden_dim"] == 32  # defaults filled in
    types_ = [e["type"] for e in events(out)]
    assert types_ == ["started", "phase", "phase", "step", "artifact", "step", "completed"]
    assert [e["seq"] for e in events(out)] == list(range(7))


def test_invalid_spec_creates_nothing(tmp_path, fake_task, capsys):
    out = tmp_path / "run"
    result, code = runner.run_spec({"task": "matrix_factorization", "adapter": {"kind": "lora", "r": 0}}, out)
    assert (result, code) == (None, runner.EXIT_INVALID)
    assert not out.exists()
    assert "adapter.r" in capsys.readouterr().err


def test_refusal_is_left_to_the_events_fd_reader(tmp_path, fake_task, capsys):
    r, w = os.pipe()
    _, code = runner.run_spec(
        {"task": "matrix_factorization", "adapter": {"kind": "lora", "r": 0}}, tmp_path / "run", events_fd=w
    )
    with os.fdopen(r) as f:
        (event,) = [json.loads(line) for line in f]
    assert (
        code == runner.EXIT_INVALID and event["type"] == "error" and "adapter.r" in event["error"]["message"]
    )
    assert capsys.readouterr().err == ""  # the SDK prints the error event; stderr would be a second copy


def test_task_exception_is_recorded(tmp_path, fake_task):
    fake_task["behaviour"] = "raise"
    out = tmp_path / "run"
    result, code = runner.run_spec(SPEC, out)
    assert code == runner.EXIT_FAILED
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["status"] == "failed"
    assert on_disk["error"]["type"] == "RuntimeError"
    assert on_disk["error"]["message"] == "boom in task"
    assert "Traceback" in on_disk["error"]["traceback"]
    assert events(out)[-1]["type"] == "error"


def test_input_error_exits_2(tmp_path, fake_task):
    fake_task["behaviour"] = "input"
    _, code = runner.run_spec(SPEC, tmp_path / "run")
    assert code == runner.EXIT_INVALID


def test_a_run_refused_for_its_input_can_be_rerun_in_its_folder_once_fixed(tmp_path, fake_task):
    out = tmp_path / "run"
    fake_task["behaviour"] = "input"
    assert runner.run_spec({**SPEC, "seed": 1}, out)[1] == runner.EXIT_INVALID
    fake_task["behaviour"] = "ok"
    result, code = runner.run_spec(SPEC, out)  # the fixed spec, same --out: no "folder is not empty"
    assert code == runner.EXIT_OK and result["status"] == "succeeded"
    assert json.loads((out / "spec.json").read_text())["seed"] == SPEC.get("seed", 0)
    assert [e["type"] for e in events(out)].count("started") == 1  # the refusal's events are gone
    # a run that failed in training (not for its input) keeps its folder
    failed = tmp_path / "failed"
    fake_task["behaviour"] = "raise"
    runner.run_spec(SPEC, failed)
    fake_task["behaviour"] = "ok"
    assert runner.run_spec(SPEC, failed) == (None, runner.EXIT_INVALID)
    assert json.loads((failed / "result.json").read_text())["error"]["type"] == "RuntimeError"


def test_sigterm_cancels_and_restores_handlers(tmp_path, fake_task):
    fake_task["behaviour"] = "cancel"
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    result, code = runner.run_spec(SPEC, out)
    assert code == runner.EXIT_CANCELLED
    assert json.loads((out / "result.json").read_text())["status"] == "cancelled"
    assert events(out)[-1] == {**events(out)[-1], "type": "cancelled", "step": 1}
    assert signal.getsignal(signal.SIGTERM) == before


def test_refuses_a_folder_with_another_run(tmp_path, fake_task):
    out = tmp_path / "run"
    runner.run_spec(SPEC, out)
    before = (out / "result.json").read_bytes()
    result, code = runner.run_spec(SPEC, out)
    assert (result, code) == (None, runner.EXIT_INVALID)
    assert (out / "result.json").read_bytes() == before


def test_resume_requires_the_same_spec(tmp_path, fake_task):
    out = tmp_path / "run"
    runner.run_spec(SPEC, out)
    _, code = runner.run_spec({**SPEC, "seed": 5}, out, resume=True)
    assert code == runner.EXIT_INVALID
    (out / "result.json").unlink()  # as if the run had been killed before it finished
    _, code = runner.run_spec(SPEC, out, resume=True)
    assert code == runner.EXIT_OK


def test_resuming_a_run_that_succeeded_is_refused_and_leaves_it_as_it_is(tmp_path, fake_task, capsys):
    out = tmp_path / "run"
    runner.run_spec(SPEC, out)
    files = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    assert runner.run_spec(SPEC, out, resume=True) == (None, runner.EXIT_INVALID)
    assert f"--out {out}: the run there already succeeded" in capsys.readouterr().err
    assert files() == before


def test_out_that_is_a_file_is_refused(tmp_path, fake_task, capsys):
    out = tmp_path / "run"
    out.write_text("mine")
    assert runner.run_spec(SPEC, out) == (None, runner.EXIT_INVALID)
    assert f"--out {out}: is a file" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_resume_into_a_folder_without_a_run_is_refused(tmp_path, fake_task, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert runner.run_spec(SPEC, out, resume=True) == (None, runner.EXIT_INVALID)
    assert "holds no run (no spec.json)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_cli_prints_a_failed_runs_error(tmp_path, fake_task, capsys):
    """`python -m oplora run` without the SDK: the error goes to stderr, not only into result.json."""
    from oplora.__main__ import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    fake_task["behaviour"] = "input"
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == runner.EXIT_INVALID
    assert "oplora: InputError: data.folder: /nope does not exist" in capsys.readouterr().err


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_write_gives_the_umask_mode(tmp_path):
    target = tmp_path / "result.json"
    old = os.umask(0o022)
    try:
        write_json_atomic(target, {"a": 1})
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644  # as open() makes it, not mkstemp's 0600


def test_non_finite_metrics_become_null(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"loss": float("nan"), "curve": [1.0, float("inf")]})
    assert json.loads(target.read_text()) == {"loss": None, "curve": [1.0, None]}


STARTED_BEFORE_TORCH = """
import os, sys
fd = int(sys.argv[1])


class TorchMarker:  # writes a marker line on the events pipe when torch is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            os.write(fd, b'{"type": "torch-import"}\\n')
            sys.meta_path.remove(self)
        return None


sys.meta_path.insert(0, TorchMarker())
from oplora.__main__ import main

sys.exit(main(["run", sys.argv[2], "--out", sys.argv[3], "--events-fd", str(fd)]))
"""


def test_started_and_loading_are_emitted_before_torch_is_imported(tmp_path):
    """`python -m oplora run`'s first events (started, phase loading) reach the events pipe before torch
    is imported (a real subprocess; a meta-path hook marks torch's first import on the same pipe)."""
    import os
    import subprocess

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({**SPEC, "matrix": {"rows": 8, "cols": 8}, "train": {"steps": 2, "log_every": 1}})
    )
    r, w = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(Path(runner.__file__).parents[2])}
    p = subprocess.Popen(
        [sys.executable, "-c", STARTED_BEFORE_TORCH, str(w), str(spec), str(tmp_path / "run")],
        pass_fds=(w,),
        env=env,
    )
    os.close(w)
    with os.fdopen(r) as f:
        lines = [json.loads(x) for x in f]
    assert p.wait(timeout=300) == runner.EXIT_OK
    kinds = [e["type"] for e in lines]
    assert kinds[:3] == ["started", "phase", "torch-import"], kinds
    assert lines[0]["device"] is None and lines[1]["phase"] == "loading"
    running = next(e for e in lines if e["type"] == "phase" and e["phase"] == "running")
    assert running["device"] == "cpu" and kinds[-1] == "completed"
