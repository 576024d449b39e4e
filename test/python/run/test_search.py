"""run/search.py: the Optuna side of a sweep's search, driven directly (no SDK), on a SQLite file."""

from __future__ import annotations

import optuna
import pytest
from oplora.run.search import Search, _pruner
from optuna.trial import TrialState

SPACE = {"optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True}}


def _open(search: Search, db: str, **kw: object) -> dict:
    req = {"study": "arm", "storage": db, "sampler": "random", "pruner": "median", "direction": "minimize"}
    return search.open({**req, "space": SPACE, "startup_trials": 1, "max_steps": 10, "seed": 0, **kw})


def test_ask_report_tell_prunes_a_worse_curve_and_stores_the_study(tmp_path):
    db = str(tmp_path / "search.db")
    s = Search()
    assert _open(s, db) == {"done": 0, "requeued": 0}
    good = s.ask({"study": "arm"})
    assert 1e-3 <= good["params"]["optimizer.lr"] <= 1.0
    for step in range(1, 11):
        assert s.report({"study": "arm", "number": good["number"], "step": step, "value": 1.0 / step}) == {
            "prune": False
        }
    s.tell(
        {"study": "arm", "number": good["number"], "state": "complete", "value": 0.1, "attrs": {"steps": 10}}
    )
    bad = s.ask({"study": "arm"})
    verdicts = [
        s.report({"study": "arm", "number": bad["number"], "step": step, "value": 5.0})["prune"]
        for step in (1, 2)
    ]
    assert verdicts == [True, True]  # worse than the median of the finished trial at the same step
    assert s.tell({"study": "arm", "number": bad["number"], "state": "pruned", "attrs": {"steps": 1}}) == {
        "done": 2
    }
    study = optuna.load_study(study_name="arm", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.best_trial.number == good["number"] and study.best_value == 0.1


def test_reopen_requeues_interrupted_trials_and_does_not_count_them(tmp_path):
    db = str(tmp_path / "search.db")
    first = Search()
    _open(first, db)
    done = first.ask({"study": "arm"})
    first.tell({"study": "arm", "number": done["number"], "state": "complete", "value": 0.5, "attrs": {}})
    lost = first.ask({"study": "arm"})  # never told: the process "dies" here
    second = Search()
    assert _open(second, db) == {"done": 1, "requeued": 1}
    again = second.ask({"study": "arm"})
    assert again["params"] == lost["params"]  # the interrupted params come first
    rows = second.trials({"study": "arm"})["trials"]
    assert [r["state"] for r in rows] == ["complete", "fail", "running"]
    assert rows[2]["attrs"]["requeued_from"] == lost["number"]


def test_grid_sampler_tells_the_last_grid_point(tmp_path):
    """GridSampler stops the study once its grid is used up: that must not fail the last tell."""
    db = str(tmp_path / "search.db")
    s = Search()
    _open(
        s, db, sampler="grid", space={"optimizer.lr": {"low": 1e-3, "high": 1e-1, "log": True, "points": 3}}
    )
    for value in (0.3, 0.2, 0.1):
        t = s.ask({"study": "arm"})
        s.tell({"study": "arm", "number": t["number"], "state": "complete", "value": value, "attrs": {}})
    study = optuna.load_study(study_name="arm", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["optimizer.lr"] for t in study.trials) == pytest.approx([1e-3, 1e-2, 1e-1])


def test_median_pruner_waits_out_the_warmup_then_prunes(tmp_path):
    """Before `warmup_steps` a far worse value is not pruned; from that step on it is."""
    s = Search()
    _open(s, str(tmp_path / "search.db"), warmup_steps=4)
    good = s.ask({"study": "arm"})
    for step in range(1, 10):
        s.report({"study": "arm", "number": good["number"], "step": step, "value": 0.1})
    s.tell({"study": "arm", "number": good["number"], "state": "complete", "value": 0.1, "attrs": {}})
    bad = s.ask({"study": "arm"})
    verdicts = [
        s.report({"study": "arm", "number": bad["number"], "step": step, "value": 100.0})["prune"]
        for step in range(1, 6)
    ]
    assert verdicts == [False, False, False, True, True]


@pytest.mark.parametrize(("warmup", "min_resource"), [(0, 1), (1, 1), (7, 7)])
def test_pruner_takes_the_warmup(warmup, min_resource):
    median = _pruner("median", 2, 20, warmup)
    assert isinstance(median, optuna.pruners.MedianPruner) and median._n_warmup_steps == warmup
    hyperband = _pruner("hyperband", 2, 20, warmup)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._min_resource == min_resource


def test_a_study_opened_without_warmup_steps_reopens_with_them(tmp_path):
    """An SDK from before `warmupSteps` sent no warmup_steps: its study reopens, trials kept."""
    db = str(tmp_path / "search.db")
    old = Search()
    _open(old, db)  # no warmup_steps in the request
    t = old.ask({"study": "arm"})
    old.tell({"study": "arm", "number": t["number"], "state": "complete", "value": 0.5, "attrs": {}})
    assert _open(Search(), db, warmup_steps=5) == {"done": 1, "requeued": 0}
