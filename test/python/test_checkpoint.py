"""save_generator / load_generator: round trip, re-stacking across groupings, clear mismatch errors."""

from __future__ import annotations

import oplora.generator
import pytest
import torch
from oplora.bind import attach
from oplora.checkpoint import load_generator, save_generator
from oplora.collapse import collapse
from oplora.config import OPLoRAConfig
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

CONFIG = OPLoRAConfig(embedding_dim=16, hidden_dim=8)


def test_round_trip_restores_parameters_and_outputs(
    make_tiny_peft, tiny_input, train_steps, tmp_path
) -> None:
    op = attach(make_tiny_peft(0), CONFIG)
    train_steps(op, lambda m: m(tiny_input).pow(2).mean(), steps=3)
    save_generator(op, tmp_path / "gen.safetensors")
    with torch.no_grad():
        trained = op(tiny_input)

    torch.manual_seed(99)  # another generator init, same base weights
    other = attach(make_tiny_peft(0), CONFIG)
    with torch.no_grad():
        before = other(tiny_input)  # caches factors that the load must invalidate
        load_generator(other, tmp_path / "gen.safetensors")
        for p, q in zip(other.generator.parameters(), op.generator.parameters(), strict=True):
            assert torch.equal(p, q)
        assert not torch.equal(before, trained)
        torch.testing.assert_close(other.base(tiny_input), trained, rtol=0, atol=0)


def test_load_restacks_a_checkpoint_grouped_differently(
    make_tiny_peft, tiny_input, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(oplora.generator, "default_chunk_bytes", lambda device: 1)  # one layer per group
    op = attach(make_tiny_peft(0), CONFIG)
    with torch.no_grad():
        for p in op.generator.parameters():
            p.normal_()
        want = op(tiny_input)
    save_generator(op, tmp_path / "gen.safetensors")
    monkeypatch.undo()
    other = attach(make_tiny_peft(0), CONFIG)
    assert len(other.generator.groups) < len(op.generator.groups)
    load_generator(other, tmp_path / "gen.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(other(tiny_input), want)


def test_mismatches_are_refused_with_the_difference_named(make_tiny_net, make_tiny_peft, tmp_path) -> None:
    path = tmp_path / "gen.safetensors"
    save_generator(attach(make_tiny_peft(), CONFIG), path)
    with pytest.raises(ValueError, match="hidden_dim=8, this model's generator 4"):
        load_generator(attach(make_tiny_peft(), OPLoRAConfig(embedding_dim=16, hidden_dim=4)), path)
    fewer = attach(get_peft_model(make_tiny_net(), LoraConfig(r=4, target_modules=["q", "v"])), CONFIG)
    with pytest.raises(
        ValueError, match=r"holds 6 layers, this model 2; missing from the file: \[\], not in this"
    ):
        load_generator(fewer, path)
    with pytest.raises(
        ValueError,
        match=r"conv1 has \(A, B\[, magnitude\]\) shapes \[\[4, 3, 3, 3\], \[8, 4, 1, 1\]\] in .*, \[\[2, 3,",
    ):
        load_generator(attach(make_tiny_peft(r=2), CONFIG), path)
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not an oplora generator checkpoint"):
        load_generator(attach(make_tiny_peft(), CONFIG), tmp_path / "other.safetensors")


def test_refuses_a_collapsed_model(make_tiny_peft, tmp_path) -> None:
    op = attach(make_tiny_peft(), CONFIG)
    collapse(op)
    with pytest.raises(RuntimeError, match="collapsed"):
        save_generator(op, tmp_path / "gen.safetensors")
