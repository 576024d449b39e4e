"""quick.py: JSON envelopes, errors as data, target modules from configs on meta, adapter reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oplora.run import quick


def call(fn, **kwargs):  # type: ignore[no-untyped-def]
    return json.loads(fn(json.dumps(kwargs)))


def test_envelope_ok_and_error() -> None:
    assert call(quick.echo, a=1) == {"ok": True, "value": {"a": 1}}
    out = call(quick.read_adapter, dir="/no/such/dir")
    assert out["ok"] is False
    assert out["error"]["type"] == "FileNotFoundError"
    assert "Traceback" in out["error"]["traceback"]


def test_stdout_is_kept_clean(capsys: pytest.CaptureFixture[str]) -> None:
    quick.echo(json.dumps({"x": 1}))
    assert capsys.readouterr().out == ""


def test_list_target_modules_mf() -> None:
    out = call(quick.list_target_modules, task="matrix_factorization")
    assert out["value"]["suffixes"] == {"linear": 1}


def test_list_target_modules_transformers(tmp_path: Path) -> None:
    from tiny_models import llama_config

    llama_config(hidden=16, heads=2, kv_heads=2, vocab=64).save_pretrained(tmp_path)
    out = call(quick.list_target_modules, model=str(tmp_path))
    assert out["ok"], out
    assert out["value"]["suffixes"]["q_proj"] == 2
    assert {"name": "layers.0.self_attn.q_proj", "type": "Linear", "shape": [16, 16]} in out["value"][
        "modules"
    ]


def test_list_target_modules_diffusers_pipeline(tmp_path: Path) -> None:
    from tiny_models import unet

    unet(channels=(8, 16), sample_size=8, cross_attention_dim=8, head_dim=2, groups=4).save_config(
        tmp_path / "unet"
    )
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    out = call(quick.list_target_modules, model=str(tmp_path))
    assert out["ok"], out
    assert out["value"]["component"] == "unet"
    assert out["value"]["suffixes"]["to_q"] >= 2


def test_read_adapter(tmp_path: Path) -> None:
    import peft
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(6, 4))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["0"]))
    lora.save_pretrained(tmp_path)
    out = call(quick.read_adapter, dir=str(tmp_path))
    assert out["ok"], out
    value = out["value"]
    assert value["config"]["r"] == 2
    shapes = {t["name"]: t["shape"] for f in value["files"] for t in f["tensors"]}
    assert sorted(shapes.values()) == [[2, 6], [4, 2]]
    assert value["parameter_count"] == 2 * 6 + 4 * 2


def test_read_adapter_names_a_corrupt_file(tmp_path: Path) -> None:
    import torch

    (tmp_path / "adapter_config.json").write_text('{"r": 2}')
    torch.save({"w": torch.zeros(2)}, tmp_path / "adapter_model.safetensors")  # a pickle, misnamed
    out = call(quick.read_adapter, dir=str(tmp_path))
    assert out["error"]["type"] == "ValueError"
    assert str(tmp_path / "adapter_model.safetensors") in out["error"]["message"]
    assert "not a readable safetensors file" in out["error"]["message"]
    (tmp_path / "adapter_model.safetensors").unlink()
    (tmp_path / "adapter_config.json").write_text('{"r": 2,')  # truncated
    out = call(quick.read_adapter, dir=str(tmp_path))
    assert str(tmp_path / "adapter_config.json") in out["error"]["message"], out


def test_plan_call() -> None:
    out = call(quick.plan, spec={"task": "matrix_factorization", "device": "cpu"})
    assert out["ok"], out
    assert out["value"]["layers"] == 1
    bad = call(quick.plan, spec={"task": "matrix_factorization", "adapter": {"kind": "lora", "r": -1}})
    assert bad["error"]["type"] == "SpecError"


def test_doctor_names_the_package_folder() -> None:
    import oplora

    assert call(quick.doctor)["value"]["oplora_path"] == str(Path(oplora.__file__).resolve().parent)


def test_read_adapter_on_a_folder_of_adapters_names_its_subfolders(tmp_path: Path) -> None:
    """A text_to_image run's adapter/ holds unet/ (and text_encoder/): say so, not just 'nothing here'."""
    for sub in ("unet", "text_encoder"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "adapter_config.json").write_text("{}")
    out = call(quick.read_adapter, dir=str(tmp_path))
    assert out["ok"] is False
    assert out["error"]["message"].endswith(
        "its adapters are in the subfolders text_encoder, unet: read one of those"
    )
