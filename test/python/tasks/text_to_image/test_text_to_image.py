"""text_to_image end to end on tiny SD and SDXL pipelines (scripts/make_tiny_sd.py), CPU, offline.

One session run per (model, adapter) is shared by the tests: artifacts, export reloaded in a fresh process
by a stock diffusers pipeline, resume == uninterrupted, plan shapes. Bad inputs are refused before training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from oplora.run.runner import EXIT_OK, run_spec
from oplora.run.spec import validate_spec
from run_helpers import assert_refused
from safetensors.torch import load_file
from tiny_sd import build_tiny_sd

PROMPT = "a red circle painting"
CASES = [("sd", "lora"), ("sd", "op-lora"), ("sdxl", "lora"), ("sdxl", "op-lora")]


@pytest.fixture(scope="session")
def assets() -> Path:
    return build_tiny_sd()


def make_spec(assets: Path, name: str = "sd", kind: str = "lora", **over) -> dict:
    spec = {
        "task": "text_to_image",
        "device": "cpu",
        "seed": 3,
        "model": {"pretrained": str(assets / name)},
        "adapter": {"kind": kind, "r": 4, "lora_alpha": 8},
        "data": {"folder": str(assets / "data" / "train"), "resolution": 32, "random_flip": True},
        "optimizer": {"lr": 3e-2 if kind == "lora" else 1e-2},
        "train": {"steps": 2, "batch_size": 1, "checkpoint_every": 1},
        "eval": {"prompts": [PROMPT], "num_inference_steps": 2, "guidance_scale": 0.0},
    }
    for k, v in over.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) else v
    return spec


@pytest.fixture(scope="session")
def runs(assets, tmp_path_factory) -> dict:
    out = {}
    for model, kind in CASES:
        extra = {}
        if (model, kind) == ("sd", "op-lora"):  # CMMD in one run (tiny CLIP), the others skip it
            extra["eval"] = {
                "reference_folder": str(assets / "data" / "reference"),
                "cmmd_num_images": 2,
                "clip_model": str(assets / "clip"),
            }
            extra["train"] = {"report_to": ["tensorboard"]}  # the tracker test reads its event files
        if (model, kind) == ("sdxl", "op-lora"):  # rsLoRA: the stock reload below must scale alpha / sqrt(r)
            extra["adapter"] = {"use_rslora": True}
        spec = make_spec(assets, model, kind, **extra)
        d = tmp_path_factory.mktemp(f"{model}-{kind}")
        result, code = run_spec(spec, d / "run")
        assert code == EXIT_OK, result and result["error"]
        out[(model, kind)] = (spec, d / "run", result)
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_end_to_end_metrics_and_artifacts(runs, case):
    spec, run_dir, result = runs[case]
    m = result["metrics"]
    assert m["model_kind"] == case[0] and m["steps"] == 2 and len(m["loss_curve"]) == 2
    assert np.isfinite(m["final_loss"]) and m["peak_memory_bytes"] > 0 and m["steps_per_s"] > 0
    tail = [p["loss"] for p in m["loss_curve"][-10:]]  # 2 steps: min(10, steps) = both
    assert m["tail_loss"] == pytest.approx(np.mean(tail)) and m["final_loss"] == tail[-1]
    assert m["lora_parameters"] > 0
    if case[1] == "op-lora":
        assert m["generator_parameters"] > m["lora_parameters"]
    else:
        assert m["generator_parameters"] == 0 and m["trainable_parameters"] == m["lora_parameters"]
    kinds = {a["kind"] for a in result["artifacts"]}
    assert {"image", "grid", "adapter", "diffusers_lora"} <= kinds
    assert (run_dir / m["diffusers_lora"]).is_file() and (run_dir / m["samples"][0]).is_file()
    config = json.loads((run_dir / "adapter" / "unet" / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 8 and config["use_rslora"] is (case == ("sdxl", "op-lora"))
    from safetensors import safe_open

    with safe_open(str(run_dir / m["diffusers_lora"]), "pt") as f:  # diffusers' per-component metadata
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta["unet.use_rslora"] is config["use_rslora"] and meta["unet.lora_alpha"] == 8
    # The PEFT dir holds exactly lora_A / lora_B (no generator, no parametrization leftovers).
    keys = load_file(str(run_dir / "adapter" / "unet" / "adapter_model.safetensors"))
    assert keys and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    events = [json.loads(x) for x in (run_dir / "events.ndjson").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    assert any(e["type"] == "checkpoint" for e in events)


def test_cmmd_reported(runs):
    m = runs[("sd", "op-lora")][2]["metrics"]
    assert m["cmmd_num_reference"] == 4 and m["cmmd_num_generated"] == 2
    assert 0 <= m["cmmd"] < 40 and [p["step"] for p in m["cmmd_curve"]] == [2]


RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    out = {}
    for model, run_dir in json.loads(sys.argv[1]):
        pipe = DiffusionPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        kw = dict(num_inference_steps=2, guidance_scale=0.0, height=32, width=32, output_type="np")
        base = pipe(sys.argv[2], generator=torch.Generator().manual_seed(3), **kw).images[0]
        pipe.load_lora_weights(run_dir + "/diffusers_lora")
        tuned = pipe(sys.argv[2], generator=torch.Generator().manual_seed(3), **kw).images[0]
        trained = np.load(run_dir + "/samples/final/images.npy")[0]
        layers = {}  # LoRA layers the stock loader injected, per component
        for name in ("unet", "text_encoder", "text_encoder_2"):
            m = getattr(pipe, name, None)
            if m is not None:
                layers[name] = sum(1 for n, _ in m.named_modules() if n.endswith(".lora_A"))
        out[run_dir] = {
            "to_trained": float(np.abs(tuned - trained).max()),
            "base_to_trained": float(np.abs(base - trained).max()),
            "lora_layers": layers,
        }
    print(json.dumps(out))
    """
)


