"""The Ray driver (`python -m oplora ray-driver`) against a real two-node local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from oplora.run.ray_backend import refuse_unfit, trial_resources

REPO = Path(__file__).resolve().parents[3]
MF = {
    "task": "matrix_factorization",
    "device": "cpu",
    "matrix": {"rows": 16, "cols": 16},
    "adapter": {"kind": "lora", "r": 2},
    "train": {"steps": 30, "log_every": 10},
}


class DriverProc:
    """The driver as the SDK runs it: requests on stdin, replies and events on fd 3."""

    def __init__(self, address: str, **config: Any) -> None:
        r, w = os.pipe()
        env = {**os.environ, "OPLORA_WORKER_FD": str(w), "PYTHONPATH": str(REPO / "python")}
        cfg = json.dumps({"address": address, **config})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oplora", "ray-driver", "--config", cfg],
            stdin=subprocess.PIPE,
            pass_fds=(w,),
            env=env,
        )
        os.close(w)
        self.out = os.fdopen(r, "r")
        self.ready = self.next()

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def next(self) -> dict[str, Any]:
        line = self.out.readline()
        assert line, f"driver closed its channel (exit {self.proc.poll()})"
        return json.loads(line)

    def until_replies(self, ids: set[str]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        replies: dict[str, dict[str, Any]] = {}
        other = []
        while set(replies) != ids:
            msg = self.next()
            if msg.get("reply") in ids:
                replies[msg["reply"]] = msg
            else:
                other.append(msg)
        return replies, other

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=60)


def test_resources_and_refusal_are_computed_from_the_spec():
    ask = trial_resources({**MF, "device": "cpu"}, cluster_has_gpus=True)
    assert ask["num_cpus"] == 1 and ask["num_gpus"] == 0 and ask["memory"] > 0
    nodes = [{"node_id": "a", "node_ip": "x", "cpus": 1, "gpus": 0, "memory": 2**30}]
    assert refuse_unfit([{"id": "t", "spec": MF}], nodes) is None
    gpu4 = {"id": "t4", "label": "big", "spec": {**MF, "device": "cuda", "train": {"num_processes": 4}}}
    msg = refuse_unfit([gpu4], nodes)
    assert msg is not None and "big" in msg and "4 GPU" in msg and "largest node: 1 CPU, 0 GPU" in msg


def test_trials_run_on_both_nodes_events_arrive_and_a_failing_trial_is_not_retried(ray_cluster, tmp_path):
    d = DriverProc(ray_cluster.address)
    try:
        assert d.ready["driver"] == "ready" and len(d.ready["nodes"]) == 2
        bad = {**MF, "optimizer": {"name": "sgd", "lr": 1e12}}  # diverges: the task raises
        trials = {f"t{i}": {**MF, "seed": i} for i in range(3)} | {"bad": bad}
        d.send({"op": "check", "trials": [{"id": k, "spec": v} for k, v in trials.items()]})
        assert d.next() == {"reply": "check", "ok": True, "error": None}
        t0 = time.time()
        for k, v in trials.items():
            d.send({"op": "submit", "id": k, "label": k, "spec": v, "out_dir": str(tmp_path / k)})
        replies, other = d.until_replies(set(trials))
        wall = time.time() - t0
    finally:
        assert d.close() == 0
    for k in ("t0", "t1", "t2"):
        assert replies[k]["code"] == 0 and replies[k]["result"]["status"] == "succeeded"
        result = json.loads((tmp_path / k / "result.json").read_text())
        assert result["status"] == "succeeded" and result["run_dir"] == str((tmp_path / k).resolve())
        assert (tmp_path / k / "adapter").is_dir() and (tmp_path / k / "events.ndjson").exists()
    assert replies["bad"]["result"]["status"] == "failed"
    assert "diverged" in replies["bad"]["result"]["error"]["message"]
    placed = [m for m in other if "placed" in m]
    assert sum(1 for m in placed if m["trial"] == "bad") == 1, "the failing trial ran more than once"
    assert len({m["placed"]["node_id"] for m in placed}) == 2, "trials did not use both nodes"
    steps = [m for m in other if m.get("event", {}).get("type") == "step"]
    assert {m["trial"] for m in steps} >= {"t0", "t1", "t2"}
    assert not list(tmp_path.glob(".*incoming")), "a temporary directory was left in the store"
    print(f"4 trials on the cluster: {wall:.1f} s")


def test_a_trial_no_node_fits_is_refused_before_submission(ray_cluster):
    d = DriverProc(ray_cluster.address)
    try:
        big = {**MF, "device": "cuda", "adapter": {"kind": "lora", "r": 2}}
        d.send(
            {
                "op": "check",
                "trials": [{"id": "a", "spec": MF}, {"id": "g", "label": "gpu-trial", "spec": big}],
            }
        )
        reply = d.next()
    finally:
        assert d.close() == 0
    assert reply["reply"] == "check" and reply["ok"] is False
    assert "gpu-trial asks 1 CPU, 1 GPU" in reply["error"] and "nothing was submitted" in reply["error"]


def test_pending_past_the_timeout_fails_the_trial_with_a_clear_error(ray_cluster, tmp_path):
    d = DriverProc(ray_cluster.address, pending_timeout_s=3)
    try:
        huge = {**MF, "device": "cuda"}  # no node has a GPU: it stays pending (submitted without a check)
        d.send(
            {
                "op": "submit",
                "id": "p",
                "label": "pending-trial",
                "spec": huge,
                "out_dir": str(tmp_path / "p"),
            }
        )
        replies, _ = d.until_replies({"p"})
    finally:
        assert d.close() == 0
    err = replies["p"]["result"]["error"]
    assert err["type"] == "RayBackendError" and "pending-trial stayed pending for 3 s" in err["message"]
    assert json.loads((tmp_path / "p" / "result.json").read_text())["status"] == "failed"
