"""train.num_processes = 2 on the CPU: the runner's process relaunches the spec under `accelerate launch`
(gloo), relays rank 0's events, and returns its metrics."""

from __future__ import annotations

import json

from oplora.run.launch import launch_command
from oplora.run.runner import EXIT_OK, run_spec
from tiny_sd import build_tiny_sd


def test_launch_command_cpu():
    cmd = launch_command(2, True, ["a", "b"], port=1234)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[-4:] == ["-m", "oplora.run.launch", "a", "b"]
    assert "--multi_gpu" in launch_command(2, False, ["a"], port=1)


def test_two_cpu_processes(tmp_path):
    a = build_tiny_sd()
    spec = {
        "task": "text_to_image",
        "device": "cpu",
        "model": {"pretrained": str(a / "sd")},
        "adapter": {"kind": "op-lora", "r": 2},
        "data": {"folder": str(a / "data" / "train"), "resolution": 32},
        "train": {"steps": 2, "num_processes": 2},
        "eval": {"prompts": ["a red square painting"], "num_inference_steps": 1, "guidance_scale": 0.0},
    }
    result, code = run_spec(spec, tmp_path / "run")
    assert code == EXIT_OK, result and result["error"]
    m = result["metrics"]
    assert m["num_processes"] == 2 and len(m["loss_curve"]) == 2
    assert (tmp_path / "run" / m["diffusers_lora"]).is_file()
    events = [json.loads(x) for x in (tmp_path / "run" / "events.ndjson").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    assert {"image", "diffusers_lora"} <= {x["kind"] for x in result["artifacts"]}
