"""Experiment trackers (`train.report_to`, as diffusers' scripts' `--report_to`): accelerate's own tracker
classes, fed from the run's events, so every task logs the same thing in the same way.

    step event      ─► train/loss, train/lr (and the task's other scalar step fields) at that step
    eval event      ─► eval/<metric> for each scalar metric
    image artifact  ─► images/<label> (text-to-image samples)
    end of run      ─► final/<metric> for each scalar metric of result.json, then the trackers close

Identity: project = the sweep's folder name when the run is a trial of a sweep store (`<store>/runs/<id>`,
next to `<store>/sweep.json`), else the run directory's parent's name; run name = the trial's label or the
run directory's name; config = the trial's axes (as tags too, on wandb) plus task, adapter kind, r, lr and
seed. TensorBoard writes under `<run>/tracking/tensorboard/<run name>/`; wandb under `<run>/tracking/`
(set WANDB_MODE=offline to keep it on the machine). Only the main process logs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

#: `train.report_to` names -> the package each needs (checked before the run starts).
PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "trackio": "trackio",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
}


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def identity(spec: dict[str, Any], run_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """(project, run name, config) for the trackers (see the module docstring)."""
    run_dir = run_dir.resolve()
    project, name, axes = run_dir.parent.name or "oplora", run_dir.name, {}
    manifest = run_dir.parent.parent / "sweep.json"
    if run_dir.parent.name == "runs" and manifest.is_file():
        project = run_dir.parent.parent.name
        try:
            trials = json.loads(manifest.read_text()).get("trials", [])
            trial = next((t for t in trials if t.get("id") == run_dir.name), None)
        except (OSError, ValueError, AttributeError):
            trial = None
        if trial:
            name, axes = str(trial.get("label") or name), dict(trial.get("axes") or {})
    adapter, opt = spec.get("adapter", {}), spec.get("optimizer", {})
    config: dict[str, Any] = {
        "task": spec.get("task"),
        "adapter.kind": adapter.get("kind"),
        "adapter.r": adapter.get("r"),
        "optimizer.lr": opt.get("lr"),
        "seed": spec.get("seed"),
    }
    for k, v in axes.items():
        config[k] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return project, name, config


def check_available(names: list[str]) -> None:
    """InputError naming the tracker and the package to install when one is missing (before any work)."""
    import importlib.util

    from .runner import InputError

    for n in names:
        pkg = PACKAGES[n]
        if importlib.util.find_spec(pkg) is None:
            raise InputError(f"train.report_to: {n!r} needs the {pkg} package (pip install {pkg})")


class Tracking:
    """The run's trackers; every method is a no-op when `train.report_to` is empty."""

    def __init__(self, spec: dict[str, Any], run_dir: Path, device: Any = None) -> None:
        self.trackers: list[Any] = []
        names = list(spec.get("train", {}).get("report_to") or [])
        if not names or int(os.environ.get("RANK", "0")) != 0:
            return
        from accelerate.state import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        check_available(names)
        if (
            not PartialState._shared_state
        ):  # accelerate's trackers need its state (a task's Accelerator resets it)
            PartialState(cpu=getattr(device, "type", "cpu") == "cpu")
        project, name, config = identity(spec, run_dir)
        out = run_dir / "tracking"
        out.mkdir(parents=True, exist_ok=True)
        for n in names:
            cls = LOGGER_TYPE_TO_CLASS[n]
            if n == "tensorboard":
                tracker = cls(name, out / "tensorboard")
            elif n == "wandb":
                tags = [f"{k}={v}" for k, v in config.items() if v is not None]
                tracker = cls(project, name=name, dir=str(out), tags=tags[:64], reinit="finish_previous")
            else:
                tracker = (
                    cls(project)
                    if not getattr(cls, "requires_logging_directory", False)
                    else cls(project, out)
                )
            tracker.start()
            tracker.store_init_configuration({k: v for k, v in config.items() if v is not None})
            self.trackers.append(tracker)

    def log(self, values: dict[str, Any], step: int | None) -> None:
        values = {k: float(v) for k, v in values.items() if _scalar(v)}
        if values:
            for t in self.trackers:
                t.log(values, step=step)

    def event(self, event: str, fields: dict[str, Any], run_dir: Path) -> None:
        """Log what an event carries (see the module docstring)."""
        if not self.trackers:
            return
        step = fields.get("step")
        if event == "step":
            skip = {"step", "total_steps"}
            self.log({f"train/{k}": v for k, v in fields.items() if k not in skip}, step)
        elif event == "eval":
            self.log({f"eval/{k}": v for k, v in fields.get("metrics", {}).items()}, step)
        elif event == "artifact" and fields.get("kind") == "image":
            import numpy as np
            from PIL import Image

            image = np.asarray(Image.open(run_dir / fields["path"]).convert("RGB"))
            label = str(fields.get("label") or Path(fields["path"]).stem)[:60]
            for t in self.trackers:
                if t.name == "tensorboard":
                    t.log_images({f"images/{label}": image[None]}, step=step, dataformats="NHWC")
                elif hasattr(t, "log_images"):
                    t.log_images({f"images/{label}": [image]}, step=step)

    def finish(self, metrics: dict[str, Any] | None, step: int | None) -> None:
        if metrics:
            self.log({f"final/{k}": v for k, v in metrics.items()}, step)
        for t in self.trackers:
            t.finish()
        self.trackers = []
