"""text_to_image with adapter.train_text_encoder: OP-LoRA on the UNet and the text encoder(s) of tiny SD
(one encoder) and tiny SDXL (two), 2 steps each on the CPU.

The text encoders' LoRA factors move away from their (seeded) initial values, the diffusers file carries
each encoder's keys and LoraConfig metadata, and a stock pipeline in a fresh process loads the file (text
encoders included) and draws the trained model's images again (test_text_to_image's reload machinery).
"""

from __future__ import annotations

import json

import pytest
import torch
from oplora.run.runner import EXIT_OK, run_spec
from oplora.run.spec import validate_spec
from safetensors import safe_open
from safetensors.torch import load_file
from test_text_to_image import assert_reproduces_trained_images, make_spec, reload_in_fresh_process
from tiny_sd import build_tiny_sd

ENCODERS = {"sd": ["text_encoder"], "sdxl": ["text_encoder", "text_encoder_2"]}
TE_TARGETS = ["k_proj", "out_proj", "q_proj", "v_proj"]  # the schema's default text_encoder_target_modules


@pytest.fixture(scope="session")
def assets():
    return build_tiny_sd()


def te_spec(assets, model: str) -> dict:
    return make_spec(
        assets, model, "op-lora", adapter={"train_text_encoder": True}, train={"checkpoint_every": 0}
    )


@pytest.fixture(scope="module")
def te_runs(assets, tmp_path_factory) -> dict:
    out = {}
    for model in ENCODERS:
        spec = te_spec(assets, model)
        d = tmp_path_factory.mktemp(f"{model}-text-encoder")
        result, code = run_spec(spec, d / "run")
        assert code == EXIT_OK, result and result["error"]
        out[model] = (spec, d / "run", result)
    return out


def initial_text_encoder_lora(spec: dict, run_dir) -> dict[str, dict[str, torch.Tensor]]:
    """Each text encoder's LoRA factors before the first step: the run's own set-up (same spec, same seed),
    collapsed without training, as PEFT state dicts under the adapter dir's keys (a PeftModel's prefix)."""
    from oplora.adapter import apply_adapter
    from oplora.collapse import collapse
    from oplora.run.events import EventSink
    from oplora.run.runner import RunContext
    from oplora.tasks.text_to_image.task import Trainer
    from oplora.training.export import PEFT_PREFIX
    from peft.utils import get_peft_model_state_dict

    spec = validate_spec(spec)
    ctx = RunContext(spec=spec, run_dir=run_dir, events=EventSink(None), device=torch.device("cpu"))
    trainer = Trainer(spec, ctx)
    op, _ = apply_adapter(trainer.denoiser, spec["adapter"])
    collapse(op)
    return {
        name: {
            f"{PEFT_PREFIX}.{k}": v.detach().float().clone() for k, v in get_peft_model_state_dict(te).items()
        }
        for name, _, te in trainer.encoders
    }


@pytest.mark.parametrize("model", list(ENCODERS))
def test_text_encoder_lora_trained_from_its_initial_values(te_runs, model, tmp_path):
    spec, run_dir, result = te_runs[model]
    assert result["metrics"]["model_kind"] == model
    assert sorted(result["metrics"]["adapter_dirs"]) == sorted(["unet", *ENCODERS[model]])
    initial = initial_text_encoder_lora(spec, tmp_path / "init")
    assert sorted(initial) == ENCODERS[model]
    for name in ENCODERS[model]:
        cfg = json.loads((run_dir / "adapter" / name / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == TE_TARGETS
        trained = load_file(str(run_dir / "adapter" / name / "adapter_model.safetensors"))
        init = initial[name]
        assert trained and trained.keys() == init.keys(), name
        # 2 layers x 4 projections in each tiny CLIP text encoder, A and B each
        assert len(trained) == 2 * 4 * 2, sorted(trained)
        ratios = []
        for k, t in trained.items():
            t0 = init[k]
            assert t.shape == t0.shape, k
            if k.endswith("lora_B.weight"):
                assert t0.abs().max() == 0, k  # B = 0 at step 0 (OP-LoRA's init)
            if model == "sdxl" and name == "text_encoder" and ".layers.1." in k:
                # SDXL conditions on the first encoder's penultimate hidden states (and the second's pooled
                # output): its last layer gets no gradient and must still hold exactly the seeded init.
                torch.testing.assert_close(t, t0, rtol=0, atol=0)
            elif k.endswith("lora_B.weight"):
                assert t.abs().max() > 1e-4, k  # trained away from 0
            else:
                change = float((t - t0).norm())
                assert change > 1e-6, k
                ratios.append(change / float(t0.norm()))
        # trained from this very init (2 small steps, relative change ~0.9), not from another draw (~1.8):
        # the init is the seed's
        assert sum(ratios) / len(ratios) < 1.2, ratios


@pytest.mark.parametrize("model", list(ENCODERS))
def test_diffusers_file_has_text_encoder_keys_and_metadata(te_runs, model):
    _, run_dir, _ = te_runs[model]
    path = run_dir / "diffusers_lora" / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    weights = load_file(str(path))
    assert {k.split(".")[0] for k in weights} == {"unet", *ENCODERS[model]}
    for name in ENCODERS[model]:
        assert meta[f"{name}.r"] == 4 and meta[f"{name}.lora_alpha"] == 8, name
        assert sorted(meta[f"{name}.target_modules"]) == TE_TARGETS
        # the file's tensors are the PEFT dir's, under diffusers' names
        peft = load_file(str(run_dir / "adapter" / name / "adapter_model.safetensors"))
        mine = {k: v for k, v in weights.items() if k.startswith(name + ".")}
        assert len(mine) == len(peft)
        for k, v in peft.items():
            d = (
                name
                + "."
                + k.removeprefix("base_model.model.")
                .replace("lora_A.weight", "lora_linear_layer.down.weight")
                .replace("lora_B.weight", "lora_linear_layer.up.weight")
            )
            torch.testing.assert_close(mine[d], v, rtol=0, atol=0)


def test_stock_pipeline_in_fresh_process_reproduces_trained_images(te_runs):
    diffs = reload_in_fresh_process(te_runs.values())
    assert_reproduces_trained_images(diffs)
    for model, (_, run_dir, _) in te_runs.items():
        layers = diffs[str(run_dir)]["lora_layers"]
        for name in ENCODERS[model]:  # the stock loader adapted every trained text-encoder layer
            assert layers[name] == 2 * 4, (model, name, layers)
