"""train.report_to: accelerate's trackers fed from the run's events (real TensorBoard files read back; wandb
in offline mode writes its run directory; nothing needs the network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from oplora.run.runner import EXIT_INVALID, EXIT_OK, run_spec
from oplora.run.tracking import identity

MF = {
    "task": "matrix_factorization",
    "device": "cpu",
    "matrix": {"rows": 16, "cols": 16},
    "adapter": {"kind": "op-lora", "r": 2, "generator": {"embedding_dim": 8, "hidden_dim": 8}},
    "train": {"steps": 30, "log_every": 5},
}


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_the_loss_curve_of_result_json(tmp_path):
    spec = {**MF, "train": {**MF["train"], "report_to": ["tensorboard"]}}
    result, code = run_spec(spec, tmp_path / "mf-run")
    assert code == EXIT_OK, result and result["error"]
    logdir = tmp_path / "mf-run" / "tracking" / "tensorboard" / "mf-run"
    logged = scalars(logdir)
    curve = {p["step"]: p["loss"] for p in result["metrics"]["loss_curve"]}
    loss = dict(logged["train/loss"])  # every step event: step 0 (before training), then every 5th
    assert sorted(loss) == [0, 5, 10, 15, 20, 25, 30]
    for step in sorted(loss)[1:]:
        assert abs(loss[step] - curve[step]) <= 1e-6 * max(1.0, abs(curve[step])), step
    assert "train/relative_excess" in logged
    final = logged["final/final_loss"]
    assert abs(final[0][1] - result["metrics"]["final_loss"]) <= 1e-6


def test_wandb_offline_writes_its_run_directory(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({**MF, "train": {**MF["train"], "report_to": ["wandb"]}}))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "oplora", "run", str(spec_file), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    runs = list((out / "tracking" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((out / "tracking").rglob("*"))


def test_a_missing_tracker_package_is_refused_before_anything_is_written(tmp_path, capsys):
    spec = {**MF, "train": {**MF["train"], "report_to": ["swanlab"]}}
    result, code = run_spec(spec, tmp_path / "run")
    assert (result, code) == (None, EXIT_INVALID)
    assert (
        "train.report_to: 'swanlab' needs the swanlab package (pip install swanlab)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_a_sweep_trial_is_named_after_the_sweep_with_its_axes(tmp_path):
    store = tmp_path / "lr-sweep"
    (store / "runs" / "abc123").mkdir(parents=True)
    trial = {
        "id": "abc123",
        "label": "adapter.kind=lora lr=0.01",
        "axes": {"adapter.kind": "lora", "lr": 0.01},
    }
    (store / "sweep.json").write_text(json.dumps({"trials": [trial]}))
    project, name, config = identity({**MF, "seed": 2}, store / "runs" / "abc123")
    assert (project, name) == ("lr-sweep", "adapter.kind=lora lr=0.01")
    assert config["lr"] == 0.01 and config["adapter.kind"] == "lora" and config["seed"] == 2
    assert identity(MF, tmp_path / "exp" / "run1")[:2] == ("exp", "run1")  # a plain run
