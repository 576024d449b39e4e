"""The warm worker (python/oplora/worker.py): many runs in one process, each through `run_spec`.

One worker process serves, in order: an invalid spec (refused, exit 2), a run that fails (a CUDA device
that does not exist), a long run cancelled by SIGTERM mid-training (a cancelled result, and the worker
keeps serving: the runner's signal handlers are restored after each run), a run that succeeds. Closing
stdin ends it with exit 0.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

SMALL = {
    "task": "matrix_factorization",
    "device": "cpu",
    "matrix": {"rows": 8, "cols": 8},
    "adapter": {"kind": "op-lora", "r": 2, "generator": {"embedding_dim": 4, "hidden_dim": 4}},
    "train": {"steps": 20, "log_every": 5},
}


class Channel:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def read(self, timeout: float = 120.0) -> dict[str, Any]:
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            assert ready, "no message from the worker in time"
            chunk = os.read(self.fd, 65536)
            assert chunk, "the worker closed its channel"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def until_reply(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        events = []
        while True:
            msg = self.read()
            if "reply" in msg:
                return events, msg
            events.append(msg)


def test_worker_serves_many_runs(tmp_path: Path) -> None:
    r, w = os.pipe()
    env = {**os.environ, "OPLORA_WORKER_FD": str(w)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oplora", "worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(w,),
        env=env,
    )
    os.close(w)
    ch = Channel(r)
    assert proc.stdin is not None

    def send(req_id: str, spec: dict[str, Any], name: str) -> None:
        line = json.dumps({"id": req_id, "spec": spec, "out_dir": str(tmp_path / name)}) + "\n"
        proc.stdin.write(line.encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    try:
        ready = ch.read()
        assert ready["worker"] == "ready" and ready["pid"] == proc.pid

        send("bad", {**SMALL, "adapter": {"kind": "op-lora", "r": -1}}, "bad")
        events, reply = ch.until_reply()
        assert reply == {"reply": "bad", "code": 2, "result": None}
        assert events[-1]["type"] == "error" and "adapter.r" in events[-1]["error"]["message"]
        assert not (tmp_path / "bad").exists()

        send("gpu", {**SMALL, "device": "cuda:7"}, "gpu")
        _, reply = ch.until_reply()
        assert reply["code"] == 1 and reply["result"]["status"] == "failed"
        assert "cuda:7" in reply["result"]["error"]["message"]

        send("long", {**SMALL, "train": {"steps": 10_000_000, "log_every": 5}}, "long")
        while ch.read().get("type") != "step":
            pass
        proc.send_signal(signal.SIGTERM)
        events, reply = ch.until_reply()
        assert reply["code"] == 130 and reply["result"]["status"] == "cancelled"
        assert json.loads((tmp_path / "long" / "result.json").read_text())["status"] == "cancelled"

        send("ok", SMALL, "ok")
        events, reply = ch.until_reply()
        assert reply["code"] == 0 and reply["result"]["status"] == "succeeded"
        assert [e["type"] for e in events][0] == "started" and events[-1]["type"] == "completed"
        assert json.loads((tmp_path / "ok" / "result.json").read_text())["metrics"]["final_loss"] >= 0

        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)
