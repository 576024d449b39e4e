"""OP-DoRA: DoRA layers (PEFT's use_dora) under attach, the magnitude generated or direct, through collapse.

PEFT keeps its DoRA forward, W' = m · (W + s·BA) / ||W + s·BA||_c; attach generates A, B and, with
magnitude="generated", m from a third head that starts at PEFT's initial magnitude. Checked on the tiny
net (Conv2d and Linear layers): step 0 equals the base model, m trains, collapse gives a stock PEFT DoRA
adapter (same keys as PEFT's own, reloaded by PeftModel.from_pretrained to the same outputs), checkpoints
round-trip, and a generated-magnitude checkpoint does not load into a direct model.
"""

from __future__ import annotations

import pytest
import torch
from oplora.bind import attach
from oplora.checkpoint import load_generator, save_generator
from oplora.collapse import collapse
from oplora.config import OPLoRAConfig
from peft import PeftModel
from peft.tuners.lora import LoraLayer

MAGNITUDES = ["generated", "direct"]


def _config(magnitude: str) -> OPLoRAConfig:
    return OPLoRAConfig(embedding_dim=16, hidden_dim=8, magnitude=magnitude)


def _magnitudes(model) -> dict[str, torch.Tensor]:
    return {
        n: m.lora_magnitude_vector["default"].weight.detach().clone()
        for n, m in model.named_modules()
        if isinstance(m, LoraLayer) and "default" in m.lora_magnitude_vector
    }


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_step_zero_is_the_base_model_and_the_magnitude_trains(
    make_tiny_net, make_tiny_peft, tiny_input, train_steps, magnitude
) -> None:
    model = make_tiny_peft(use_dora=True)
    initial = _magnitudes(model)
    assert len(initial) == 6  # 2 Conv2d, 4 Linear
    op = attach(model, _config(magnitude))
    with torch.no_grad():
        torch.testing.assert_close(op(tiny_input), make_tiny_net(0)(tiny_input), rtol=0, atol=1e-6)
        torch.testing.assert_close(_magnitudes(model), initial, rtol=0, atol=0)  # m starts at PEFT's value
    heads = {n.rsplit(".", 1)[-1] for n, _ in op.generator.named_parameters()}
    direct = op.trainable_parameters()[len(list(op.generator.parameters())) :]
    if magnitude == "generated":
        assert {"WM", "bM"} <= heads and direct == []
    else:
        assert not {"WM", "bM"} & heads and len(direct) == 6 and all(p.requires_grad for p in direct)
    train_steps(op, lambda m: (m(tiny_input) - 1).pow(2).mean(), steps=4)
    moved = {n: (m - initial[n]).abs().max().item() for n, m in _magnitudes(model).items()}
    assert all(v > 1e-4 for v in moved.values()), moved


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_collapse_gives_a_stock_peft_dora_adapter(
    make_tiny_net, make_tiny_peft, tiny_input, train_steps, tmp_path, magnitude
) -> None:
    model = make_tiny_peft(use_dora=True)
    op = attach(model, _config(magnitude))
    train_steps(op, lambda m: (m(tiny_input) - 1).pow(2).mean(), steps=4)
    with torch.no_grad():
        trained = op(tiny_input)
    plain = collapse(op)
    assert not any("parametrizations" in k for k in plain.state_dict())
    assert sorted(plain.state_dict()) == sorted(make_tiny_peft(use_dora=True).state_dict())
    assert all(p.requires_grad == ("lora_" in n) for n, p in plain.named_parameters())  # as PEFT left them
    plain.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_net(0), tmp_path / "adapter").eval()
    assert reloaded.peft_config["default"].use_dora is True
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tiny_input), trained, rtol=0, atol=1e-6)
        assert (reloaded(tiny_input) - make_tiny_net(0)(tiny_input)).abs().max() > 1e-3


def test_generated_magnitude_checkpoint_round_trips_and_is_refused_by_a_direct_model(
    make_tiny_peft, tiny_input, train_steps, tmp_path
) -> None:
    op = attach(make_tiny_peft(use_dora=True), _config("generated"))
    train_steps(op, lambda m: (m(tiny_input) - 1).pow(2).mean(), steps=3)
    save_generator(op, tmp_path / "gen.safetensors")
    with torch.no_grad():
        want = op(tiny_input)
    torch.manual_seed(5)
    other = attach(make_tiny_peft(use_dora=True), _config("generated"))
    load_generator(other, tmp_path / "gen.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(other(tiny_input), want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="magnitude"):
        load_generator(attach(make_tiny_peft(use_dora=True), _config("direct")), tmp_path / "gen.safetensors")


def test_loop_and_batched_generate_the_same_magnitudes(make_tiny_peft) -> None:
    op = attach(make_tiny_peft(use_dora=True), _config("generated"))
    with torch.no_grad():
        for p in op.generator.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        batched, loop = op.generator("batched"), op.generator("loop")
    assert all(len(f) == 3 for f in batched)
    for got, want in zip(loop, batched, strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
