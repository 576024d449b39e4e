"""run/search.py: the Optuna side of a sweep's search, driven directly (no SDK), on a SQLite file."""

from __future__ import annotations

import optuna
from oplora.run.search import Search
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
