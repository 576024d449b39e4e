"""The PEFT dirs a text_to_image run exports (adapter/unet, adapter/text_encoder[_2]) load the stock ways.

One 2-step run per (model, adapter kind), text encoders trained too. A fresh Python process loads the
run's base pipeline, wraps each component with `PeftModel.from_pretrained(component, RUN/adapter/<part>)`
(PEFT adapts the component in place, so the pipeline draws with it) and draws the final evaluation's image
again: PEFT warns of no missing adapter keys, loads every key in the file, and the image is the trained
model's, not the base's. A second pass loads the UNet dir through diffusers' `load_lora_adapter` instead, a
third the run's diffusers file through `pipe.load_lora_weights`. DoRA runs (LoRA-DoRA, OP-DoRA with the
magnitude generated, and direct with rsLoRA on SDXL) export stock PEFT DoRA adapters that load the same ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from oplora.plan import plan
from oplora.run.runner import EXIT_OK, run_spec
from safetensors.torch import load_file
from test_text_to_image import CASES, PROMPT, make_spec
from tiny_sd import build_tiny_sd

PARTS = {"sd": ["unet", "text_encoder"], "sdxl": ["unet", "text_encoder", "text_encoder_2"]}
DORA = {"use_dora": True}
EXPORT_CASES = [(m, k, {}) for m, k in CASES] + [
    ("sd", "lora", DORA),
    ("sd", "op-lora", {**DORA, "generator": {"magnitude": "generated"}}),
    ("sdxl", "op-lora", {**DORA, "use_rslora": True, "generator": {"magnitude": "direct"}}),
]
IDS = [
    f"{m}-{k}"
    + ("-dora" if a else "")
    + (f"-{a['generator']['magnitude']}" if "generator" in a else "")
    + ("-rslora" if a.get("use_rslora") else "")
    for m, k, a in EXPORT_CASES
]


@pytest.fixture(scope="module")
def peft_runs(tmp_path_factory) -> dict:
    assets = build_tiny_sd()
    out = {}
    for (model, kind, adapter), name in zip(EXPORT_CASES, IDS, strict=True):
        spec = make_spec(
            assets,
            model,
            kind,
            adapter={"train_text_encoder": True, **adapter},
            train={"checkpoint_every": 0},
        )
        run_dir = tmp_path_factory.mktemp(f"{name}-export") / "run"
        result, code = run_spec(spec, run_dir)
        assert code == EXIT_OK, result and result["error"]
        assert sorted(result["metrics"]["adapter_dirs"]) == sorted(PARTS[model])
        out[name] = (spec["model"]["pretrained"], str(run_dir))
    return out


RELOAD = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np, torch
    from diffusers import DiffusionPipeline
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    def draw(pipe):
        kw = dict(num_inference_steps=2, guidance_scale=0.0, height=32, width=32, output_type="np")
        return pipe(sys.argv[2], generator=torch.Generator().manual_seed(3), **kw).images[0]

    def pipeline(model):
        pipe = DiffusionPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    out = {}
    for model, run_dir, parts in json.loads(sys.argv[1]):
        trained = np.load(run_dir + "/samples/final/images.npy")[0]
        pipe = pipeline(model)
        base = draw(pipe)
        keys, said = {}, []
        for part in parts:
            path = run_dir + "/adapter/" + part
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                peft = PeftModel.from_pretrained(getattr(pipe, part), path).eval()
            said += [str(w.message) for w in caught if "adapter keys" in str(w.message)]
            saved = set(load_file(path + "/adapter_model.safetensors"))
            loaded = set(get_peft_model_state_dict(peft))
            keys[part] = {"n": len(saved), "not_loaded": sorted(saved - loaded), "missing": sorted(loaded - saved)}
        tuned = draw(pipe)
        pipe = pipeline(model)  # the UNet dir through diffusers' loader, the encoders through PEFT
        pipe.unet.load_lora_adapter(
            run_dir + "/adapter/unet", weight_name="adapter_model.safetensors", prefix="base_model.model"
        )
        for part in parts[1:]:
            PeftModel.from_pretrained(getattr(pipe, part), run_dir + "/adapter/" + part)
        diffusers_unet = draw(pipe)
        pipe = pipeline(model)  # the run's diffusers file, every component, through the stock loader
        pipe.load_lora_weights(run_dir + "/diffusers_lora")
        out[run_dir] = {
            "keys": keys,
            "warnings": said,
            "to_trained": float(np.abs(tuned - trained).max()),
            "base_to_trained": float(np.abs(base - trained).max()),
            "diffusers_unet_to_trained": float(np.abs(diffusers_unet - trained).max()),
            "diffusers_file_to_trained": float(np.abs(draw(pipe) - trained).max()),
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def reloaded(peft_runs) -> dict:
    jobs = [[model, run_dir, PARTS[name.split("-")[0]]] for name, (model, run_dir) in peft_runs.items()]
    p = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(jobs), PROMPT], capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", IDS)
def test_peft_dirs_load_with_peft_model_from_pretrained(peft_runs, reloaded, case):
    d = reloaded[peft_runs[case][1]]
    assert d["warnings"] == [], d["warnings"]  # PEFT found every adapter key it expected
    assert sorted(d["keys"]) == sorted(PARTS[case.split("-")[0]])
    for part, k in d["keys"].items():
        assert k["n"] > 0 and k["not_loaded"] == [] and k["missing"] == [], (part, k)
    assert d["to_trained"] < 1e-4, d  # the trained model's image
    assert d["base_to_trained"] > 1e-3, d  # and not the base model's


@pytest.mark.parametrize("case", IDS)
def test_unet_dir_loads_with_diffusers_load_lora_adapter(peft_runs, reloaded, case):
    """The same file, read by diffusers with prefix="base_model.model": the header's LoraConfig gives it
    lora_alpha (8, not r = 4), so the image is again the trained model's."""
    assert reloaded[peft_runs[case][1]]["diffusers_unet_to_trained"] < 1e-4


