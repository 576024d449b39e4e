"""llava end to end through the runner (LoRA and OP-LoRA, and both with DoRA): train, evaluate, export; then
stock PEFT, in a fresh process, loads the adapter on a fresh tiny LLaVA and reproduces the trained logits and
eval loss; resumed == uninterrupted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from oplora.run.runner import EXIT_OK, run_spec
from safetensors.torch import load_file
from tiny_llava import build_tiny_llava, llava_spec, one_thread  # noqa: F401

OP_GENERATOR = {"embedding_dim": 16, "hidden_dim": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tiny_llava():
    return build_tiny_llava()


def _ok(spec, out, resume=False):
    result, code = run_spec(spec, out, resume=resume)
    assert code == EXIT_OK, result and result["error"]
    return result


@pytest.fixture(scope="module")
def lora_run(tiny_llava, tmp_path_factory):
    """LoRA with accumulation, a data-loader worker, the projector trained in full, merged weights exported."""
    spec = llava_spec(
        tiny_llava,
        adapter={"kind": "lora", "r": 4, "train_projector": True},
        optimizer={"lr": 3e-3, "projector_lr": 1e-3},
        train={"steps": 3, "batch_size": 2, "gradient_accumulation_steps": 2, "dataloader_num_workers": 1},
        export={"merged": True, "reference_logits": True},
    )
    out = tmp_path_factory.mktemp("llava") / "lora"
    return _ok(spec, out), out


@pytest.fixture(scope="module")
def op_run(tiny_llava, tmp_path_factory):
    """OP-LoRA with non-reentrant gradient checkpointing, a checkpoint and an eval at step 2 of 4."""
    spec = llava_spec(
        tiny_llava,
        adapter={"kind": "op-lora", "r": 4, "generator": OP_GENERATOR},
        train={
            "steps": 4,
            "batch_size": 2,
            "checkpoint_every": 2,
            "eval_every": 2,
            "gradient_checkpointing": True,
        },
        export={"reference_logits": True},
    )
    out = tmp_path_factory.mktemp("llava") / "op"
    return _ok(spec, out), out, spec


@pytest.fixture(scope="module")
def dora_runs(tiny_llava, tmp_path_factory):
    """DoRA (use_dora) for both kinds: LoRA-DoRA with merged weights, OP-DoRA (magnitude generated) with rsLoRA."""
    out = {}
    for kind, extra, export in [
        ("lora", {}, {"merged": True}),
        ("op-lora", {"use_rslora": True, "generator": {**OP_GENERATOR, "magnitude": "generated"}}, {}),
    ]:
        spec = llava_spec(
            tiny_llava,
            adapter={"kind": kind, "r": 4, "use_dora": True, **extra},
            train={"steps": 3, "batch_size": 2},
            export={"reference_logits": True, **export},
        )
        d = tmp_path_factory.mktemp("llava") / f"{kind}-dora"
        out[kind] = (_ok(spec, d), d)
    return out


def test_dora_runs_export_stock_peft_dora_adapters(dora_runs):
    for kind, (result, out) in dora_runs.items():
        cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert cfg["use_dora"] is True and cfg["use_rslora"] is (kind == "op-lora")
        keys = load_file(str(out / "adapter" / "adapter_model.safetensors")).keys()
        layers = {k.removesuffix(".lora_A.weight") for k in keys if k.endswith(".lora_A.weight")}
        assert layers and set(keys) == {
            f"{x}.{s}" for x in layers for s in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector")
        }
        m = result["metrics"]  # the plan counts what the run trained and exported, magnitudes included
        assert (
            m["lora_parameters"]
            == m["plan"]["lora_parameters"]
            == sum(v.numel() for v in load_file(str(out / "adapter" / "adapter_model.safetensors")).values())
        ), kind
        if kind == "op-lora":
            assert m["trainable_parameters"] == m["plan"]["generator_parameters"], kind


def test_lora_run_trains_evaluates_and_exports(lora_run):
    result, out = lora_run
    m = result["metrics"]
    assert [p["step"] for p in m["loss_curve"]] == [1, 2, 3] and all(p["loss"] > 0 for p in m["loss_curve"])
    assert m["predictions_path"] == "predictions/step-000003.jsonl"
    assert m["eval_loss"] > 0 and 0.0 <= m["vqa_accuracy"] <= 1.0
    assert (
        m["plan"]["lora_parameters"]
        == m["lora_parameters"]
        == 2 * (4 * 512 + 4 * 384 + 4 * 768 + 2 * 768) // 2
    )
    assert m["trainable_parameters"] > m["lora_parameters"]  # + the projector
    assert m["peak_memory_bytes"] > 0 and m["tokens_per_second"] > 0 and m["wall_s"] > 0
    kinds = {a["kind"] for a in result["artifacts"]}
    assert {"adapter", "predictions", "file"} <= kinds
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] == ["multi_modal_projector"] and cfg["r"] == 4
    lines = (out / "predictions" / "step-000003.jsonl").read_text().splitlines()
    assert len(lines) == 6 and set(json.loads(lines[0])) == {
        "id",
        "question",
        "prediction",
        "answers",
        "accuracy",
    }


def test_op_lora_run_collapses_to_a_plain_adapter(op_run):
    result, out, _ = op_run
    m = result["metrics"]
    assert [e["step"] for e in m["evals"]] == [2, 4]
    assert m["trainable_parameters"] == m["plan"]["generator_parameters"] > m["lora_parameters"]
    keys = load_file(str(out / "adapter" / "adapter_model.safetensors")).keys()
    assert keys and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    assert not any("parametrizations" in k or "generator" in k for k in keys)
    assert (out / "checkpoints" / "step-000002" / "state.json").exists()


_RELOAD = r"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoProcessor, LlavaForConditionalGeneration
from safetensors.torch import load_file
from oplora.tasks.llava.data import Encoder, collate, load_records
from oplora.tasks.llava.train import eval_loss, forward_logits

root, runs = sys.argv[1], sys.argv[2:]
out = {}
for run in runs:
    proc = AutoProcessor.from_pretrained(run + "/adapter")
    enc = Encoder(proc, 64)
    recs = load_records(root + "/data/eval.json", root + "/data/images", "eval")
    batch = collate([enc.encode(r) for r in recs[:3]], enc)
    ref = load_file(run + "/reference_logits.safetensors")["logits"]
    models = {"adapter": PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(root + "/model"), run + "/adapter")}
    try:
        models["merged"] = LlavaForConditionalGeneration.from_pretrained(run + "/merged")
    except OSError:
        pass
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            diff = (forward_logits(model, batch) - ref).abs().max().item()
            loss = eval_loss(model, enc, recs, 3, torch.device("cpu"), torch.float32)
        out[run + ":" + name] = {"max_logit_diff": diff, "eval_loss": loss}
print(json.dumps(out))
"""


