"""PNG figures for sweep reports, drawn from a spec the SDK writes (sdk/report/figures.ts aggregates; this
module only draws, with matplotlib's Agg backend, so it needs no display).

    python -m oplora.figures.report_figures FIGURES.json OUT_DIR

FIGURES.json: {"figures": [{file, title, xlabel, ylabel, logx, logy, markers,
                            series: [{label, x, y, lo?, hi?}]}]}
Each series is a line (seed mean); `lo`/`hi` shade its spread (a band for curves, error bars with markers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .plots import floor_values, pyplot


def draw(fig_spec: dict[str, Any], out_dir: Path) -> Path:
    """Draw one figure spec into `out_dir / fig_spec["file"]`."""
    plt = pyplot()
    logy = bool(fig_spec.get("logy"))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, s in enumerate(fig_spec["series"]):
        color = f"C{i % 10}"
        x, y = s["x"], floor_values(s["y"], logy)
        if fig_spec.get("markers"):
            yerr = None
            if "lo" in s and "hi" in s:
                lo, hi = floor_values(s["lo"], logy), floor_values(s["hi"], logy)
                yerr = [
                    [max(a - b, 0.0) for a, b in zip(y, lo, strict=True)],
                    [max(b - a, 0.0) for a, b in zip(y, hi, strict=True)],
                ]
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                label=s["label"],
                color=color,
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.4,
            )
        else:
            ax.plot(x, y, label=s["label"], color=color, linewidth=1.4)
            if "lo" in s and "hi" in s:
                ax.fill_between(
                    x,
                    floor_values(s["lo"], logy),
                    floor_values(s["hi"], logy),
                    color=color,
                    alpha=0.18,
                    linewidth=0,
                )
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
