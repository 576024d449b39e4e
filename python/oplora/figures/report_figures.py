"""PNG figures for sweep reports, drawn from a spec the SDK writes (sdk/report/figures.ts aggregates; this
module only draws, with matplotlib's Agg backend, so it needs no display).

    python -m oplora.figures.report_figures FIGURES.json OUT_DIR

FIGURES.json: {"figures": [{file, title, xlabel, ylabel, logx, logy, markers,
                            series: [{label, x, y, lo?, hi?, style?}]}]}
Each series is a line (seed mean); `lo`/`hi` shade its spread (a band for curves, error bars with markers).
`style` "points" draws a scatter, "steps" a step line (best so far), "rug" crosses along the x axis (x only:
trials with no y, e.g. pruned ones); `color` picks the colour index (default: the series index). The file's suffix picks the format (.png, .svg).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .plots import floor_values, pyplot


def _series(ax: Any, s: dict[str, Any], color: str, logy: bool, markers: bool) -> None:
    """Draw one series on `ax` in its style."""
    x, y = s["x"], floor_values(s["y"], logy)
    style = s.get("style")
    if style == "rug":
        ax.plot(
            x,
            [0.02] * len(x),
            transform=ax.get_xaxis_transform(),
            linestyle="none",
            marker="x",
            markersize=7,
            color=color,
            label=s["label"],
        )
    elif style == "points":
        ax.scatter(x, y, label=s["label"], color=color, s=18)
    elif style == "steps":
        ax.step(x, y, where="post", label=s["label"], color=color, linewidth=1.2)
    elif markers:
        yerr = None
        if "lo" in s and "hi" in s:
            lo, hi = floor_values(s["lo"], logy), floor_values(s["hi"], logy)
            yerr = [
                [max(a - b, 0.0) for a, b in zip(y, lo, strict=True)],
                [max(b - a, 0.0) for a, b in zip(y, hi, strict=True)],
            ]
        ax.errorbar(
            x, y, yerr=yerr, label=s["label"], color=color, marker="o", markersize=4, capsize=3, linewidth=1.4
        )
    else:
        ax.plot(x, y, label=s["label"], color=color, linewidth=1.4)
        if "lo" in s and "hi" in s:
            lo, hi = floor_values(s["lo"], logy), floor_values(s["hi"], logy)
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)


def draw(fig_spec: dict[str, Any], out_dir: Path) -> Path:
    """Draw one figure spec into `out_dir / fig_spec["file"]`."""
    plt = pyplot()
    logy = bool(fig_spec.get("logy"))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, s in enumerate(fig_spec["series"]):
        color = f"C{int(s.get('color', i)) % 10}"
        _series(ax, s, color, logy, bool(fig_spec.get("markers")))
    if logy:
        ax.set_yscale("log")
    if fig_spec.get("logx"):
        ax.set_xscale("log")
    ax.set_title(fig_spec["title"], fontsize=9)
    ax.set_xlabel(fig_spec["xlabel"], fontsize=8)
    ax.set_ylabel(fig_spec["ylabel"], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if fig_spec["series"]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / fig_spec["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m oplora.figures.report_figures FIGURES.json OUT_DIR", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    out = Path(args[1])
    for f in spec["figures"]:
        draw(f, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
