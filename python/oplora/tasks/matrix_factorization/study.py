"""The matrix-factorisation study: MF vs OP-MF across spectra, optimizers, learning rates, seeds.

    for spectrum × optimizer × lr in lr_grid[optimizer] × seed × arm (MF = lora, OP-MF = op-lora):
        matrix_factorization.fit(trial spec)                   the single task's own run, in-process
    per (spectrum, optimizer):
        best lr of each arm = lowest mean final relative excess over seeds (see `best_lr`)
        speed-up at each threshold = MF's steps to reach it / OP-MF's, each arm at its best lr
        final-excess ratio = OP-MF's mean final excess / MF's (and "% lower" = 100 · (1 - ratio))
        the same at every *shared* lr of the grid (learning-rate sensitivity)

Steps to a threshold are averaged over seeds only when every seed reached it; otherwise the arm "never"
reached it within the budget, and a speed-up against it is a bound (`>` or `<`), never a number pretending
to be exact. Writes table.md (rendered by `matrix_factorization_table`), study.json (every trial without curves + the aggregated table), curves.png
(mean relative excess over steps at the best lrs) and effective_rank.png.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ...run.rundir import read_json, write_bytes_atomic, write_json_atomic
from .table import markdown
from .task import base_weights as mf_base_weights
from .task import fit, threshold_key
from .task import lora_layer_shapes as mf_lora_layer_shapes

ARMS = {"MF": "lora", "OP-MF": "op-lora"}
PAPER = {
    "speedup": 6.2,
    "final_loss_lower_pct": 40.0,
    "source": "arXiv 2412.10362 (OP-MF vs MF on synthetic matrix factorisation)",
}
# Relative excesses below this count as equal: a converged float32 ΔW sits at ~±1e-10 (rounding makes it
# full rank, so it can even land a hair below the Eckart-Young optimum). Best-lr ties go to the fewer mean
# steps to the tightest threshold, then the smaller lr; final-excess ratios use floored values.
RELATIVE_FLOOR = 1e-8


def trial_spec(study: dict[str, Any], spectrum: str, optimizer: str, arm: str, lr: float, seed: int) -> dict:
    """The validated `matrix_factorization` spec of one trial."""
    from ...run.spec import validate_spec

    adapter: dict[str, Any] = {"kind": ARMS[arm], "r": study["r"]}
    if arm == "OP-MF":
        adapter["generator"] = study["generator"]
    return validate_spec(
        {
            "task": "matrix_factorization",
            "seed": seed,
            "device": study["device"],
            "matrix": {**study["matrix"], "spectrum": spectrum},
            "adapter": adapter,
            "optimizer": {"name": optimizer, "lr": lr},
            "train": {"steps": study["steps"], "log_every": study["log_every"]},
            "thresholds": study["thresholds"],
        }
    )


def plan_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """The run a study plans as: its largest trial, one OP-MF run (trials run one at a time)."""
    return {
        "matrix": spec["matrix"],
        "adapter": {"kind": "op-lora", "r": spec["r"], "generator": spec["generator"]},
    }


def plan_adapter(spec: dict[str, Any]) -> dict[str, Any]:
    """The adapter block the plan counts (the study has none of its own)."""
    return plan_trial(spec)["adapter"]


def lora_layer_shapes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """For the plan: the matrix-factorisation task's shapes for one trial."""
    return mf_lora_layer_shapes(plan_trial(spec))


def base_weights(spec: dict[str, Any]) -> tuple[int, int]:
    return mf_base_weights(plan_trial(spec))


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trial's metrics without the curves (for study.json)."""
    return {k: v for k, v in metrics.items() if k not in ("loss_curve", "effective_rank_curve")}


# --- aggregation --------------------------------------------------------------------------------------------


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else statistics.fmean(values)  # type: ignore[arg-type]


