"""The Ray backend of sweeps: one Ray core task per trial, driven by one long-lived driver process.

    SDK ──stdin──► {"op": "check", "trials": [{"id", "label", "spec"}]}     refuse what no node can fit
                   {"op": "submit", "id", "label", "spec", "out_dir"}         run one trial
                   {"op": "cancel", "id"}                                     cancel one trial (force)
    SDK ◄──fd 3──  {"driver": "ready", "pid", "nodes": [...]}                once, after ray.init
                   {"reply": "check", "ok", "error"}
                   {"trial": id, "event": {...}}                              the trial's run events, live
                   {"trial": id, "placed": {"node_id", "node_ip", "pid"}}     when its task starts
                   {"reply": id, "code", "result" | null, "cancelled"}        when the trial is over

Each trial runs `run_spec` (the runner the local backend uses) inside a Ray task that asks for the
trial's resources (`num_cpus` = its processes, `num_gpus` = its processes on GPU, `memory` = the plan's
estimate). The task writes the run directory on its node (a temporary folder), pushes its events to a
small actor the driver drains every 0.2 s, and returns the whole directory as the bytes of a tar; the
driver unpacks it next to the sweep store's trial folder and renames it into place, so the store never
holds half a trial. With `shared_store`, the task writes straight into the store (a path every node
mounts) and a retried attempt resumes there. Ray retries a task whose worker or node died
(`max_retries`); a trial's own exception is caught by the runner and recorded as failed, never retried.
Standard input closing (the SDK went away) cancels every task and ends the driver.
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from .rundir import write_json_atomic
from .runner import run_spec

INSTALL_HINT = "the Ray backend needs the ray package: pip install 'oplora[ray]'"
POLL_S = 0.2
EVENT_FLUSH_S = 0.25
DOCTOR_PACKAGES = ("oplora", "torch", "peft", "diffusers", "transformers")


class RayBackendError(RuntimeError):
    """The cluster cannot run the sweep (ray missing, a trial no node fits, tasks stuck pending)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RayBackendError(INSTALL_HINT) from e
    return ray


CONNECT_TIMEOUT_S = 10.0


def connect(ray: Any, address: str, runtime_env: dict[str, Any] | None = None) -> None:
    """`ray.init` on the cluster at `address` ("HOST:PORT" or "auto"). A HOST:PORT nobody listens on is
    refused within CONNECT_TIMEOUT_S (RayBackendError naming it): `ray.init` alone retries for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if sep and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise RayBackendError(
                f"cannot connect to the Ray cluster at {address}: {e.strerror or e} (is `ray start --head` "
                "running there, and is this its GCS port?)"
            ) from e
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="WARNING")
    except Exception as e:
        raise RayBackendError(f"cannot connect to the Ray cluster at {address}: {e}") from e


# --- resources ----------------------------------------------------------------------------------------


def trial_resources(spec: dict[str, Any], cluster_has_gpus: bool) -> dict[str, Any]:
    """What a trial asks Ray for: CPUs and GPUs from its processes and device, memory from its plan."""
    processes = int(spec.get("train", {}).get("num_processes", 1))
    device = str(spec.get("device", "auto"))
    on_gpu = device.startswith("cuda") or (device == "auto" and cluster_has_gpus)
    memory: int | None = None
    try:
        from ..plan import plan

        memory = int(plan(spec)["memory_bytes"]["total"])
    except Exception:  # a task that cannot be planned yet: Ray is not told its memory
        memory = None
    out: dict[str, Any] = {"num_cpus": processes, "num_gpus": processes if on_gpu else 0}
    if memory:
        out["memory"] = memory
    return out


def node_summaries(ray: Any) -> list[dict[str, Any]]:
    """The cluster's live nodes: id, address and total CPUs, GPUs and memory (bytes)."""
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        out.append(
            {
                "node_id": n["NodeID"],
                "node_ip": n.get("NodeManagerAddress"),
                "cpus": res.get("CPU", 0),
                "gpus": res.get("GPU", 0),
                "memory": int(res.get("memory", 0)),
            }
        )
    return out


def _fits(ask: dict[str, Any], node: dict[str, Any]) -> bool:
    return (
        ask["num_cpus"] <= node["cpus"]
        and ask["num_gpus"] <= node["gpus"]
        and ask.get("memory", 0) <= node["memory"]
    )


def _describe(ask: dict[str, Any]) -> str:
    mem = ask.get("memory")
    return f"{ask['num_cpus']} CPU, {ask['num_gpus']} GPU" + (
        f", {mem / 2**20:.3g} MiB memory" if mem else ""
    )


