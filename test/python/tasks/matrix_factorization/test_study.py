"""The MF study: trial grid, best-lr choice, speed-ups and bounds, the table, and the task end to end."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
from oplora.run.runner import run_spec
from oplora.run.spec import validate_spec
from oplora.tasks.matrix_factorization import study

KEYS = ["1e-2", "1e-3"]


def trial(arm, lr, seed, excess, steps, diverged=False):
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "spectrum": "geometric",
        "optimizer": "adam",
        "diverged": diverged,
        "excess_loss": None if diverged else excess,
        "relative_excess": None if diverged else excess,
        "final_effective_rank": 2.0,
        "optimal_effective_rank": 2.5,
        "wall_s": 0.1,
        "steps_to_excess": dict(zip(KEYS, steps, strict=True)),
    }


def test_cell_averages_over_seeds_and_says_never_unless_every_seed_reached():
    c = study.cell([trial("MF", 0.1, 0, 1e-3, [10, None]), trial("MF", 0.1, 1, 3e-3, [20, 40])], KEYS)
    assert c["final_excess"] == pytest.approx(2e-3)
    assert c["steps_to_excess"] == {"1e-2": 15, "1e-3": None}
    assert c["reached"] == {"1e-2": "2/2", "1e-3": "1/2"}


def test_best_lr_lowest_excess_skips_diverged_and_breaks_floor_ties_by_steps():
    cells = [
        study.cell([trial("MF", 1.0, 0, None, [None, None], diverged=True)], KEYS),
        study.cell([trial("MF", 0.1, 0, 1e-4, [30, 60])], KEYS),
        study.cell([trial("MF", 0.01, 0, 1e-2, [90, None])], KEYS),
    ]
    assert study.best_lr(cells, "1e-3")["lr"] == 0.1
    tied = [
        study.cell([trial("MF", 0.1, 0, 1e-12, [30, 60])], KEYS),
        study.cell([trial("MF", 0.3, 0, 1e-11, [10, 20])], KEYS),  # both below the floor: fewer steps wins
    ]
    assert study.best_lr(tied, "1e-3")["lr"] == 0.3
    assert study.best_lr(cells[:1], "1e-3") is None


def test_speedup_is_a_bound_when_an_arm_never_got_there():
    assert study.speedup(100, 25, 500) == {"ratio": 4.0, "bound": "exact"}
    assert study.speedup(None, 25, 500) == {"ratio": 20.0, "bound": "lower"}
    assert study.speedup(100, None, 500) == {"ratio": 0.2, "bound": "upper"}
    assert study.speedup(None, None, 500) == {"ratio": None, "bound": "neither"}


def test_final_excess_ratio_is_floored_and_a_divergence_is_not_compared():
    def c(excess, diverged=False):
        return study.cell([trial("MF", 0.1, 0, excess, [10, 20], diverged=diverged)], KEYS)

    lower = study.compare(c(1e-4), c(2.5e-5), KEYS, 100)
    assert lower["final_excess_ratio"] == pytest.approx(0.25) and lower[
        "final_excess_lower_pct"
    ] == pytest.approx(75)
    assert not lower["tie"]
    floor = study.RELATIVE_FLOOR
    assert study.compare(c(1e-4), c(-1e-11), KEYS, 100)["final_excess_ratio"] == pytest.approx(floor / 1e-4)
    tie = study.compare(c(3e-10), c(-1e-11), KEYS, 100)
    assert tie["tie"] and tie["final_excess_ratio"] == 1.0
    assert study.compare(c(1e-4), c(None, diverged=True), KEYS, 100)["final_excess_ratio"] is None


def tiny_study(**extra):
    return validate_spec(
        {
            "task": "matrix_factorization_study",
            "device": "cpu",
            "seeds": [0, 1],
            "matrix": {"rows": 8, "cols": 6},
            "spectra": ["geometric"],
            "r": 2,
            "generator": {"embedding_dim": 8, "hidden_dim": 4},
            "optimizers": ["adam"],
            "lr_grid": {"adam": [1e-2, 3e-2]},
            "steps": 40,
            "log_every": 10,
            "thresholds": [1e-2, 1e-3],
            **extra,
        }
    )


def test_trial_grid_covers_every_setting_with_arms_side_by_side():
    s = tiny_study(optimizers=["adam", "sgd"], lr_grid={"adam": [1e-2], "sgd": [1.0, 3.0]})
    grid = study.trial_grid(s)
    assert len(grid) == 1 * (1 + 2) * 2 * 2
    assert [g[4] for g in grid[:2]] == ["MF", "OP-MF"] and grid[0][:4] == grid[1][:4]
    spec = study.trial_spec(s, "geometric", "sgd", "OP-MF", 3.0, 1)
    assert spec["adapter"]["kind"] == "op-lora" and spec["adapter"]["generator"]["hidden_dim"] == 4
    assert spec["optimizer"] == {"name": "sgd", "lr": 3.0, "momentum": 0.9, "weight_decay": 0}
    assert spec["seed"] == 1 and spec["matrix"]["spectrum"] == "geometric" and spec["train"]["steps"] == 40


def test_the_study_end_to_end(tmp_path):
    raw = tiny_study()
    result, code = run_spec(raw, tmp_path / "run")
    assert code == 0, result and result["error"]
    run = tmp_path / "run"
    saved = json.loads((run / "result.json").read_text())
    m = saved["metrics"]
    assert saved["status"] == "succeeded" and m["trials"] == 8
    assert {a["path"] for a in saved["artifacts"]} == {
        "table.md",
        "study.json",
        "curves.png",
        "effective_rank.png",
    }
    steps = [json.loads(x) for x in (run / "events.ndjson").read_text().splitlines()]
    steps = [e for e in steps if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 9)) and all(e["total_steps"] == 8 for e in steps)
    assert "OP-MF lr=0.01 seed=0" in steps[1]["label"]

    (row,) = m["table"]
    for key in (
        "spectrum",
        "optimizer",
        "best_lr",
        "best",
        "speedup",
        "final_excess_ratio",
        "final_excess_lower_pct",
        "per_lr",
        "lr_sensitivity",
        "optimal_effective_rank",
    ):
        assert key in row
    assert set(row["speedup"]) == {"1e-2", "1e-3"} and len(row["per_lr"]) == 2
    assert m["best_lr"] == {"geometric/adam": row["best_lr"]}
    assert m["paper"]["speedup"] == 6.2

    # the best lr is the one with the lowest mean final relative excess over the seeds (floored, see module)
    trials = json.loads((run / "study.json").read_text())["trial_results"]
    assert len(trials) == 8 and "loss_curve" not in trials[0]
    for arm in ("MF", "OP-MF"):
        by_lr = {
            lr: statistics.fmean(t["relative_excess"] for t in trials if t["arm"] == arm and t["lr"] == lr)
            for lr in (1e-2, 3e-2)
        }
        floored = {lr: max(x, study.RELATIVE_FLOOR) for lr, x in by_lr.items()}
        best = min(floored.values())
        assert floored[row["best_lr"][arm]] == best
        assert row["best"][arm]["final_relative_excess"] == pytest.approx(by_lr[row["best_lr"][arm]])
    mf, op = row["best"]["MF"], row["best"]["OP-MF"]
    floor = study.RELATIVE_FLOOR
    ratio = max(op["final_relative_excess"], floor) / max(mf["final_relative_excess"], floor)
    assert row["final_excess_ratio"] == pytest.approx(ratio)
    assert row["final_excess_lower_pct"] == pytest.approx(100 * (1 - ratio))
    assert sum(m["summary"]["shared_lr"]["final_excess"].values()) == 2

    table = (run / "table.md").read_text()
    assert "| geometric | adam |" in table and "6.2x faster" in table


def test_plan_hooks_describe_one_trial():
    s = tiny_study()
    assert study.lora_layer_shapes(s) == [("linear", (2, 6), (8, 2))]
    assert study.base_weights(s) == (48, 48 * 4)


def test_a_sweeps_runs_tabulate_to_the_study_tasks_own_table(tmp_path):
    """One owner of the aggregation: the same trials run one by one (as a sweep runs them) give the table the
    study task computes in-process, and `oplora report` reads it from `tabulate_runs`."""
    raw = tiny_study()
    result, code = run_spec(raw, tmp_path / "study")
    assert code == 0, result and result["error"]
    s = validate_spec(raw)
    dirs = []
    for i, (spectrum, optimizer, lr, seed, arm) in enumerate(study.trial_grid(s)):
        dirs.append(tmp_path / "runs" / str(i))
        _, code = run_spec(study.trial_spec(s, spectrum, optimizer, arm, lr, seed), dirs[-1])
        assert code == 0
    out = study.tabulate_runs(dirs, tmp_path / "table")
    assert "skipped" not in out
    assert out["table"] == result["metrics"]["table"] and out["summary"] == result["metrics"]["summary"]
    assert out["study"]["lr_grid"] == {"adam": [1e-2, 3e-2]} and out["study"]["seeds"] == [0, 1]
    table = (tmp_path / "table" / "table.md").read_text()
    assert table == (tmp_path / "study" / "table.md").read_text()
    assert json.loads((tmp_path / "table" / "table.json").read_text())["table"] == out["table"]

    # runs that are not one study: say why, write no table
    other = tmp_path / "runs" / "r4"
    spec = study.trial_spec(s, "geometric", "adam", "MF", 1e-2, 0)
    spec["adapter"]["r"] = 4
    _, code = run_spec(spec, other)
    assert code == 0
    out = study.tabulate_runs([*dirs, other], tmp_path / "mixed")
    assert "differ in r" in out["skipped"] and not (tmp_path / "mixed" / "table.md").exists()
    mf_only = [d for d in dirs if json.loads((d / "spec.json").read_text())["adapter"]["kind"] == "lora"]
    assert "needs both arms" in study.tabulate_runs(mf_only, tmp_path / "mf")["skipped"]
    broken = tmp_path / "runs" / "broken"
    shutil.copytree(dirs[0], broken)
    (broken / "result.json").write_text('{"status": "succ')  # truncated
    with pytest.raises(ValueError, match=r"broken/result.json: not JSON"):
        study.tabulate_runs([*dirs, broken], tmp_path / "broken-table")


def test_each_arm_with_its_own_lrs_is_compared_only_at_lrs_both_ran():
    trials = [
        trial("MF", 1.0, 0, 1e-4, [10, 20]),
        trial("OP-MF", 0.03, 0, 1e-5, [5, 10]),
        trial("MF", 0.1, 0, 1e-3, [30, None]),
        trial("OP-MF", 0.1, 0, 1e-2, [50, None]),
    ]
    s = {"thresholds": [1e-2, 1e-3], "steps": 100, "spectra": ["geometric"], "optimizers": ["adam"]}
    (row,) = study.aggregate(trials, {**s, "lr_grid": {"adam": [0.03, 0.1, 1.0]}})
    assert row["best_lr"] == {"MF": 1.0, "OP-MF": 0.03}
    assert [c["lr"] for c in row["per_lr"]] == [0.1]
    assert row["best_lr_at_grid_edge"] == {"MF": True, "OP-MF": True}
