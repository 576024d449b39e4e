"""attach / OPLoRAModel: ΔW = 0 at step 0, only the generator trains, one generation per step shared by
every access (activation checkpointing included), stale factors regenerated on access, refusals."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
from oplora.adapter import lora_parameters
from oplora.bind import OPLoRAModel, attach
from oplora.config import OPLoRAConfig
from oplora.generator import FactorGenerator
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn.utils import parametrize

CONFIG = OPLoRAConfig(embedding_dim=16, hidden_dim=8)
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _count_generations(op: OPLoRAModel) -> list[int]:
    calls = [0]
    op.generator.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _generator_grads(op: OPLoRAModel) -> list[torch.Tensor]:
    return [p.grad.clone() for p in op.generator.parameters()]


def test_step_zero_output_equals_the_model_without_lora(
    make_tiny_net, make_tiny_peft, tiny_input, device
) -> None:
    plain = make_tiny_net(0).to(device)
    op = attach(make_tiny_peft(0).to(device), CONFIG)
    assert torch.equal(op(tiny_input.to(device)), plain(tiny_input.to(device)))


def test_step_zero_llama_output_equals_the_base(make_tiny_llama, llama_input_ids) -> None:
    plain = make_tiny_llama(0)
    op = attach(get_peft_model(make_tiny_llama(0), LoraConfig(r=4, target_modules=LLAMA_TARGETS)), CONFIG)
    assert len(op.layer_names) == 2 * 7
    torch.testing.assert_close(op(llama_input_ids).logits, plain(llama_input_ids).logits, rtol=0, atol=0)


def test_only_the_generator_trains_and_stays_out_of_peft_tree(make_tiny_peft) -> None:
    model = make_tiny_peft()
    op = attach(model, CONFIG)
    trainable = {id(p) for p in op.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in op.generator.parameters()}
    generator_ids = {id(p) for p in op.generator.parameters()}
    assert not generator_ids & {id(p) for p in model.parameters()}
    assert not any(isinstance(m, FactorGenerator) for m in model.modules())
    assert not any("generator" in k or "groups" in k for k in model.state_dict())
    assert op.num_lora_parameters() == sum(p.numel() for p in lora_parameters(make_tiny_peft()).values())
    assert op.num_generator_parameters() == sum(p.numel() for p in op.generator.parameters())


def test_one_generation_per_training_forward_shared_by_all_accesses(make_tiny_peft, tiny_input) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    calls = _count_generations(op)
    out = op(tiny_input)
    assert calls[0] == 1
    layer = op._lora_modules[3][0]
    assert layer.weight is layer.weight  # cached: the very same tensor on every access
    out.sum().backward()
    assert calls[0] == 1
    with torch.no_grad():
        op(tiny_input)
    assert calls[0] == 1  # nothing changed: no-grad forward reuses the cache


def test_direct_base_calls_see_factors_updated_in_place(make_tiny_peft, tiny_input, train_steps) -> None:
    model = make_tiny_peft()
    op = attach(model, CONFIG)
    train_steps(op, lambda m: m(tiny_input).pow(2).mean(), steps=2)  # after the last step the cache is stale
    calls = _count_generations(op)
    with torch.no_grad():
        direct = model(tiny_input)  # e.g. a pipeline calling pipe.unet itself under no_grad
        assert calls[0] == 1
        fresh = [B for _, B in op.generator()]
    assert any(B.any() for B in fresh)
    with torch.no_grad():
        torch.testing.assert_close(direct, op(tiny_input), rtol=0, atol=0)
        op.generator.groups[0].bB.add_(1.0)  # any in-place change regenerates on next access
        assert not torch.equal(model(tiny_input), direct)


def test_backward_twice_through_direct_calls_regenerates(make_tiny_peft, tiny_input) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    op.base(tiny_input).sum().backward()
    first = _generator_grads(op)
    op.base(tiny_input).sum().backward()  # the first graph was consumed: regenerate, do not reuse it
    for g1, g2 in zip(first, _generator_grads(op), strict=True):
        torch.testing.assert_close(g2, 2 * g1)


def test_no_grad_cache_is_regenerated_with_a_graph_when_grad_is_needed(make_tiny_peft, tiny_input) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    with torch.inference_mode():
        op(tiny_input)
    op.base(tiny_input).sum().backward()  # the inference-mode cache has no graph: regenerated
    assert all(p.grad is not None for p in op.generator.parameters())


def test_non_reentrant_checkpointing_gradients_equal_plain(make_tiny_peft, tiny_input, device) -> None:
    op = attach(make_tiny_peft().to(device), CONFIG)
    tiny_input = tiny_input.to(device)
    with torch.no_grad():
        for p in op.generator.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero B heads
    op(tiny_input).pow(2).sum().backward()
    plain = _generator_grads(op)
    op.generator.zero_grad(set_to_none=True)
    op.base.base_model.model.checkpoint = True
    calls = _count_generations(op)
    op(tiny_input).pow(2).sum().backward()
    assert calls[0] == 1  # recomputation inside backward reused the step's factors
    for got, want in zip(_generator_grads(op), plain, strict=True):
        torch.testing.assert_close(got, want)


def test_llama_non_reentrant_gradient_checkpointing_gradients_equal_plain(
    make_tiny_llama, llama_input_ids
) -> None:
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, target_modules=LLAMA_TARGETS))
    op = attach(model, CONFIG)
    with torch.no_grad():
        for p in op.generator.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    op.train()

    def grads() -> list[torch.Tensor]:
        op.generator.zero_grad(set_to_none=True)
        op(input_ids=llama_input_ids, labels=llama_input_ids).loss.backward()
        return _generator_grads(op)

    plain = grads()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # transformers 5: gradient_checkpointing_enable is an alias
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    for got, want in zip(grads(), plain, strict=True):
        torch.testing.assert_close(got, want)


def test_refuses_reentrant_checkpointing_at_attach_and_forward(make_tiny_llama, llama_input_ids) -> None:
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="use_reentrant=False"):
        attach(model, CONFIG)
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))
    op = attach(model, CONFIG)
    for m in model.modules():  # enabled after attach, torch's default (reentrant) function
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing, m._gradient_checkpointing_func = True, torch.utils.checkpoint.checkpoint
    with pytest.raises(ValueError, match="reentrant"):
        op.train()(input_ids=llama_input_ids)


def test_reentrant_detection() -> None:
    from oplora.bind import is_reentrant

    ckpt = torch.utils.checkpoint.checkpoint
    assert is_reentrant(ckpt) is True
    assert is_reentrant(functools.partial(ckpt)) is True
    assert is_reentrant(functools.partial(ckpt, use_reentrant=True)) is True
    assert is_reentrant(functools.partial(ckpt, use_reentrant=False)) is False
    assert is_reentrant(lambda *a: a) is None


def test_refuses_twice_no_lora_and_wrong_types(make_tiny_net, make_tiny_peft) -> None:
    model = make_tiny_peft()
    op = attach(model, CONFIG)
    with pytest.raises(ValueError, match="already"):
        attach(model, CONFIG)
    with pytest.raises(TypeError, match="already an OPLoRAModel"):
        attach(op, CONFIG)
    with pytest.raises(ValueError, match="no PEFT LoRA layers"):
        attach(make_tiny_net(), CONFIG)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        attach("model", CONFIG)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden_dim=0"):
        attach(make_tiny_peft(), {"hidden_dim": 0})
    model = make_tiny_peft()
    model.base_model.model.q.lora_variant["default"] = object()  # a variant other than DoRA (arrow, ...)
    with pytest.raises(ValueError, match=r"q uses a LoRA variant \(object\); only plain LoRA and DoRA"):
        attach(model, CONFIG)


def test_several_adapters_default_to_the_active_one(make_tiny_peft, tiny_input) -> None:
    model = make_tiny_peft()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q", "v"]))
    op = attach(model, CONFIG)
    assert op.adapter_name == "default" and len(op.layer_names) == 6
    model = make_tiny_peft()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q", "v"]))
    op = attach(model, CONFIG, adapter_name="other")
    assert op.adapter_name == "other" and len(op.layer_names) == 2
    assert not parametrize.is_parametrized(model.base_model.model.q.lora_A["default"])
    with pytest.raises(ValueError, match="adapter_name='nope'"):
        attach(make_tiny_peft(), CONFIG, adapter_name="nope")
    model = make_tiny_peft()
    model.add_adapter("other", LoraConfig(r=2, target_modules=["q", "v"]))
    model.base_model.set_adapter(["default", "other"], inference_mode=False)
    with pytest.raises(ValueError, match="several LoRA adapters"):
        attach(model, CONFIG)


def test_low_precision_lora_weights_get_their_dtype(make_tiny_net, tiny_input) -> None:
    net = make_tiny_net().to(torch.bfloat16)
    config = LoraConfig(r=4, target_modules=["q", "k", "v", "o"])
    model = get_peft_model(net, config, autocast_adapter_dtype=False)
    op = attach(model, CONFIG)
    assert all(p.dtype == torch.float32 for p in op.generator.parameters())
    assert model.base_model.model.q.lora_A["default"].weight.dtype == torch.bfloat16
    op(tiny_input.to(torch.bfloat16)).float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in op.generator.parameters())


def test_unet_with_add_adapter_conv_and_linear(make_tiny_unet, unet_lora_config, unet_inputs) -> None:
    plain = make_tiny_unet()
    unet = make_tiny_unet()
    unet.add_adapter(unet_lora_config)
    op = attach(unet, CONFIG)
    kinds = {type(m.base_layer).__name__ for n, m in unet.named_modules() if n in set(op.layer_names)}
    assert kinds == {"Linear", "Conv2d"}
    with torch.no_grad():
        torch.testing.assert_close(op(**unet_inputs).sample, plain(**unet_inputs).sample, rtol=0, atol=0)
    unet.enable_gradient_checkpointing()  # diffusers' default is non-reentrant: accepted
    op.train()
    op(**unet_inputs).sample.pow(2).mean().backward()
    assert all(p.grad is not None for p in op.generator.parameters())


def test_a_weight_read_after_an_optimiser_step_is_current(make_tiny_peft, tiny_input) -> None:
    model = make_tiny_peft()
    op = attach(model, CONFIG)
    opt = torch.optim.SGD(op.generator.parameters(), lr=0.1)
    op(tiny_input).sum().backward()
    opt.step()
    weight = model.base_model.model.q.lora_B["default"].weight  # no forward in between
    with torch.no_grad():
        assert weight.any() and torch.equal(
            weight, op.generator()[op.layer_names.index("base_model.model.q")][1]
        )


def test_deepcopy_and_to_keep_their_own_current_factors(make_tiny_peft, tiny_input) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    op2 = copy.deepcopy(op)
    op2.to(torch.float64)  # new storage for every parameter: the cache must not serve stale float32 factors
    y = op2(tiny_input.double())
    assert y.dtype == torch.float64 and isinstance(op2, nn.Module)
    with torch.no_grad():
        before = op(tiny_input)
        for p in op2.generator.parameters():
            p.add_(0.5)
        assert not torch.equal(op2.base(tiny_input.double()), y)  # the copy's base uses the copy's generator
        assert torch.equal(op.base(tiny_input), before)
