"""Several data-parallel processes for one run: re-run the task under `accelerate launch` (GPU) or
`torch.distributed.run` (CPU, gloo).

    runner (parent) ── task.run(spec, ctx): train.num_processes > 1, not yet inside a launch
        └─ accelerate launch --num_processes N [--cpu] -m oplora.run.launch SPEC RUN_DIR EVENTS METRICS
              ├─ rank 0: task.run(spec, child ctx) ── events ─► EVENTS (NDJSON file) ─► parent relays to ctx
              └─ rank k: task.run(spec, child ctx) ── events dropped
        parent: tails EVENTS while waiting, SIGTERM/Cancelled → terminates the launcher's process group,
                returns rank 0's metrics (METRICS)

Events go through a file because Python's subprocess closes inherited descriptors above 2, so the SDK's
event pipe never reaches the children. Only rank 0 writes into the run directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..training.loop import in_distributed_launch

_RELAY = {"step", "eval", "checkpoint", "artifact", "warning"}
_CHILD_ENV = "OPLORA_LAUNCHED"


def launch_command(n: int, cpu: bool, args: list[str], port: int | None = None) -> list[str]:
    """The command running `python -m oplora.run.launch ARGS` on n local processes.

    GPU: `accelerate launch --multi_gpu`. CPU: accelerate 1.15's `launch --cpu` starts a single process
    (its simple launcher), so CPU runs use torch's own launcher (`torch.distributed.run`, as `torchrun`);
    accelerate then sees WORLD_SIZE/RANK and picks MULTI_CPU with gloo."""
    port = port if port is not None else 29500
    if cpu:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(n),
            "--nnodes",
            "1",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "oplora.run.launch",
            *args,
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--multi_gpu",
        "--main_process_port",
        str(port),
        "-m",
        "oplora.run.launch",
        *args,
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _relay(line: str, ctx: Any) -> None:
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return
    kind = ev.pop("type", None)
    for k in ("seq", "time"):
        ev.pop(k, None)
    if kind == "artifact":  # through ctx, so result.json lists it too (path is already run-dir relative)
        ctx.artifacts.append(ev)
        ctx.events.emit("artifact", **ev)
    elif kind == "step":
        ctx.last_step = ev.get("step")
        ctx.events.emit("step", **ev)
    elif kind in _RELAY:
        ctx.events.emit(kind, **ev)


def relaunch_if_needed(spec: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
    """Run the spec on `train.num_processes` processes and return rank 0's metrics; None when this process
    should train itself (one process, or already inside a launch)."""
    n = int(spec.get("train", {}).get("num_processes", 1))
    if n <= 1 or in_distributed_launch() or os.environ.get(_CHILD_ENV):
        return None  # _CHILD_ENV: never relaunch from a launched child, whatever the launcher set
    tmp = Path(tempfile.mkdtemp(prefix="oplora-launch-"))
    spec_path, events, metrics = tmp / "spec.json", tmp / "events.ndjson", tmp / "metrics.json"
    spec_path.write_text(json.dumps(spec))
    events.touch()
    cpu = getattr(ctx.device, "type", "cpu") == "cpu"
    cmd = launch_command(n, cpu, [str(spec_path), str(ctx.run_dir), str(events), str(metrics)], _free_port())
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), _CHILD_ENV: "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        with open(events, encoding="utf-8") as f:
            while True:
                line = f.readline()
                if line.endswith("\n"):
                    _relay(line, ctx)
                    continue
                if proc.poll() is not None:
                    for rest in f.read().splitlines():
                        _relay(rest, ctx)
                    break
                time.sleep(0.1)
    except BaseException:  # Cancelled (SIGTERM) or anything else: stop the whole process group
        _stop(proc)
        raise
    if proc.returncode != 0:
        err = tmp / "error.json"
        detail = json.loads(err.read_text()) if err.exists() else {}
        from ..training.loop import TrainingDiverged
        from .runner import InputError

        kept: dict[str, type[Exception]] = {"InputError": InputError, "TrainingDiverged": TrainingDiverged}
        if detail.get("type") in kept:  # rank 0's own error, so result.json names it as a 1-process run would
            raise kept[detail["type"]](detail["message"])
        raise RuntimeError(
            f"accelerate launch with {n} processes exited {proc.returncode}: "
            f"{detail.get('message', 'see stderr')}"
        )
    return json.loads(metrics.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    """Child entry (`python -m oplora.run.launch SPEC RUN_DIR EVENTS METRICS`), one per process."""
    import importlib
    import traceback

    from .environment import resolve_device
    from .events import EventSink
    from .runner import TASK_MODULES, Cancelled, RunContext, raise_cancelled

    os.environ[_CHILD_ENV] = "1"  # a launched child trains itself, never launches again
    spec_path, run_dir, events, metrics = (Path(a) for a in argv)
    spec = json.loads(spec_path.read_text())
    rank = int(os.environ.get("RANK", "0"))
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, raise_cancelled)
    sink = EventSink(events if rank == 0 else None)
    ctx = RunContext(
        spec=spec, run_dir=run_dir, events=sink, device=resolve_device(spec.get("device", "auto"))
    )
    try:
        out = importlib.import_module(TASK_MODULES[spec["task"]]).run(spec, ctx)
        if rank == 0:
            metrics.write_text(json.dumps(out))
        return 0
    except Cancelled:
        return 130
    except Exception as e:
        if rank == 0:
            (metrics.parent / "error.json").write_text(
                json.dumps({"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()})
            )
        raise
    finally:
        sink.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
