"""PNG plots of training curves (matplotlib, Agg backend, imported only when a plot is drawn).

run_curves(metrics, path)              one MF run: relative excess (log y) and ΔW's effective rank
panel_grid(panels, ncols, path)        a grid of subplots, each with labelled series (the study's)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# a floor for log-scale plots: an excess at float precision can be 0 or slightly negative
LOG_FLOOR = 1e-9
ARM_STYLE = {"MF": {"color": "tab:blue"}, "OP-MF": {"color": "tab:orange"}}


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def floor_values(values: list[float | None], logy: bool) -> list[float]:
    """`values` as floats (None -> NaN), floored at LOG_FLOOR on a log axis so zeros stay drawable."""
    out = [float("nan") if v is None else float(v) for v in values]
    return [max(v, LOG_FLOOR) if logy and v == v else v for v in out]


def panel_grid(
    panels: list[dict[str, Any]],
    ncols: int,
    path: Path,
    hlines: list[float] | None = None,
    title: str | None = None,
) -> Path:
    """Draw `panels` ([{title, ylabel?, logy?, series: [{label, x, y, style?}]}]) in a grid of `ncols`
    columns into `path`. `hlines` are dotted reference levels drawn on log-scale panels (e.g. the
    relative-excess thresholds); a series point of None is a gap."""
    plt = pyplot()
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        logy = bool(panel.get("logy"))
        for s in panel["series"]:
            ax.plot(s["x"], floor_values(s["y"], logy), label=s["label"], linewidth=1.4, **s.get("style", {}))
        if logy:
            ax.set_yscale("log")
            for h in hlines or []:
                ax.axhline(h, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(panel.get("ylabel", ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_curves(metrics: dict[str, Any], path: Path, thresholds: list[float] | None = None) -> Path:
    """One matrix-factorisation run (metrics of `tasks.matrix_factorization.task.fit`): relative excess (log y)
    and effective rank of ΔW over steps, with the SVD truncation's effective rank for reference."""
    init_excess = metrics["initial_loss"] - metrics["optimal_loss"]
    x = [p["step"] for p in metrics["loss_curve"]]
    rel = [
        None if p["loss"] is None else (p["loss"] - metrics["optimal_loss"]) / init_excess
        for p in metrics["loss_curve"]
    ]
    ranks = [p["effective_rank"] for p in metrics["effective_rank_curve"]]
    style = ARM_STYLE.get(metrics["arm"], {})
    label = f"{metrics['arm']} {metrics['optimizer']} lr={metrics['lr']:g}"
    optimum = [metrics["optimal_effective_rank"]] * len(x)
    svd_style = {"color": "grey", "linestyle": "--"}
    panels = [
        {
            "title": f"relative excess loss ({metrics['spectrum']} spectrum)",
            "logy": True,
            "series": [{"label": label, "x": x, "y": rel, "style": style}],
        },
        {
            "title": "effective rank of ΔW",
            "series": [
                {"label": label, "x": x, "y": ranks, "style": style},
                {"label": "SVD truncation", "x": x, "y": optimum, "style": svd_style},
            ],
        },
    ]
    return panel_grid(panels, 2, path, hlines=thresholds)


def study_curves(
    means: list[dict[str, Any]],
    spectra: list[str],
    optimizers: list[str],
    thresholds: list[float],
    excess_path: Path,
    rank_path: Path,
) -> list[tuple[Path, str]]:
    """The study's figures, one subplot per spectrum x optimizer (rows x columns), MF vs OP-MF at each arm's
    best lr: seed-mean relative excess (log y) in `excess_path`, effective rank of ΔW in `rank_path`.
    `means`: [{spectrum, optimizer, arm, lr, step, relative_excess, effective_rank, optimal_effective_rank}]."""
    out = []
    for path, key, logy, label in (
        (excess_path, "relative_excess", True, "relative excess loss"),
        (rank_path, "effective_rank", False, "effective rank of ΔW"),
    ):
        panels = []
        for spectrum in spectra:
            for optimizer in optimizers:
                series = [
                    {
                        "label": f"{c['arm']} lr={c['lr']:g}",
                        "x": c["step"],
                        "y": c[key],
                        "style": ARM_STYLE.get(c["arm"], {}),
                    }
                    for c in means
                    if (c["spectrum"], c["optimizer"]) == (spectrum, optimizer)
                ]
                if not logy and series:
                    c = next(c for c in means if (c["spectrum"], c["optimizer"]) == (spectrum, optimizer))
                    flat = [c["optimal_effective_rank"]] * len(c["step"])
                    series.append(
                        {
                            "label": "SVD truncation",
                            "x": c["step"],
                            "y": flat,
                            "style": {"color": "grey", "linestyle": "--"},
                        }
                    )
                panels.append(
                    {"title": f"{spectrum} / {optimizer}", "ylabel": label, "logy": logy, "series": series}
                )
        title = f"MF vs OP-MF at each arm's best lr (mean over seeds): {label}"
        out.append((panel_grid(panels, len(optimizers), path, hlines=thresholds, title=title), label))
    return out
