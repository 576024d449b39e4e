"""collapse: collapsed output == training output, a standard PEFT adapter (keys, reload), own storage."""

from __future__ import annotations

import json

import pytest
import torch
from oplora.adapter import lora_parameters
from oplora.bind import attach
from oplora.collapse import collapse
from oplora.config import OPLoRAConfig
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file

CONFIG = OPLoRAConfig(embedding_dim=16, hidden_dim=8)
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _trained_tiny(make_tiny_peft, tiny_input, train_steps, device="cpu"):
    model = make_tiny_peft().to(device)
    op = attach(model, CONFIG)
    x = tiny_input.to(device)
    train_steps(op, lambda m: (m(x) - 1).pow(2).mean(), steps=4)
    return model, op, x


def test_collapsed_output_equals_training_output(make_tiny_peft, tiny_input, train_steps, device) -> None:
    model, op, x = _trained_tiny(make_tiny_peft, tiny_input, train_steps, device)
    with torch.no_grad():
        trained = op(x)
        plain = collapse(op)
        assert plain is model
        torch.testing.assert_close(plain(x), trained, rtol=0, atol=0)


def test_collapse_leaves_plain_parameters_with_their_own_storage(
    make_tiny_peft, tiny_input, train_steps
) -> None:
    model = make_tiny_peft()
    before = lora_parameters(model)
    op = attach(model, CONFIG)
    train_steps(op, lambda m: m(tiny_input).pow(2).mean(), steps=2)
    collapse(op)
    after = lora_parameters(model)
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] for n in before)  # identity kept: an optimiser holding them stays valid
    assert all(type(p) is torch.nn.Parameter and p.requires_grad for p in after.values())  # PEFT's flags back
    ptrs = [p.untyped_storage().data_ptr() for p in after.values()]
    assert len(set(ptrs)) == len(ptrs)  # no aliasing between layers
    for p in after.values():  # nor with a larger (stacked) generator output
        assert p.is_contiguous() and p.untyped_storage().nbytes() == p.numel() * p.element_size()
    assert any(p.any() for n, p in after.items() if "lora_B" in n)


def test_saved_keys_equal_a_fresh_peft_models(make_tiny_peft, tiny_input, train_steps, tmp_path) -> None:
    model, op, _ = _trained_tiny(make_tiny_peft, tiny_input, train_steps)
    collapse(op)
    fresh = make_tiny_peft()
    assert list(model.state_dict()) == list(fresh.state_dict())
    assert not any("parametrizations" in k or "original" in k for k in model.state_dict())
    model.save_pretrained(tmp_path / "ours")
    fresh.save_pretrained(tmp_path / "fresh")
    ours = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "fresh" / "adapter_model.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert all(ours[k].shape == theirs[k].shape and ours[k].dtype == theirs[k].dtype for k in ours)


def test_saved_adapter_reloads_with_stock_peft_and_reproduces_outputs(
    make_tiny_net, make_tiny_peft, tiny_input, train_steps, tmp_path
) -> None:
    model, op, x = _trained_tiny(make_tiny_peft, tiny_input, train_steps)
    with torch.no_grad():
        trained = op(x)
    collapse(op).save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_net(0), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), trained, rtol=0, atol=0)


def test_rslora_adapter_collapses_and_reloads_with_stock_peft(
    make_tiny_net, make_tiny_peft, tiny_input, train_steps, tmp_path
) -> None:
    """rsLoRA (use_rslora): PEFT scales the generated factors by lora_alpha / sqrt(r); the collapsed adapter
    keeps that in adapter_config.json and a stock reload reproduces the trained outputs."""
    model = make_tiny_peft(r=4, lora_alpha=8, use_rslora=True)
    op = attach(model, CONFIG)
    train_steps(op, lambda m: (m(tiny_input) - 1).pow(2).mean(), steps=4)
    layer = next(m for m in model.modules() if hasattr(m, "scaling") and m.scaling)
    assert layer.scaling["default"] == 8 / 2  # alpha / sqrt(r), not alpha / r = 2
    with torch.no_grad():
        trained = op(tiny_input)
    collapse(op).save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["r"] == 4 and config["lora_alpha"] == 8
    reloaded = PeftModel.from_pretrained(make_tiny_net(0), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tiny_input), trained, rtol=0, atol=0)
    config["use_rslora"] = False  # the same factors at alpha / r give another output: the flag matters
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    plain = PeftModel.from_pretrained(make_tiny_net(0), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert not torch.allclose(plain(tiny_input), trained)


def test_llama_collapse_save_and_reload(make_tiny_llama, llama_input_ids, train_steps, tmp_path) -> None:
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS))
    op = attach(model, CONFIG)
    train_steps(op, lambda m: m(input_ids=llama_input_ids, labels=llama_input_ids).loss, steps=3)
    with torch.no_grad():
        trained = op(input_ids=llama_input_ids).logits
    collapse(op).save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=llama_input_ids).logits, trained, rtol=0, atol=0)


def test_unet_collapse_keeps_outputs_and_peft_keys(
    make_tiny_unet, unet_lora_config, unet_inputs, train_steps
) -> None:
    unet = make_tiny_unet()
    unet.add_adapter(unet_lora_config)
    op = attach(unet, CONFIG)
    train_steps(op, lambda m: m(**unet_inputs).sample.pow(2).mean(), steps=1)
    with torch.no_grad():
        trained = op(**unet_inputs).sample
        collapse(op)
        torch.testing.assert_close(unet(**unet_inputs).sample, trained, rtol=0, atol=0)
    fresh = make_tiny_unet()
    fresh.add_adapter(unet_lora_config)
    assert list(get_peft_model_state_dict(unet)) == list(get_peft_model_state_dict(fresh))
    assert list(unet.state_dict()) == list(fresh.state_dict())


def test_collapsed_wrapper_refuses_further_use(make_tiny_peft, tiny_input) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    plain = collapse(op)
    assert op.collapsed and op.num_generator_parameters() == 0 and op.num_lora_parameters() > 0
    with pytest.raises(RuntimeError, match="already collapsed"):
        collapse(op)
    with pytest.raises(RuntimeError, match="collapsed"):
        op(tiny_input)
    with pytest.raises(AttributeError, match="generator was dropped"):
        op.generator  # noqa: B018
    with pytest.raises(TypeError, match="expected an OPLoRAModel"):
        collapse(plain)  # type: ignore[arg-type]
    assert op.base is plain and plain(tiny_input).shape == (4, 5)


def test_collapsed_model_can_be_attached_again(make_tiny_peft, tiny_input) -> None:
    model = make_tiny_peft()
    collapse(attach(model, CONFIG))
    op = attach(model, CONFIG)  # e.g. a second OP-LoRA phase starting from the collapsed adapter's base
    assert op(tiny_input).shape == (4, 5)
