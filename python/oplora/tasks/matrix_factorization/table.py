"""table.md of the matrix-factorisation study: the study's result (`matrix_factorization_study.run`) as markdown.

    ## Each arm at its best learning rate     one row per (spectrum, optimizer): steps to each level, speed-up,
                                              final relative excess, effective rank
    ## Both arms at each shared learning rate  one row per (spectrum, optimizer, lr): the sensitivity table
    ## Summary, beside the paper              counts over the rows and the paper's headline

Speed-ups carry their bound ('> x': MF never reached the level, '< x': OP-MF never), excesses name diverged
seeds, and excesses below the study's relative floor (float32 noise) read as ties.
"""

from __future__ import annotations

from typing import Any

from .task import threshold_key


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "–" if x is None else format(x, spec)


def _steps(x: float | None, reached: str) -> str:
    if x is None:
        return "never" if reached.startswith("0/") else f"never ({reached} seeds)"
    return f"{x:.0f}"


def _speed(s: dict[str, Any]) -> str:
    r = s["ratio"]
    return {
        "exact": f"{r:.2f}x" if r is not None else "–",
        "lower": f"> {_fmt(r, '.2f')}x",
        "upper": f"< {_fmt(r, '.2f')}x",
        "neither": "–",
    }[s["bound"]]


def _versus(c: dict[str, Any], floor: float) -> str:
    """OP-MF's final excess against MF's, in words (`floor`: the relative excess counted as float32 noise)."""
    r = c["final_excess_ratio"]
    if r is None:
        return "–"
    if c["tie"]:
        return f"tie (both ≤ {floor:g})"
    return f"{100 * (1 - r):.0f}% lower" if r < 1 else f"{r:.3g}x higher"


def _excess(c: dict[str, Any]) -> str:
    if c["diverged"]:
        return f"diverged ({c['diverged']}/{c['seeds']} seeds)"
    return _fmt(c["final_relative_excess"])


def markdown(result: dict[str, Any], spec: dict[str, Any]) -> str:
    """table.md: each arm at its best lr, then both arms at every shared lr, then the paper's headline."""
    keys = [threshold_key(t) for t in spec["thresholds"]]
    m, floor = spec["matrix"], result["relative_floor"]
    lines = [
        "# Matrix factorisation: MF vs OP-MF",
        "",
        f"Target {m['rows']}x{m['cols']}, rank r = {spec['r']}, {spec['steps']} steps, seeds {spec['seeds']}, "
        f"{result['trials']} trials. Loss = ‖ΔW - M‖²_F / (rows·cols), M scaled to ‖M‖²_F = rows·cols; "
        "relative excess = (loss - Eckart-Young optimum) / (initial loss - optimum), 1 at step 0 for both arms. "
        "Steps: mean over seeds of the first step at or below the level ('never': not within the budget on every "
        "seed). Speed-up = MF steps / OP-MF steps ('> x': MF never got there, so at least x; '< x': OP-MF never). "
        f"Best lr = lowest mean final relative excess (below {floor:g}, float32 noise, counted as a tie, "
        f"broken by fewer steps to {keys[-1] if keys else ''}); * = at the edge of the grid (the arm's best may lie "
        f"outside it). Final excess compared on mean relative excesses floored at {floor:g}.",
        "",
        "## Each arm at its best learning rate",
        "",
        "| spectrum | optimizer | best lr MF | best lr OP-MF | "
        + " | ".join(f"steps to {k}: MF / OP-MF (speed-up)" for k in keys)
        + " | final rel. excess MF | OP-MF | OP-MF vs MF | eff. rank MF / OP-MF / SVD |",
        "|" + "---|" * (8 + len(keys)),
    ]
    for r in result["table"]:
        mf, op = r["best"]["MF"] or {}, r["best"]["OP-MF"] or {}
        lrs = [
            _fmt(r["best_lr"][arm], "g") + ("*" if r["best_lr_at_grid_edge"][arm] else "")
            for arm in r["best_lr"]
        ]
        cols = [r["spectrum"], r["optimizer"], *lrs]
        for k in keys:
            a = _steps(mf.get("steps_to_excess", {}).get(k), mf.get("reached", {}).get(k, "0/0"))
            b = _steps(op.get("steps_to_excess", {}).get(k), op.get("reached", {}).get(k, "0/0"))
            cols.append(f"{a} / {b} ({_speed(r['speedup'][k])})")
        cols += [
            _fmt(mf.get("final_relative_excess")),
            _fmt(op.get("final_relative_excess")),
            _versus(r, floor),
            f"{_fmt(mf.get('final_effective_rank'), '.2f')} / {_fmt(op.get('final_effective_rank'), '.2f')}"
            f" / {r['optimal_effective_rank']:.2f}",
        ]
        lines.append("| " + " | ".join(cols) + " |")
    lines += [
        "",
        "## Both arms at each shared learning rate (sensitivity)",
        "",
        "| spectrum | optimizer | lr | final rel. excess MF | OP-MF | OP-MF vs MF | "
        + " | ".join(f"speed-up to {k}" for k in keys)
        + " |",
        "|" + "---|" * (6 + len(keys)),
    ]
    for r in result["table"]:
        for c in r["per_lr"]:
            cols = [
                r["spectrum"],
                r["optimizer"],
                f"{c['lr']:g}",
                _excess(c["MF"]),
                _excess(c["OP-MF"]),
                _versus(c, floor),
            ]
            cols += [_speed(c["speedup"][k]) for k in keys]
            lines.append("| " + " | ".join(cols) + " |")
    lines += _summary_lines(result, keys)
    return "\n".join(lines)


def _summary_lines(result: dict[str, Any], keys: list[str]) -> list[str]:
    """table.md's closing section: the tallies over rows and shared lrs, beside the paper's headline."""
    s, p = result["summary"], result["paper"]
    sp = ", ".join(
        f"{k}: {_fmt(v, '.2f')}x ({s['speedup_exact_rows'][k]} rows)" for k, v in s["speedup_geomean"].items()
    )
    fe, sh = s["final_excess"], s["shared_lr"]
    faster = ", ".join(f"{k}: {sh['op_mf_faster'][k]} vs {sh['mf_faster'][k]}" for k in keys)
    return [
        "",
        "## Summary, beside the paper",
        "",
        f"- Each arm at its best lr ({s['rows']} spectrum x optimizer rows): speed-up MF/OP-MF steps, geometric "
        f"mean over rows where both arms got there on every seed: {sp}. Final excess: OP-MF lower in "
        f"{fe['op_mf_lower']}, higher in {fe['op_mf_higher']}, tied at float precision in {fe['tie']} "
        f"(geometric mean of OP-MF/MF {_fmt(s['final_excess_ratio_geomean'])}).",
        f"- At shared lrs ({sh['pairs']} pairs): diverged on some seed MF {sh['mf_diverged']}, OP-MF "
        f"{sh['op_mf_diverged']}; reached the level first, OP-MF vs MF: {faster}; final excess OP-MF lower in "
        f"{sh['final_excess']['op_mf_lower']}, higher in {sh['final_excess']['op_mf_higher']}, tied in "
        f"{sh['final_excess']['tie']}, not comparable (a divergence) in {sh['final_excess']['not_comparable']}.",
        f"- Paper headline: OP-MF {p['speedup']}x faster and {p['final_loss_lower_pct']:.0f}% lower final loss "
        f"({p['source']}; its matrix sizes, budgets and lr selection are not known to us).",
        "",
    ]
