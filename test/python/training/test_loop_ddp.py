"""optimizer_step under DDP: two CPU processes (gloo on 127.0.0.1) with OP-LoRA's one generation per
optimizer step and gradient accumulation train the generator as one process over the same global batch.

Why it holds: the micro-batches' backwards stop at the detached factor leaves, so no generator parameter
gets a gradient there (accelerate's no_sync on the first micro-batch has nothing to hold back); on the
last micro-batch, ``FactorStep.backward`` is a second backward pass whose gradient hooks are DDP's, which
all-reduce (average) the generator's gradients before clipping and the step. With DoRA magnitudes trained
directly ("dora-direct"), those get DDP's hooks in the micro-batch backwards as any parameter would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_train_steps import train
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_train_steps.py")
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("mode", ["lora", "dora-direct"])
def test_two_processes_equal_one_process_over_the_global_batch(tmp_path, mode):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(tmp_path),
        mode,
    ]
    python_path = os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [load_file(str(tmp_path / f"rank-{r}.safetensors")) for r in (0, 1)]
    single = train(0, 1, mode=mode)
    start = train(0, 1, steps=0, mode=mode)
    assert ranks[0].keys() == ranks[1].keys() == single.keys()
    assert any("magnitude" in n for n in single) is (mode == "dora-direct")
    for name, want in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP all-reduced the generator's grads
        trained = float((want - start[name]).norm() / want.norm())
        # every tensor moved, 30x the tolerance below: an unaveraged gradient would show
        assert trained > 3e-5, (name, trained)
        err = float((ranks[0][name] - want).norm() / want.norm())
        assert err <= 1e-6, (name, err)