def cell(trials: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """One arm at one lr, over its seeds: mean final (relative) excess, mean steps to each threshold
    (None unless every seed reached it), how many seeds reached it, diverged seeds."""
    n = len(trials)
    steps = {k: [t["steps_to_excess"][k] for t in trials] for k in keys}
    return {
        "lr": trials[0]["lr"],
        "seeds": n,
        "diverged": sum(t["diverged"] for t in trials),
        "final_excess": _mean([t["excess_loss"] for t in trials]),
        "final_relative_excess": _mean([t["relative_excess"] for t in trials]),
        "final_effective_rank": _mean([t["final_effective_rank"] for t in trials]),
        "steps_to_excess": {k: _mean(v) for k, v in steps.items()},  # type: ignore[arg-type]
        "reached": {k: f"{sum(s is not None for s in v)}/{n}" for k, v in steps.items()},
    }


def _score(c: dict[str, Any], tightest: str) -> tuple[float, float, float]:
    rel = c["final_relative_excess"]
    rel = math.inf if rel is None or c["diverged"] else max(rel, RELATIVE_FLOOR)
    s = c["steps_to_excess"][tightest]
    return (rel, math.inf if s is None else s, c["lr"])


def best_lr(cells: list[dict[str, Any]], tightest: str) -> dict[str, Any] | None:
    """The cell with the lowest mean final relative excess (floored at RELATIVE_FLOOR; ties: fewer steps
    to the tightest threshold, then the smaller lr); None when every lr diverged."""
    ok = [c for c in cells if not c["diverged"] and c["final_relative_excess"] is not None]
    return min(ok, key=lambda c: _score(c, tightest)) if ok else None


def speedup(mf_steps: float | None, op_steps: float | None, budget: int) -> dict[str, Any]:
    """MF's steps / OP-MF's. An arm that never reached the level took more than `budget` steps, so the
    ratio is then a bound: "lower" (OP-MF at least this much faster), "upper" (at most), or none."""
    if mf_steps is not None and op_steps is not None:
        return {"ratio": mf_steps / max(op_steps, 1.0), "bound": "exact"}
    if op_steps is not None:
        return {"ratio": budget / max(op_steps, 1.0), "bound": "lower"}
    if mf_steps is not None:
        return {"ratio": mf_steps / budget, "bound": "upper"}
    return {"ratio": None, "bound": "neither"}


def compare(
    mf: dict[str, Any] | None, op: dict[str, Any] | None, keys: list[str], budget: int
) -> dict[str, Any]:
    """OP-MF against MF for two cells: speed-up per threshold, and the final-excess ratio: OP-MF's mean final
    relative excess / MF's, each floored at RELATIVE_FLOOR (`tie` when both are at the floor; None when
    either arm diverged on some seed)."""
    if mf is None or op is None:
        sp = {k: {"ratio": None, "bound": "neither"} for k in keys}
        return {"speedup": sp, "final_excess_ratio": None, "final_excess_lower_pct": None, "tie": False}
    sp = {k: speedup(mf["steps_to_excess"][k], op["steps_to_excess"][k], budget) for k in keys}
    a, b = mf["final_relative_excess"], op["final_relative_excess"]
    if a is None or b is None or mf["diverged"] or op["diverged"]:
        return {"speedup": sp, "final_excess_ratio": None, "final_excess_lower_pct": None, "tie": False}
    ratio = max(b, RELATIVE_FLOOR) / max(a, RELATIVE_FLOOR)
    return {
        "speedup": sp,
        "final_excess_ratio": ratio,
        "final_excess_lower_pct": 100.0 * (1.0 - ratio),
        "tie": a <= RELATIVE_FLOOR and b <= RELATIVE_FLOOR,
    }


def aggregate(trials: list[dict[str, Any]], study: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (spectrum, optimizer): each arm at its best lr, and both arms at every shared lr."""
    keys = [threshold_key(t) for t in study["thresholds"]]
    tightest = threshold_key(min(study["thresholds"]))
    budget = int(study["steps"])
    rows = []
    for spectrum in study["spectra"]:
        for optimizer in study["optimizers"]:
            cells: dict[str, list[dict[str, Any]]] = {}
            for arm in ARMS:
                cells[arm] = []
                for lr in study["lr_grid"][optimizer]:
                    group = [
                        t
                        for t in trials
                        if (t["spectrum"], t["optimizer"], t["arm"], t["lr"])
                        == (spectrum, optimizer, arm, float(lr))
                    ]
                    if group:
                        cells[arm].append(cell(group, keys))
            best = {arm: best_lr(cells[arm], tightest) for arm in ARMS}
            # the edge of the lrs this arm ran (a sweep may give each arm its own lrs)
            grids = {arm: sorted(c["lr"] for c in cells[arm]) for arm in ARMS}
            edge = {
                arm: best[arm] is not None
                and len(grids[arm]) > 1
                and best[arm]["lr"] in (grids[arm][0], grids[arm][-1])
                for arm in ARMS
            }
            op_at = {c["lr"]: c for c in cells["OP-MF"]}
            per_lr = [
                {"lr": mf_cell["lr"], "MF": mf_cell, "OP-MF": op_at[mf_cell["lr"]]}
                | compare(mf_cell, op_at[mf_cell["lr"]], keys, budget)
                for mf_cell in cells["MF"]
                if mf_cell["lr"] in op_at
            ]
            optimal_rank = next(t["optimal_effective_rank"] for t in trials if t["spectrum"] == spectrum)
            rows.append(
                {
                    "spectrum": spectrum,
                    "optimizer": optimizer,
                    "best_lr": {arm: None if best[arm] is None else best[arm]["lr"] for arm in ARMS},
                    "best": best,
                    "best_lr_at_grid_edge": edge,
                    **compare(best["MF"], best["OP-MF"], keys, budget),
                    "optimal_effective_rank": optimal_rank,
                    "lr_sensitivity": {arm: _sensitivity(cells[arm], keys) for arm in ARMS},
                    "per_lr": per_lr,
                }
            )
    return rows


def _sensitivity(cells: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """How many lrs of the grid reached each threshold on every seed, and the worst final relative excess."""
    worst = [c["final_relative_excess"] for c in cells]
    return {
        "lrs": len(cells),
        "lrs_reaching": {k: sum(c["steps_to_excess"][k] is not None for c in cells) for k in keys},
        "lrs_diverged": sum(c["diverged"] > 0 for c in cells),
        "worst_final_relative_excess": None if any(w is None for w in worst) else max(worst),  # type: ignore[type-var]
    }


def summary(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Across rows: geometric means of the exact speed-ups and of the final-excess ratios at the best lrs."""

    def gmean(xs: list[float]) -> float | None:
        xs = [x for x in xs if x is not None and x > 0]
        return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else None

    out: dict[str, Any] = {"rows": len(rows), "speedup_geomean": {}, "speedup_exact_rows": {}}
    for k in keys:
        exact = [r["speedup"][k]["ratio"] for r in rows if r["speedup"][k]["bound"] == "exact"]
        out["speedup_geomean"][k] = gmean(exact)
        out["speedup_exact_rows"][k] = len(exact)
    ratios = [r["final_excess_ratio"] for r in rows if r["final_excess_ratio"] is not None]
    out["final_excess_ratio_geomean"] = gmean(ratios)
    out["final_excess"] = _tally(rows)
    pairs = [c for r in rows for c in r["per_lr"]]
    tightest = keys[-1] if keys else None
    out["shared_lr"] = {
        "pairs": len(pairs),
        "mf_diverged": sum(c["MF"]["diverged"] > 0 for c in pairs),
        "op_mf_diverged": sum(c["OP-MF"]["diverged"] > 0 for c in pairs),
        "final_excess": _tally(pairs),
        "op_mf_faster": {k: sum(_faster(c["speedup"][k]) for c in pairs) for k in keys},
        "mf_faster": {k: sum(_faster(c["speedup"][k], op=False) for c in pairs) for k in keys},
        "tightest": tightest,
    }
    return out


def _tally(items: list[dict[str, Any]]) -> dict[str, int]:
    """How many comparisons have OP-MF's final excess lower, higher, tied at the floor, or not comparable."""
    out = {"op_mf_lower": 0, "op_mf_higher": 0, "tie": 0, "not_comparable": 0}
    for c in items:
        r = c["final_excess_ratio"]
        key = (
            "not_comparable"
            if r is None
            else "tie"
            if c["tie"]
            else "op_mf_lower"
            if r < 1
            else "op_mf_higher"
        )
        out[key] += 1
    return out


def _faster(s: dict[str, Any], op: bool = True) -> bool:
    """Whether OP-MF (op=True) or MF reached the level in fewer steps (bounds count: the other never did)."""
    if s["ratio"] is None:
        return False
    if s["bound"] == "lower":
        return op
    if s["bound"] == "upper":
        return not op
    return s["ratio"] > 1 if op else s["ratio"] < 1


def tabulate(trials: list[dict[str, Any]], study: dict[str, Any]) -> dict[str, Any]:
    """The study's result from its trials' metrics: the table rows, best lrs and the summary."""
    rows = aggregate(trials, study)
    return {
        "trials": len(trials),
        "table": rows,
        "best_lr": {f"{r['spectrum']}/{r['optimizer']}": r["best_lr"] for r in rows},
        "summary": summary(rows, [threshold_key(t) for t in study["thresholds"]]),
        "paper": PAPER,
        "relative_floor": RELATIVE_FLOOR,
    }


# --- a sweep's runs as a study (what `oplora report` tabulates for a matrix-factorisation sweep) -------------


class NotAStudy(ValueError):
    """The runs do not make up one MF vs OP-MF study (the message says why)."""


def study_of_runs(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The study that matrix-factorisation runs (spec, metrics) make up: their spectra, optimizers, lrs and
    seeds, with everything else shared. Raises NotAStudy naming what differs or is missing."""
    if not runs:
        raise NotAStudy("no succeeded matrix_factorization run")
    shared: dict[str, Any] = {}
    for spec, _ in runs:
        if spec.get("task") != "matrix_factorization":
            raise NotAStudy(f"a run of task {spec.get('task')!r}, not matrix_factorization")
        adapter = spec["adapter"]
        this = {
            "matrix": {k: v for k, v in spec["matrix"].items() if k != "spectrum"},
            "r": adapter["r"],
            "adapter": {k: v for k, v in adapter.items() if k not in ("kind", "generator")},
            "steps": spec["train"]["steps"],
            "thresholds": sorted(spec["thresholds"], reverse=True),
        }
        if adapter["kind"] == "op-lora":
            this["generator"] = adapter["generator"]
        for key, value in this.items():
            if shared.setdefault(key, value) != value:
                raise NotAStudy(f"the runs differ in {key} ({shared[key]!r} vs {value!r}), not only in lr")
    arms = {m["arm"] for _, m in runs}
    if arms != set(ARMS):
        raise NotAStudy(f"needs both arms (lora and op-lora); the runs have {sorted(arms)}")
    optimizers = sorted({m["optimizer"] for _, m in runs})
    return {
        **shared,
        "spectra": sorted({m["spectrum"] for _, m in runs}),
        "optimizers": optimizers,
        "lr_grid": {o: sorted({m["lr"] for _, m in runs if m["optimizer"] == o}) for o in optimizers},
        "seeds": sorted({s["seed"] for s, _ in runs}),
    }


def tabulate_runs(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """table.md and table.json in `out_dir` for the succeeded matrix-factorisation runs in `run_dirs` (each
    holding spec.json and result.json), the same table the study task writes; or table.json with `skipped`
    (why they make no study)."""
    runs = []
    for d in run_dirs:
        result = read_json(d / "result.json")
        if result.get("status") == "succeeded":
            runs.append((read_json(d / "spec.json"), result["metrics"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        study = study_of_runs(runs)
    except (KeyError, TypeError) as e:  # a run dir some other writer made
        out = {"skipped": f"a run's spec or metrics lack the matrix-factorisation field {e}"}
    except NotAStudy as e:
        out = {"skipped": str(e)}
    else:
        result = tabulate([summarize(m) for _, m in runs], study)
        write_bytes_atomic(out_dir / "table.md", markdown(result, study).encode())
        out = {"study": study, **result}
    write_json_atomic(out_dir / "table.json", out)
    return out


# --- the task -----------------------------------------------------------------------------------------------


def trial_grid(study: dict[str, Any]) -> list[tuple[str, str, float, int, str]]:
    """(spectrum, optimizer, lr, seed, arm) for every trial, MF and OP-MF of one setting side by side."""
    return [
        (spectrum, optimizer, float(lr), seed, arm)
        for spectrum in study["spectra"]
        for optimizer in study["optimizers"]
        for lr in study["lr_grid"][optimizer]
        for seed in study["seeds"]
        for arm in ARMS
    ]


def mean_curves(
    rows: list[dict[str, Any]], curves: dict[tuple[str, str, str, float], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per row and arm, at the arm's best lr: the seed-mean relative excess and effective rank per logged step."""
    out = []
    for row in rows:
        for arm, lr in row["best_lr"].items():
            runs = curves.get((row["spectrum"], row["optimizer"], arm, lr)) if lr is not None else None
            if not runs:
                continue
            first = runs[0]
            n = min(len(m["loss_curve"]) for m in runs)
            rel = [[_relative(m, m["loss_curve"][i]["loss"]) for m in runs] for i in range(n)]
            ranks = [[m["effective_rank_curve"][i]["effective_rank"] for m in runs] for i in range(n)]
            out.append(
                {
                    "spectrum": row["spectrum"],
                    "optimizer": row["optimizer"],
                    "arm": arm,
                    "lr": lr,
                    "step": [first["loss_curve"][i]["step"] for i in range(n)],
                    "relative_excess": [_mean(v) for v in rel],
                    "effective_rank": [_mean(v) for v in ranks],
                    "optimal_effective_rank": row["optimal_effective_rank"],
                }
            )
    return out


def _relative(m: dict[str, Any], loss: float | None) -> float | None:
    """A logged loss of run `m` as a relative excess (each seed has its own target and optimum)."""
    return None if loss is None else (loss - m["optimal_loss"]) / (m["initial_loss"] - m["optimal_loss"])


def run(spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Run every trial in-process, emit a `step` event after each, then write the table, JSON and plots."""
    from ...figures import plots

    t0 = time.perf_counter()
    grid = trial_grid(spec)
    trials: list[dict[str, Any]] = []
    curves: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    for i, (spectrum, optimizer, lr, seed, arm) in enumerate(grid):
        metrics = fit(trial_spec(spec, spectrum, optimizer, arm, lr, seed), ctx.device).metrics
        trials.append(summarize(metrics))
        curves.setdefault((spectrum, optimizer, arm, lr), []).append(metrics)
        label = f"{spectrum} {optimizer} {arm} lr={lr:g} seed={seed}"
        loss = metrics["final_loss"] if metrics["final_loss"] is not None else math.nan
        ctx.step(i + 1, len(grid), loss, label=label, relative_excess=metrics["relative_excess"])

    result = {
        **tabulate(trials, spec),
        "wall_s": time.perf_counter() - t0,
        "trial_wall_s_mean": statistics.fmean(t["wall_s"] for t in trials),
    }
    table = ctx.path("table.md")
    write_bytes_atomic(table, markdown(result, spec).encode())
    ctx.artifact("table", table, label="MF vs OP-MF")
    study_json = ctx.path("study.json")
    write_json_atomic(study_json, {"spec": spec, **result, "trial_results": trials})
    ctx.artifact("file", study_json, label="all trials and the aggregated table")
    means = mean_curves(result["table"], curves)
    for path, label in plots.study_curves(
        means,
        spec["spectra"],
        spec["optimizers"],
        spec["thresholds"],
        ctx.path("curves.png"),
        ctx.path("effective_rank.png"),
    ):
        ctx.artifact("plot", path, label=label)
    return result


if __name__ == "__main__":
    # python -m oplora.tasks.matrix_factorization.study OUT_DIR RUN_DIR...  (the SDK's report calls this)
    out = tabulate_runs([Path(a) for a in sys.argv[2:]], Path(sys.argv[1]))
    print(out.get("skipped", "table.md written"))
