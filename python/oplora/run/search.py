"""`python -m oplora search`: one long-lived Optuna process that a sweep's search drives (sdk/sweep/search.ts).

    SDK ──stdin──► {"id": 1, "cmd": "open", "study": "...", "storage": "/sweep/search.db", "sampler": "tpe",
                    "pruner": "median", "direction": "minimize", "space": {...}, "startup_trials": 5,
                    "max_steps": 60, "warmup_steps": 15, "seed": 0}
                   {"id": 2, "cmd": "ask", "study": "..."}                    -> {"number", "params"}
                   {"id": 3, "cmd": "report", "study", "number", "step", "value"} -> {"prune": bool}
                     (value: the mean loss of the last 10 steps, search.ts `tailLoss`)
                   {"id": 4, "cmd": "tell", "study", "number", "state", "value", "attrs"}
                   {"id": 5, "cmd": "trials", "study"}                       -> {"trials": [...]}
    SDK ◄──fd 3──  {"search": "ready"} once, then {"reply": id, ...} or {"reply": id, "error": "..."}

The study lives in Optuna's own RDB storage (a SQLite file), so a killed search resumes: `open` marks the
trials an earlier process left RUNNING as FAIL (attr `interrupted`) and enqueues their params again, so they
are asked first. `done` counts COMPLETE + PRUNED + FAIL-with-`error` trials (an interrupted one is not done).
The pruner is not stored: each `open` builds it from the request, so a study created before `warmup_steps`
existed (absent: 0) reopens and prunes with the warm-up from then on.
Standard input reaching EOF ends the process.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import optuna
from optuna.trial import TrialState

STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}


def _sampler(name: str, space: dict[str, Any], startup: int, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({p: _grid_values(d) for p, d in space.items()}, seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def _grid_values(d: dict[str, Any]) -> list[Any]:
    if "choices" in d:
        return list(d["choices"])
    n, low, high = int(d.get("points", 5)), float(d["low"]), float(d["high"])
    if d.get("log"):
        values = [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (n - 1)) for i in range(n)]
    else:
        values = [low + (high - low) * i / (n - 1) for i in range(n)]
    return sorted({round(v) for v in values}) if d.get("int") else values


def _pruner(name: str, startup: int, max_steps: int, warmup: int = 0) -> optuna.pruners.BasePruner:
    """The study's pruner; none prunes a trial before step `warmup` (the search block's `warmupSteps`).

    median: prune at step s >= warmup when the trial's best value so far is worse than the median of the
    complete trials' values at s (once `startup` trials are complete). hyperband: the first rung ends at
    min_resource = max(1, warmup) steps, so that is also its earliest prune.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, warmup), max_resource=max_steps, reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")


def _suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path, d in space.items():
        if "choices" in d:
            params[path] = trial.suggest_categorical(path, d["choices"])
        elif d.get("int"):
            params[path] = trial.suggest_int(path, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
        else:
            params[path] = trial.suggest_float(
                path, float(d["low"]), float(d["high"]), log=bool(d.get("log"))
            )
    return params


def _row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "params": t.params,
        "value": t.value,
        "attrs": t.user_attrs,
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
    }


def _done(study: optuna.Study) -> int:
    trials = study.get_trials(deepcopy=False)
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and "error" in t.user_attrs)
        for t in trials
    )


class Search:
    """The open studies of one sweep and the trials this process asked."""

    def __init__(self) -> None:
        self.studies: dict[str, tuple[optuna.Study, dict[str, Any]]] = {}
        self.asked: dict[tuple[str, int], optuna.Trial] = {}

    def open(self, req: dict[str, Any]) -> dict[str, Any]:
        space, startup = req["space"], int(req.get("startup_trials", 5))
        study = optuna.create_study(
            study_name=req["study"],
            storage=f"sqlite:///{req['storage']}",
            sampler=_sampler(req["sampler"], space, startup, req.get("seed")),
            pruner=_pruner(req["pruner"], startup, int(req["max_steps"]), int(req.get("warmup_steps", 0))),
            direction=req["direction"],
            load_if_exists=True,
        )
        requeued = 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            requeued += 1
        self.studies[req["study"]] = (study, space)
        return {"done": _done(study), "requeued": requeued}

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        study, space = self.studies[req["study"]]
        trial = study.ask()
        params = _suggest(trial, space)
        self.asked[(req["study"], trial.number)] = trial
        return {"number": trial.number, "params": params}

    def report(self, req: dict[str, Any]) -> dict[str, Any]:
        trial = self.asked[(req["study"], int(req["number"]))]
        trial.report(float(req["value"]), int(req["step"]))
        return {"prune": bool(trial.should_prune())}

    def tell(self, req: dict[str, Any]) -> dict[str, Any]:
        study, _ = self.studies[req["study"]]
        trial = self.asked.pop((req["study"], int(req["number"])))
        for k, v in (req.get("attrs") or {}).items():
            trial.set_user_attr(k, v)
        state = STATES[req["state"]]
        try:
            study.tell(trial, req.get("value") if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as e:
            # GridSampler.after_trial calls study.stop() once its grid is used up, which only works inside
            # optimize(); Optuna stores the trial's state before that (a `finally`), so the tell stands
            if "Study.stop" not in str(e):
                raise
        return {"done": _done(study)}

    def trials(self, req: dict[str, Any]) -> dict[str, Any]:
        study, _ = self.studies[req["study"]]
        return {"trials": [_row(t) for t in study.get_trials(deepcopy=False)]}


def serve() -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fd = int(os.environ.get("OPLORA_SEARCH_FD", "3"))
    out = os.fdopen(fd, "w", buffering=1)
    search = Search()
    out.write(json.dumps({"search": "ready", "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            if req.get("cmd") not in COMMANDS:
                raise ValueError(f"unknown command {req.get('cmd')!r}")
            reply = getattr(search, req["cmd"])(req)
            out.write(json.dumps({"reply": req.get("id"), **reply}) + "\n")
        except Exception as e:  # noqa: BLE001 - every failure is the SDK's to report
            out.write(json.dumps({"reply": req.get("id"), "error": f"{type(e).__name__}: {e}"}) + "\n")
    return 0


COMMANDS = ("open", "ask", "report", "tell", "trials")
