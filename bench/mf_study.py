"""The matrix-factorisation study at benchmark size: MF vs OP-MF, every spectrum, every optimizer.

    .venv/bin/python bench/mf_study.py [--out bench/results/mf_study.json] [--quick]
        [--hidden-dim H] [--optimizers adam,momentum]

Runs the `matrix_factorization_study` task through the runner (the same code path as the SDK) into
bench/out/mf_study/ (ignored by git), then writes the aggregated metrics to --out (JSON) and the study's
table next to it (.md); the figures stay in the run dir. `--quick` runs the spec's demo defaults instead;
`--hidden-dim` sets the OP-MF generator's width (the task's default otherwise, 32) and `--optimizers` keeps
only those optimizers of the grid, e.g. to compare a narrower generator on a shorter run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

BENCH_SPEC = {
    "task": "matrix_factorization_study",
    "device": "cpu",
    "seeds": [0, 1, 2],
    "matrix": {"rows": 128, "cols": 128},
    "steps": 1000,
    "log_every": 20,
    # The demo grids less the value that was worst for both arms at 64x64 (216 trials, ~5-8 min on an idle
    # 2-core machine; much longer when the cores are shared).
    "lr_grid": {"sgd": [1, 3, 10, 30], "momentum": [0.3, 1, 3, 10], "adam": [1e-2, 3e-2, 1e-1, 3e-1]},
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mf_study.json")
    parser.add_argument("--quick", action="store_true", help="the demo-size defaults of the spec")
    parser.add_argument("--hidden-dim", type=int, help="the generator's hidden width (default: the task's)")
    parser.add_argument("--optimizers", help="comma-separated subset of sgd,momentum,adam (default: all)")
    args = parser.parse_args()

    from oplora.run.runner import run_spec

    spec = dict({"task": "matrix_factorization_study", "device": "cpu"} if args.quick else BENCH_SPEC)
    if args.hidden_dim is not None:
        spec["generator"] = {"hidden_dim": args.hidden_dim}
    if args.optimizers:
        spec["optimizers"] = args.optimizers.split(",")
    run_dir = ROOT / "bench" / "out" / (args.out.stem + ("_quick" if args.quick else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    result, code = run_spec(spec, run_dir)
    wall = time.perf_counter() - t0
    if result is None or code != 0:
        print(f"mf_study: failed ({code}): {result and result['error']}", file=sys.stderr)
        return code or 1
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = result["metrics"]
    record = {
        "benchmark": "mf_study",
        "quick": args.quick,
        "spec": json.loads((run_dir / "spec.json").read_text()),
        "wall_s": wall,
        "versions": result["versions"],
        **metrics,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = (run_dir / "table.md").read_text()
    out.with_suffix(".md").write_text(
        table
        + f"\nWall time {wall:.0f} s for {metrics['trials']} trials on this machine (CPU, torch threads as set by "
        "the task); run dir with curves.png / effective_rank.png: " + str(run_dir.relative_to(ROOT)) + "\n"
    )
    print(table)
    print(f"mf_study: {metrics['trials']} trials in {wall:.0f} s -> {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