@pytest.mark.parametrize("case", IDS)
def test_diffusers_file_loads_with_load_lora_weights(peft_runs, reloaded, case):
    assert reloaded[peft_runs[case][1]]["diffusers_file_to_trained"] < 1e-4


@pytest.mark.parametrize("case", [i for i in IDS if "dora" in i])
def test_dora_exports_are_stock_peft_dora(peft_runs, case):
    """Every PEFT dir of a DoRA run says use_dora and holds each LoRA layer's magnitude next to A and B
    (PEFT's key, `lora_magnitude_vector`), and nothing of the generator; rsLoRA survives too."""
    run_dir = peft_runs[case][1]
    stored = 0
    for part in PARTS[case.split("-")[0]]:
        config = json.loads(open(f"{run_dir}/adapter/{part}/adapter_config.json").read())
        assert config["use_dora"] is True and config["use_rslora"] is ("rslora" in case)
        keys = set(load_file(f"{run_dir}/adapter/{part}/adapter_model.safetensors"))
        layers = {k.removesuffix(".lora_A.weight") for k in keys if k.endswith(".lora_A.weight")}
        assert layers and keys == {
            f"{layer}.{suffix}"
            for layer in layers
            for suffix in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector")
        }, sorted(keys)[:6]
        stored += sum(
            v.numel() for v in load_file(f"{run_dir}/adapter/{part}/adapter_model.safetensors").values()
        )
    # The plan counts what the run trained and stored: A, B and the magnitudes (d_out per layer).
    metrics = json.loads(open(f"{run_dir}/result.json").read())["metrics"]
    planned = plan(json.loads(open(f"{run_dir}/spec.json").read()))
    assert metrics["lora_parameters"] == planned["lora_parameters"] == stored
    assert metrics["trainable_parameters"] == planned["trainable_parameters"]
    assert metrics["generator_parameters"] == planned["generator_parameters"]
