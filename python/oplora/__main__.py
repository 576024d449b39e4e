"""`python -m oplora`: the same code path the SDK's job lane uses.

    python -m oplora run SPEC.json --out DIR [--resume] [--events-fd N] [--watch-stdin]
    python -m oplora validate SPEC.json      prints the spec with defaults filled in
    python -m oplora doctor                  environment report (JSON)
    python -m oplora search                  Optuna studies over stdin / fd 3 (sweeps with a search block)

Exit codes: 0 success, 1 run failed, 2 invalid spec or arguments, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .run.runner import EXIT_INVALID


def _load(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        print(f"oplora: cannot read spec {path}: {e.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        print(f"oplora: {path} is not valid JSON: {e}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oplora", description="OP-LoRA runs from a JSON spec")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a spec into a run directory")
    run.add_argument("spec", help="spec JSON file, or - for standard input")
    run.add_argument("--out", required=True, help="run directory (must be new or empty, unless --resume)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--events-fd", type=int, default=None, help="also write NDJSON events to this fd")
    run.add_argument("--watch-stdin", action="store_true", help="cancel when standard input closes")
    val = sub.add_parser("validate", help="validate a spec and print it with defaults filled in")
    val.add_argument("spec")
    sub.add_parser("doctor", help="environment report")
    sub.add_parser("worker", help="serve runs over stdin/stdout (used by sweeps)")
    sub.add_parser(
        "search", help="serve an Optuna search over stdin/fd 3 (used by sweeps with a search block)"
    )
    # --- Ray backend (oplora[ray]) ---
    rd = sub.add_parser("ray-driver", help="run a sweep's trials on a Ray cluster (used by sweeps)")
    rd.add_argument("--config", required=True, help="JSON: address, runtime_env, max_retries, ...")
    rdoc = sub.add_parser("ray-doctor", help="a Ray cluster's nodes and their package versions (JSON)")
    rdoc.add_argument("--address", required=True)
    # --- end Ray backend ---
    gen = sub.add_parser("generate", help="images from a text_to_image run's base pipeline + its LoRA (JSON)")
    gen.add_argument("run_dir")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, help="PNG to write (base | adapter side by side with --compare)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=None, help="inference steps (default: the run's eval)")
    gen.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the run's eval)")
    gen.add_argument("--compare", action="store_true", help="also the base pipeline's image, same seed")
    ans = sub.add_parser("answer", help="a LLaVA run's answer to a question about an image (JSON)")
    ans.add_argument("run_dir")
    ans.add_argument("--image", required=True)
    ans.add_argument("--question", required=True)
    ans.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    if args.command == "run":
        from .run.runner import run_spec

        result, code = run_spec(
            _load(args.spec), Path(args.out), args.events_fd, args.watch_stdin, args.resume
        )
        if result is not None and result["error"] and args.events_fd is None:  # no SDK reads the events
            print(f"oplora: {result['error']['type']}: {result['error']['message']}", file=sys.stderr)
        return code
    if args.command == "validate":
        from .run.spec import SpecError, validate_spec

        try:
            print(json.dumps(validate_spec(_load(args.spec)), indent=2))
        except SpecError as e:
            print(f"oplora: {e}", file=sys.stderr)
            return EXIT_INVALID
        return 0
    if args.command == "doctor":
        from .run.environment import doctor

        report = doctor()
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    if args.command == "worker":
        from .run.worker import serve

        return serve()
    if args.command == "search":
        from .run.search import serve as serve_search

        return serve_search()
    if args.command in ("generate", "answer"):
        return _use_command(args)
    if args.command in ("ray-driver", "ray-doctor"):
        return _ray_command(args)
    return EXIT_INVALID


def _use_command(args: argparse.Namespace) -> int:
    """`generate` / `answer`: one JSON line on stdout; `oplora: <reason>` and exit 2 for bad input."""
    from .run.runner import InputError
    from .use import answer_main, generate_main

    try:
        if args.command == "generate":
            out = generate_main(
                args.run_dir, args.prompt, args.out, args.seed, args.steps, args.guidance, args.compare
            )
        else:
            out = answer_main(args.run_dir, args.image, args.question, args.max_new_tokens)
    except InputError as e:
        print(f"oplora: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(out))
    return 0


def _ray_command(args: argparse.Namespace) -> int:
    """`ray-driver` / `ray-doctor`: the Ray backend (needs the `ray` extra; says how to install it)."""
    from .run.ray_backend import RayBackendError, cluster_doctor
    from .run.ray_driver import serve

    try:
        if args.command == "ray-driver":
            return serve(json.loads(args.config))
        report = cluster_doctor(args.address)
    except RayBackendError as e:
        print(f"oplora: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