def refuse_unfit(trials: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> str | None:
    """A message naming the first trial no node can ever fit (None when every trial fits somewhere)."""
    has_gpus = any(n["gpus"] > 0 for n in nodes)
    for t in trials:
        ask = trial_resources(t["spec"], has_gpus)
        if not any(_fits(ask, n) for n in nodes):
            largest = max(nodes, key=lambda n: (n["gpus"], n["cpus"], n["memory"]), default=None)
            big = (
                f"{largest['cpus']:g} CPU, {largest['gpus']:g} GPU, {largest['memory'] / 2**30:.3g} GiB memory"
                if largest
                else "none (the cluster has no live node)"
            )
            return (
                f"trial {t.get('label') or t['id']} asks {_describe(ask)}, more than any node of the "
                f"cluster has (largest node: {big}); nothing was submitted"
            )
    return None


# --- the task -----------------------------------------------------------------------------------------


def _forward_events(read_fd: int, trial_id: str, hub: Any) -> None:
    """Read the run's events from a pipe and push them to the hub in batches, at most EVENT_FLUSH_S apart."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8") as f:
            for line in f:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    done = False
    last = None
    while not done:
        batch: list[str] = []
        deadline = time.monotonic() + EVENT_FLUSH_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                done = True
                break
            batch.append(line)
        if batch:
            last = hub.push.remote(trial_id, batch)
    if last is not None:  # the driver drains after the task returns: every push must have landed by then
        import ray

        ray.get(last)


def _tar_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def run_trial(trial_id: str, spec: dict[str, Any], hub: Any, shared_dir: str | None) -> dict[str, Any]:
    """The body of a trial's Ray task: run the spec on this node, return the run directory as a tar."""
    import ray

    ctx = ray.get_runtime_context()
    placed = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
    hub.placed.remote(trial_id, placed)
    scratch = None if shared_dir else Path(tempfile.mkdtemp(prefix=f"oplora-ray-{trial_id}-"))
    run_dir = Path(shared_dir) if shared_dir else scratch / "run"  # type: ignore[operator]
    resume = bool(shared_dir) and (run_dir / "spec.json").exists()
    read_fd, write_fd = os.pipe()
    forwarder = threading.Thread(target=_forward_events, args=(read_fd, trial_id, hub), daemon=True)
    forwarder.start()
    try:
        result, code = run_spec(spec, run_dir, events_fd=write_fd, resume=resume, in_sweep=True)
        forwarder.join(timeout=5)
        write_json_atomic(run_dir / "ray.json", placed) if run_dir.exists() else None
        tar = _tar_dir(run_dir) if (run_dir.exists() and not shared_dir) else None
        return {"code": code, "result": result, "tar": tar, "placed": placed}
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


@cache
def remote_defs(ray: Any) -> tuple[Any, Any]:
    """The Ray remote function and the event hub actor class (defined once ray is imported)."""

    @ray.remote(num_cpus=0)
    class EventHub:
        def __init__(self) -> None:
            self.items: list[tuple[str, str, Any]] = []

        def push(self, trial_id: str, lines: list[str]) -> None:
            self.items.append(("events", trial_id, lines))

        def placed(self, trial_id: str, info: dict[str, Any]) -> None:
            self.items.append(("placed", trial_id, info))

        def drain(self) -> list[tuple[str, str, Any]]:
            items, self.items = self.items, []
            return items

    return ray.remote(run_trial), EventHub


# --- the store ----------------------------------------------------------------------------------------


def install_run_dir(out_dir: Path, tar: bytes | None, result: dict[str, Any] | None) -> None:
    """Unpack a trial's directory beside `out_dir`, fix its result's run_dir, and rename it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".incoming", dir=out_dir.parent))
    try:
        if tar is not None:
            with tarfile.open(fileobj=io.BytesIO(tar), mode="r") as t:
                t.extractall(tmp, filter="data")
        if result is not None:
            result = {**result, "run_dir": str(out_dir.resolve())}
            write_json_atomic(tmp / "result.json", result)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def failed_result(
    spec: dict[str, Any], out_dir: Path, error: BaseException, started: float
) -> dict[str, Any]:
    """result.json for a trial whose task never returned (its node died past the retries, or it was lost)."""
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))
    return {
        "status": "failed",
        "task": spec.get("task"),
        "run_dir": str(out_dir.resolve()),
        "metrics": None,
        "artifacts": [],
        "error": {"type": type(error).__name__, "message": str(error), "traceback": ""},
        "versions": {},
        "device": None,
        "timing": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
            "finished_at": iso,
            "wall_s": now - started,
        },
        "written_by": "ray-driver",
    }


# --- doctor -------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """The versions `doctor --ray` compares across nodes (None when a package does not import)."""
    import importlib.metadata

    out: dict[str, str | None] = {}
    for name in DOCTOR_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cluster_doctor(
    address: str, runtime_env: dict[str, Any] | None = None, timeout_s: float = 60
) -> dict[str, Any]:
    """Each live node's CPUs, GPUs, memory and package versions (from a tiny task pinned to it), and
    whether they match the driver's."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    connect(ray, address, runtime_env)
    try:
        probe = ray.remote(num_cpus=0)(package_versions)
        mine = package_versions()
        nodes = node_summaries(ray)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)
            ).remote()
            for n in nodes
        ]
        for n, ref in zip(nodes, refs, strict=True):
            try:
                n["versions"] = ray.get(ref, timeout=timeout_s)
                n["mismatch"] = {
                    k: {"driver": mine[k], "node": v} for k, v in n["versions"].items() if v != mine[k]
                }
            except Exception as e:
                n["versions"], n["mismatch"] = None, None
                n["error"] = f"{type(e).__name__}: {e}"
        ok = bool(nodes) and all(n.get("mismatch") == {} for n in nodes)
        return {"address": address, "driver_versions": mine, "nodes": nodes, "ok": ok}
    finally:
        ray.shutdown()