def test_stock_peft_reproduces_the_trained_model_in_a_fresh_process(tiny_llava, lora_run, op_run, dora_runs):
    runs = {
        "lora": lora_run[1],
        "op": op_run[1],
        "lora-dora": dora_runs["lora"][1],
        "op-dora": dora_runs["op-lora"][1],
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(tiny_llava), *map(str, runs.values())],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    results = {
        "lora": lora_run[0],
        "op": op_run[0],
        "lora-dora": dora_runs["lora"][0],
        "op-dora": dora_runs["op-lora"][0],
    }
    assert set(got) == {f"{runs[a]}:adapter" for a in runs} | {
        f"{runs[a]}:merged" for a in ("lora", "lora-dora")
    }
    for arm, run in runs.items():
        for key in (k for k in got if k.startswith(f"{run}:")):
            assert got[key]["max_logit_diff"] < 1e-4, (key, got[key])
            assert got[key]["eval_loss"] == pytest.approx(results[arm]["metrics"]["eval_loss"], abs=1e-5), key


def test_resumed_equals_uninterrupted(op_run, tmp_path):
    """Keep only spec.json and the step-2 checkpoint of the 4-step run, resume, and compare."""
    result, out, spec = op_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(out / "spec.json", resumed / "spec.json")
    shutil.copytree(out / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    again = _ok(spec, resumed, resume=True)
    a, b = result["metrics"], again["metrics"]
    assert [p["step"] for p in b["loss_curve"]] == [1, 2, 3, 4]
    assert [p["loss"] for p in b["loss_curve"]] == pytest.approx(
        [p["loss"] for p in a["loss_curve"]], abs=1e-6
    )
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], abs=1e-6)
    wa = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=1e-5)


def test_two_cpu_processes_train_and_export(tiny_llava, tmp_path):
    """train.num_processes = 2: the run re-launches itself under `accelerate launch` (gloo on the CPU);
    each process takes its half of every global batch, rank 0 evaluates and exports."""
    spec = llava_spec(tiny_llava, train={"steps": 2, "batch_size": 1, "num_processes": 2})
    spec["eval"]["vqa"] = False
    result = _ok(spec, tmp_path / "ddp")
    m = result["metrics"]
    assert [p["step"] for p in m["loss_curve"]] == [1, 2] and m["eval_loss"] > 0
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").exists()
    events = [json.loads(line) for line in (tmp_path / "ddp" / "events.ndjson").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]


def test_answer_loads_the_adapter_the_stock_way_and_matches_the_eval(tiny_llava, op_run, tmp_path):
    """`python -m oplora answer` (fresh process, PeftModel.from_pretrained) gives the final eval's answer."""
    _, out, _ = op_run
    pred = json.loads((out / "predictions" / "step-000004.jsonl").read_text().splitlines()[0])
    record = json.loads((tiny_llava / "data" / "eval.json").read_text())[0]
    image = tiny_llava / "data" / "images" / record["image"]

    def answer(run, img=image):
        cmd = [
            "answer",
            str(run),
            "--image",
            str(img),
            "--question",
            pred["question"],
            "--max-new-tokens",
            "3",
        ]
        return subprocess.run(
            [sys.executable, "-m", "oplora", *cmd], capture_output=True, text=True, timeout=300
        )

    p = answer(out)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["answer"] == pred["prediction"]
    # refused before any model loads: a missing image, a run whose adapter files are gone
    p = answer(out, tmp_path / "nope.png")
    assert p.returncode == 2 and f"--image: {tmp_path / 'nope.png'} does not exist" in p.stderr
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("adapter_model.safetensors"))
    p = answer(bare)
    assert p.returncode == 2 and "adapter_model.safetensors: missing" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_a_warm_up_as_long_as_the_run_is_a_warning_event(tiny_llava, tmp_path):
    spec = llava_spec(tiny_llava, train={"steps": 1, "batch_size": 2, "lr_warmup_steps": 1})
    spec["data"] = {k: v for k, v in spec["data"].items() if k != "eval_json"}
    _ok(spec, tmp_path / "run")
    events = [json.loads(x) for x in (tmp_path / "run" / "events.ndjson").read_text().splitlines()]
    assert [(e["field"], e["message"]) for e in events if e["type"] == "warning"] == [
        ("train.lr_warmup_steps", "1 >= train.steps 1: the lr never reaches optimizer.lr")
    ]
