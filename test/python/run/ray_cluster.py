"""A real two-node Ray cluster on 127.0.0.1 for the Ray backend's tests (one CPU per node).

    cluster = LocalCluster(); cluster.start()    # head + a second node, separate temp dirs
    cluster.address                             # "127.0.0.1:PORT"
    cluster.raylet_pid(1)                       # the second node's raylet (to kill it in a test)
    cluster.stop()                              # SIGKILL each node's own process group: nothing left

Each `ray start --block` runs in its own session, so every process of a node (GCS, raylet, workers)
is in that node's process group and dies with it; `ray stop` is never used (it would stop other
clusters on the machine). As a script (`python ray_cluster.py`) it prints {"address", "pids"} as one
JSON line, then keeps the cluster up until its standard input closes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).parent / "ray")
FAST_HEALTH = {  # notice a dead node within a few seconds, not Ray's default ~30 s
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_pids(pgid: int) -> list[tuple[int, str]]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.getpgid(int(p.name)) == pgid:
                out.append((int(p.name), (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ProcessLookupError):
            continue
    return out


def _children_of(parents: set[int]) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) in parents:
                    out.append(int(p.name))
            except (OSError, ValueError):
                continue
    return out


class LocalCluster:
    def __init__(self, nodes: int = 2) -> None:
        self.n = nodes
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="oplora-ray-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            **FAST_HEALTH,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO / "python"), os.environ.get("PYTHONPATH")) if p
            ),
        }

    def _start_node(self, i: int) -> None:
        tmp = self.root / f"n{i}"
        tmp.mkdir()
        common = [
            "--block",
            "--num-cpus",
            "1",
            "--node-ip-address",
            "127.0.0.1",
            "--object-store-memory",
            "80000000",
        ]
        common += ["--temp-dir", str(tmp), "--disable-usage-stats"]
        if i == 0:
            args = ["start", "--head", "--port", str(self.port), "--include-dashboard=false", *common]
        else:
            args = ["start", "--address", self.address, *common]
        log = open(self.root / f"n{i}.log", "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen([RAY, *args], env=self.env, stdout=log, stderr=log, start_new_session=True)
        )

    def start(self, timeout_s: float = 90) -> LocalCluster:
        self._start_node(0)
        self._wait_nodes(1, timeout_s)
        for i in range(1, self.n):
            self._start_node(i)
        self._wait_nodes(self.n, timeout_s)
        return self

    def _wait_nodes(self, n: int, timeout_s: float) -> None:
        code = (
            "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(sum(1 for x in ray.nodes() if x['Alive']))"
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"ray start exited {p.returncode}: see {self.root}")
            r = subprocess.run(
                [sys.executable, "-c", code, self.address], env=self.env, capture_output=True, text=True
            )
            if r.returncode == 0 and r.stdout.strip().isdigit() and int(r.stdout.strip()) >= n:
                return
            time.sleep(1)
        raise TimeoutError(f"the local Ray cluster did not reach {n} nodes in {timeout_s} s ({self.root})")

    def node_pids(self, i: int) -> list[int]:
        return [pid for pid, _ in _group_pids(self.procs[i].pid)]

    def raylet_pid(self, i: int) -> int:
        for pid, cmd in _group_pids(self.procs[i].pid):
            if "/raylet " in cmd or cmd.split(" ")[0].endswith("/raylet"):
                return pid
        raise LookupError(f"node {i} has no raylet")

    def all_pids(self) -> list[int]:
        """Every process of every node, with the workers the raylets started (their own groups)."""
        group = {pid for i in range(len(self.procs)) for pid in self.node_pids(i)}
        return sorted(group | {pid for pid in _children_of(group)})

    def stop(self) -> None:
        pids = self.all_pids()
        for pid in pids:  # workers may have left the node's group: kill them one by one too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    cluster = LocalCluster().start()
    try:
        info = {
            "address": cluster.address,
            "pgids": [p.pid for p in cluster.procs],
            "raylets": [cluster.raylet_pid(i) for i in range(len(cluster.procs))],
        }
        print(json.dumps(info), flush=True)
        sys.stdin.read()
    finally:
        cluster.stop()