def reload_in_fresh_process(runs) -> dict[str, dict]:
    """Load each run's diffusers file into a stock pipeline in a fresh Python process and generate the final
    evaluation's image again: {run_dir: {to_trained, base_to_trained, lora_layers: {component: n}}}."""
    jobs = [[spec["model"]["pretrained"], str(run_dir)] for spec, run_dir, _ in runs]
    p = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(jobs), PROMPT], capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def assert_reproduces_trained_images(diffs: dict[str, dict]) -> None:
    for run_dir, d in diffs.items():
        assert d["to_trained"] < 1e-4, (run_dir, d)  # same images as the trained model
        assert d["base_to_trained"] > 1e-3, (run_dir, d)  # and not the base model's


def test_export_reloads_in_stock_diffusers_fresh_process(runs):
    assert_reproduces_trained_images(reload_in_fresh_process(runs.values()))


def test_resume_equals_uninterrupted(runs, tmp_path):
    spec, run_dir, _ = runs[("sd", "op-lora")]
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run_dir / "checkpoints" / "step-000001", resumed / "checkpoints" / "step-000001")
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["eval"] = {k: v for k, v in spec["eval"].items() if k != "reference_folder"} | {"prompts": []}
    spec = validate_spec(spec)  # the resumed run skips evaluation; its spec.json must equal its spec
    (resumed / "spec.json").write_text(json.dumps(spec))
    result, code = run_spec(spec, resumed, resume=True)
    assert code == EXIT_OK, result and result["error"]
    assert result["metrics"]["resumed_from_step"] == 1
    a = load_file(str(run_dir / "adapter" / "unet" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "unet" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_plan_shapes_match_injected_layers(assets, runs):
    from oplora.tasks.text_to_image.task import base_weights, lora_layer_shapes

    spec, run_dir, _ = runs[("sd", "lora")]
    spec = validate_spec(spec)
    shapes = lora_layer_shapes(spec)
    saved = load_file(str(run_dir / "adapter" / "unet" / "adapter_model.safetensors"))
    assert len(shapes) * 2 == len(saved)
    got = {
        k.removesuffix(".lora_A.weight"): tuple(v.shape)
        for k, v in saved.items()
        if k.endswith("lora_A.weight")
    }
    for name, a_shape, _ in shapes:
        assert any(k.endswith(name.removeprefix("unet.")) and got[k] == a_shape for k in got), name
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    held = [
        UNet2DConditionModel.from_pretrained(str(assets / "sd" / "unet")),
        AutoencoderKL.from_pretrained(str(assets / "sd" / "vae")),
        CLIPTextModel.from_pretrained(str(assets / "sd" / "text_encoder")),
    ]
    assert base_weights(spec)[0] == sum(p.numel() for m in held for p in m.parameters())


# --- bad input, refused before training with the field or file named ---------------------------------------


def _folder(tmp_path, assets, lines: list[str]) -> Path:
    d = tmp_path / "data"
    shutil.copytree(assets / "data" / "train", d)
    (d / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_missing_data_folder(assets, tmp_path):
    assert_refused(
        make_spec(assets, data={"folder": str(tmp_path / "nope")}), tmp_path, "data.folder", "nope"
    )


def test_metadata_line_with_missing_image(assets, tmp_path):
    d = _folder(
        tmp_path, assets, ['{"file_name": "000.png", "text": "a"}', '{"file_name": "gone.png", "text": "b"}']
    )
    assert_refused(make_spec(assets, data={"folder": str(d)}), tmp_path, "line 2", "gone.png")


def test_metadata_line_with_unreadable_image(assets, tmp_path):
    d = _folder(tmp_path, assets, ['{"file_name": "bad.png", "text": "a"}'])
    (d / "bad.png").write_bytes(b"not a png")
    assert_refused(
        make_spec(assets, data={"folder": str(d)}), tmp_path, "line 1", "bad.png", "cannot be read"
    )


def test_missing_caption_column(assets, tmp_path):
    spec = make_spec(assets, data={"caption_column": "caption"})
    assert_refused(spec, tmp_path, "data.caption_column", "'caption'")


def test_resolution_the_vae_cannot_take(assets, tmp_path):
    assert_refused(make_spec(assets, data={"resolution": 36}), tmp_path, "data.resolution", "36")


def test_model_path_not_a_pipeline(assets, tmp_path):
    assert_refused(
        make_spec(assets, model={"pretrained": str(assets / "data")}),
        tmp_path,
        "model.pretrained",
        "not a diffusers pipeline",
    )
    assert_refused(
        make_spec(assets, model={"pretrained": str(tmp_path / "missing")}), tmp_path, "model.pretrained"
    )
    broken = tmp_path / "broken"
    shutil.copytree(assets / "sd", broken)
    (broken / "unet" / "config.json").unlink()  # a download that stopped part-way
    assert_refused(make_spec(assets, model={"pretrained": str(broken)}), tmp_path, "model.pretrained", "unet")


def test_fp16_on_the_cpu_is_refused_before_loading(assets, tmp_path):
    spec = make_spec(assets, train={"mixed_precision": "fp16"})
    assert_refused(spec, tmp_path, 'train.mixed_precision: "fp16" needs a GPU')


def test_unknown_target_module(assets, tmp_path):
    spec = make_spec(assets)
    spec["adapter"]["target_modules"] = ["no_such_proj"]
    assert_refused(spec, tmp_path, "adapter.target_modules", "no_such_proj")


def _generate(run_dir, out, *extra):
    cmd = [sys.executable, "-m", "oplora", "generate", str(run_dir), "--prompt", PROMPT, "--out", str(out)]
    return subprocess.run([*cmd, "--seed", "3", *extra], capture_output=True, text=True, timeout=600)


def test_generate_uses_the_stock_diffusers_loader_and_compares_with_the_base(runs, tmp_path):
    """`python -m oplora generate --compare`: base | adapter side by side; the adapter half is the final
    evaluation's image (same prompt, seed, steps), the base half is not."""
    from PIL import Image

    spec, run_dir, _ = runs[("sdxl", "op-lora")]
    out = tmp_path / "img" / "cmp.png"
    p = _generate(run_dir, out, "--compare")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["image"] == str(out.resolve())
    img = np.asarray(Image.open(out), dtype=np.float32) / 255
    assert img.shape == (32, 64, 3)
    trained = np.load(run_dir / "samples" / "final" / "images.npy")[0]
    base, tuned = img[:, :32], img[:, 32:]
    assert np.abs(tuned - trained).max() <= 1 / 255 + 1e-6  # PNG rounding only
    assert np.abs(base - trained).max() > 1e-2
    assert list(tmp_path.joinpath("img").iterdir()) == [out]  # no temp file left


def test_generate_refuses_wrong_runs_and_outputs(runs, tmp_path):
    spec, run_dir, _ = runs[("sd", "lora")]
    mf = tmp_path / "mf"
    mf.mkdir()
    (mf / "spec.json").write_text(json.dumps({"task": "matrix_factorization", "device": "cpu"}))
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("diffusers_lora"))
    (tmp_path / "file").write_text("x")
    cases = [
        (mf, tmp_path / "a.png", "a matrix_factorization run; this needs a text_to_image run"),
        (bare, tmp_path / "a.png", "pytorch_lora_weights.safetensors: missing"),
        (tmp_path / "nowhere", tmp_path / "a.png", "not a run directory (no spec.json)"),
        (run_dir, tmp_path / "a.jpg", "must end in .png"),
        (run_dir, tmp_path / "file" / "a.png", f"--out: {tmp_path / 'file'} is a file, not a folder"),
    ]
    for run, out, message in cases:
        p = _generate(run, out)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (run, p.stderr)
        assert not out.exists()


def test_tensorboard_gets_loss_lr_cmmd_and_the_sample_images(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, result = runs[("sd", "op-lora")]
    acc = EventAccumulator(
        str(run_dir / "tracking" / "tensorboard" / run_dir.name), size_guidance={"images": 0}
    )
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    curve = [(p["step"], p["loss"]) for p in result["metrics"]["loss_curve"]]
    assert [s for s, _ in loss] == [s for s, _ in curve]
    assert all(abs(a - b) <= 1e-6 * max(1, abs(b)) for (_, a), (_, b) in zip(loss, curve, strict=True))
    assert [e.step for e in acc.Scalars("train/lr")] == [1, 2]
    assert abs(acc.Scalars("final/cmmd")[0].value - result["metrics"]["cmmd"]) <= 1e-5
    images = acc.Tags()["images"]
    assert images and all(t.startswith("images/") for t in images), acc.Tags()
    assert acc.Images(images[0])[0].width == 32


def test_bf16_mixed_precision_trains(assets, tmp_path):
    """A bf16 run, whose pipeline load_pipeline brings up with the UNet and text encoder in bf16 and the VAE in
    fp32 (test_plan checks those bytes against the plan), trains, and its exported LoRA stays fp32."""
    spec = make_spec(assets, train={"steps": 1, "mixed_precision": "bf16"}, eval={"prompts": []})
    result, code = run_spec(spec, tmp_path / "run")
    assert code == EXIT_OK, result and result["error"]
    assert np.isfinite(result["metrics"]["final_loss"])
    weights = load_file(str(tmp_path / "run" / "diffusers_lora" / "pytorch_lora_weights.safetensors"))
    assert weights and {w.dtype for w in weights.values()} == {torch.float32}


def test_a_diverging_run_fails_and_keeps_its_last_finite_checkpoint(assets, tmp_path):
    """lr 1e30: step 1's update is finite (huge), step 2's loss is NaN. The run stops at step 2 before the
    update: result.json says TrainingDiverged with the step and lr, step 1's checkpoint stays and is finite,
    and neither a step-2 checkpoint nor an adapter is written."""
    spec = make_spec(
        assets,
        kind="op-lora",
        optimizer={"lr": 1e30},
        train={"steps": 3, "gradient_accumulation_steps": 2},
        eval={"prompts": []},
    )
    result, code = run_spec(spec, tmp_path / "run")
    assert code == 1 and result["status"] == "failed" and result["error"]["type"] == "TrainingDiverged"
    assert result["error"]["message"] == (
        "training diverged at step 2: loss nan with lr 1e+30; lower optimizer.lr or train.max_grad_norm (was 1)"
    )
    run = tmp_path / "run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    weights = load_file(str(run / "checkpoints" / "step-000001" / "trainable.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert not (run / "diffusers_lora").exists() and not (run / "adapter").exists()


def test_likely_mistakes_are_warning_events_and_the_run_goes_on(assets, tmp_path):
    n = len((assets / "data" / "train" / "metadata.jsonl").read_text().splitlines())
    spec = make_spec(
        assets, train={"steps": 1, "lr_warmup_steps": 5, "batch_size": n + 1}, eval={"prompts": []}
    )
    result, code = run_spec(spec, tmp_path / "run")
    assert code == EXIT_OK, result and result["error"]
    events = [json.loads(x) for x in (tmp_path / "run" / "events.ndjson").read_text().splitlines()]
    warnings = [(e["field"], e["message"]) for e in events if e["type"] == "warning"]
    assert warnings == [
        ("train.lr_warmup_steps", "5 >= train.steps 1: the lr never reaches optimizer.lr"),
        ("train.batch_size", f"{n + 1} is more than the {n} training examples: each batch repeats some"),
    ]
    first_step = next(i for i, e in enumerate(events) if e["type"] == "step")
    assert max(i for i, e in enumerate(events) if e["type"] == "warning") < first_step  # said before training
