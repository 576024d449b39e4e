"""`python -m oplora ray-driver --config JSON`: the process the SDK starts for a sweep on a Ray cluster.

The protocol and the task are described in `ray_backend.py`. This module holds the loop: read requests
from standard input, submit tasks, forward the hub's events, collect finished tasks into the store, and
fail trials left pending past the timeout. Standard input closing, or the parent process changing (the
SDK died), cancels every task of the sweep (force) and ends the driver.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ray_backend import (
    POLL_S,
    RayBackendError,
    connect,
    failed_result,
    import_ray,
    install_run_dir,
    node_summaries,
    refuse_unfit,
    remote_defs,
    trial_resources,
)
from .rundir import to_json_line
from .runner import EXIT_CANCELLED, EXIT_FAILED

CANCEL_WAIT_S = 15.0


@dataclass
class _Trial:
    id: str
    label: str
    spec: dict[str, Any]
    out_dir: Path
    ref: Any
    submitted: float = field(default_factory=time.time)
    placed: bool = False
    cancelling: bool = False


class Driver:
    def __init__(self, config: dict[str, Any], channel_fd: int) -> None:
        self.ray = import_ray()
        self.config = config
        self.fd = os.dup(channel_fd)  # our own copy: the fd number handed to us may be reused once Ray starts
        os.close(channel_fd)
        self.lock = threading.Lock()
        self.trials: dict[str, _Trial] = {}
        self.last_progress = time.time()
        address = config.get("address") or "auto"
        connect(self.ray, address, config.get("runtime_env"))
        self.task_fn, hub_cls = remote_defs(self.ray)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # the hub lives on the head node (the node that lives as long as the cluster), else on the driver's
        heads = [
            n["NodeID"]
            for n in self.ray.nodes()
            if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})
        ]
        # Hard affinity to the head: a soft one is not always honoured (measured: 1 of 5 hubs landed on the
        # other node), and a hub on a node that dies takes every trial's events and reply with it.
        here = heads[0] if heads else self.ray.get_runtime_context().get_node_id()
        self.hub = hub_cls.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=not heads)
        ).remote()
        self.nodes = node_summaries(self.ray)
        self.send({"driver": "ready", "pid": os.getpid(), "nodes": self.nodes})

    def send(self, obj: dict[str, Any]) -> None:
        data = memoryview((to_json_line(obj) + "\n").encode())
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]

    # --- requests -------------------------------------------------------------------------------------

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "check":
            self.nodes = node_summaries(self.ray)
            error = refuse_unfit(msg["trials"], self.nodes)
            self.send({"reply": "check", "ok": error is None, "error": error})
        elif op == "submit":
            self.submit(str(msg["id"]), str(msg.get("label", msg["id"])), msg["spec"], Path(msg["out_dir"]))
        elif op == "cancel":
            self.cancel(str(msg["id"]))

    def submit(self, trial_id: str, label: str, spec: dict[str, Any], out_dir: Path) -> None:
        ask = trial_resources(spec, any(n["gpus"] > 0 for n in self.nodes))
        shared = str(out_dir.resolve()) if self.config.get("shared_store") else None
        ref = self.task_fn.options(
            **ask, max_retries=int(self.config.get("max_retries", 2)), retry_exceptions=False
        ).remote(trial_id, spec, self.hub, shared)
        self.trials[trial_id] = _Trial(trial_id, label, spec, out_dir, ref)

    def cancel(self, trial_id: str) -> None:
        t = self.trials.get(trial_id)
        if t is not None and not t.cancelling:
            t.cancelling = True
            self.ray.cancel(t.ref, force=True)

    # --- the loop -------------------------------------------------------------------------------------

    def pump_events(self) -> None:
        for kind, trial_id, payload in self.ray.get(self.hub.drain.remote(), timeout=30):
            if kind == "placed":
                t = self.trials.get(trial_id)
                if t is not None:
                    t.placed = True
                self.last_progress = time.time()
                self.send({"trial": trial_id, "placed": payload})
                continue
            for line in payload:
                try:
                    self.send({"trial": trial_id, "event": json.loads(line)})
                except json.JSONDecodeError:
                    pass

    def collect(self, t: _Trial) -> None:
        """A finished task: put its run directory in the store and reply."""
        ray = self.ray
        self.last_progress = time.time()
        try:
            out = ray.get(t.ref)
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError) as e:
            if t.cancelling or isinstance(e, ray.exceptions.TaskCancelledError):
                self.send({"reply": t.id, "code": EXIT_CANCELLED, "result": None, "cancelled": True})
                return
            self.fail(t, e)
            return
        except ray.exceptions.RayError as e:  # its node died past the retries, out of memory, ...
            self.fail(t, e)
            return
        result = out["result"]
        if not self.config.get("shared_store"):
            install_run_dir(t.out_dir, out["tar"], result)
        if result is not None:
            result = {**result, "run_dir": str(t.out_dir.resolve())}
        self.send({"reply": t.id, "code": out["code"], "result": result, "cancelled": False})

    def fail(self, t: _Trial, error: BaseException) -> None:
        result = failed_result(t.spec, t.out_dir, error, t.submitted)
        install_run_dir(t.out_dir, None, result)
        self.send({"reply": t.id, "code": EXIT_FAILED, "result": result, "cancelled": False})

    def check_pending(self) -> None:
        """Fail trials still pending when nothing of the sweep has started or finished for the timeout."""
        timeout = float(self.config.get("pending_timeout_s", 600))
        if any(t.placed for t in self.trials.values()) or time.time() - self.last_progress < timeout:
            return
        for t in list(self.trials.values()):
            if t.placed or t.cancelling:
                continue
            ask = trial_resources(t.spec, any(n["gpus"] > 0 for n in self.nodes))
            err = RayBackendError(
                f"trial {t.label} stayed pending for {timeout:g} s: no node of the cluster had "
                f"{_ask(ask)} free (is a node down, or another job holding the resources?)"
            )
            self.ray.cancel(t.ref, force=True)
            del self.trials[t.id]
            self.fail(t, err)

    def step(self) -> None:
        self.pump_events()
        refs = [t.ref for t in self.trials.values()]
        if not refs:
            time.sleep(POLL_S)
            self.last_progress = time.time()
            return
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
        if ready:
            self.pump_events()  # the last events of a trial before its reply
        done = {id(r) for r in ready}
        for t in [t for t in self.trials.values() if id(t.ref) in done]:
            del self.trials[t.id]
            self.collect(t)
        self.check_pending()

    def shutdown(self) -> None:
        """Cancel every task still in flight (force) and wait until Ray says they are gone."""
        for t in self.trials.values():
            self.ray.cancel(t.ref, force=True)
        refs = [t.ref for t in self.trials.values()]
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        self.ray.shutdown()


def _ask(ask: dict[str, Any]) -> str:
    mem = ask.get("memory")
    return f"{ask['num_cpus']} CPU, {ask['num_gpus']} GPU" + (
        f", {mem / 2**20:.3g} MiB memory" if mem else ""
    )


def _read_stdin(requests: queue.Queue[dict[str, Any] | None]) -> None:
    try:
        for line in sys.stdin:
            if line.strip():
                try:
                    requests.put(json.loads(line))
                except json.JSONDecodeError:
                    print(f"oplora ray-driver: bad request {line!r}", file=sys.stderr)
    except (OSError, ValueError):
        pass
    requests.put(None)


def serve(config: dict[str, Any]) -> int:
    """Run the driver until standard input closes. Returns the exit code."""
    fd = int(os.environ.get("OPLORA_WORKER_FD", "3"))
    try:
        driver = Driver(config, fd)
    except RayBackendError as e:
        print(f"oplora: {e}", file=sys.stderr)
        return 2
    parent = os.getppid()
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_read_stdin, args=(requests,), daemon=True).start()
    try:
        while os.getppid() == parent:
            try:
                while True:
                    msg = requests.get_nowait()
                    if msg is None:
                        return 0
                    driver.handle(msg)
            except queue.Empty:
                pass
            driver.step()
        return 0
    finally:
        driver.shutdown()
