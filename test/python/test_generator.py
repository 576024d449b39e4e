"""FactorGenerator (and its config): ΔW = 0 at init, batched == loop in values and gradients, grouping."""

from __future__ import annotations

import math

import pytest
import torch
from oplora.config import OPLoRAConfig, resolve_formulation
from oplora.generator import FactorGenerator, default_chunk_bytes

CONFIG = OPLoRAConfig(embedding_dim=16, hidden_dim=8)
# Mixed shape groups: two Linear groups (one with L = 3), a Conv2d group (L = 2), a singleton.
SHAPES = [
    ((4, 8), (6, 4)),
    ((4, 3, 3, 3), (5, 4, 1, 1)),
    ((4, 8), (6, 4)),
    ((2, 10), (7, 2)),
    ((4, 3, 3, 3), (5, 4, 1, 1)),
    ((4, 8), (6, 4)),
    ((4, 6), (6, 4)),
]


def _randomize(gen: FactorGenerator, seed: int = 0) -> None:
    """Non-zero B heads, so B and the gradients through it are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.parameters():
            p.copy_(torch.randn(p.shape, generator=g).to(p.device) * 0.5)


def _run(gen: FactorGenerator, formulation: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen.zero_grad(set_to_none=True)
    out = gen(formulation)
    g = torch.Generator().manual_seed(1)
    loss = sum((torch.randn(t.shape, generator=g).to(t.device) * t).sum() for pair in out for t in pair)
    loss.backward()
    return [t.detach() for pair in out for t in pair], [p.grad.clone() for p in gen.parameters()]


def test_b_is_zero_at_init_so_delta_w_is_zero() -> None:
    gen = FactorGenerator(SHAPES, CONFIG)
    for (a_shape, b_shape), (A, B) in zip(SHAPES, gen(), strict=True):
        assert A.shape == a_shape and B.shape == b_shape
        assert torch.count_nonzero(B) == 0
        assert torch.count_nonzero(A) > 0


def test_init_follows_the_reference_code() -> None:
    config = OPLoRAConfig(embedding_dim=64, hidden_dim=16, init_std=0.02)
    gen = FactorGenerator([((8, 32), (32, 8))] * 40, config)
    (group,) = gen.groups
    assert group.z.std().item() == pytest.approx(0.02, rel=0.1)
    for p, fan_in in ((group.W1, 64), (group.b1, 64), (group.WA, 16)):
        bound = 1 / math.sqrt(fan_in)
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
    for p in (group.bA, group.WB, group.bB):
        assert torch.count_nonzero(p) == 0


@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_batched_equals_loop_in_values_and_gradients(device: torch.device, chunk_bytes: int | None) -> None:
    gen = FactorGenerator(SHAPES, CONFIG, device=device, chunk_bytes=chunk_bytes)
    _randomize(gen)
    values_b, grads_b = _run(gen, "batched")
    values_l, grads_l = _run(gen, "loop")
    for got, want in zip(values_b + grads_b, values_l + grads_l, strict=True):
        torch.testing.assert_close(got, want)


def test_nothing_is_shared_between_layers() -> None:
    gen = FactorGenerator(SHAPES, CONFIG, chunk_bytes=None)
    _randomize(gen)
    A, B = gen()[2]
    (A.sum() + B.sum()).backward()  # depends on layer 2's MLP only
    for group in gen.groups:
        for name, p in group.named_parameters():
            touched = [
                layer for i, layer in enumerate(group.layers) if p.grad is not None and p.grad[i].any()
            ]
            assert touched == ([2] if 2 in group.layers else []), name


def test_groups_stack_same_shapes_and_dtypes_and_split_into_chunks() -> None:
    dtypes = [torch.float32] * len(SHAPES)
    dtypes[5] = torch.bfloat16
    gen = FactorGenerator(SHAPES, CONFIG, dtypes=dtypes, chunk_bytes=None)
    assert sorted(g.layers for g in gen.groups) == [(0, 2), (1, 4), (3,), (5,), (6,)]
    per_layer = 6 * 4 * CONFIG.hidden_dim * 4  # bytes of one layer's WB, the larger head of the (0, 2) group
    chunked = FactorGenerator(SHAPES, CONFIG, dtypes=dtypes, chunk_bytes=per_layer)
    assert sorted(g.layers for g in chunked.groups) == [(0,), (1,), (2,), (3,), (4,), (5,), (6,)]
    assert default_chunk_bytes("cpu") is not None and default_chunk_bytes("cuda") is None


def test_computes_in_float32_and_casts_to_each_layers_dtype() -> None:
    dtypes = [torch.bfloat16] * len(SHAPES)
    gen = FactorGenerator(SHAPES, CONFIG, dtypes=dtypes)
    ref = FactorGenerator(SHAPES, CONFIG)
    ref.load_state_dict(gen.state_dict())
    _randomize(gen)
    _randomize(ref)
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    for formulation in ("batched", "loop"):
        for (A, B), (A32, B32) in zip(gen(formulation), ref(formulation), strict=True):
            assert A.dtype == B.dtype == torch.bfloat16
            torch.testing.assert_close(A, A32.to(torch.bfloat16))
            torch.testing.assert_close(B, B32.to(torch.bfloat16))
    gen.half()  # even cast, it computes in float32
    assert gen()[0][0].dtype == torch.bfloat16


def test_autocast_does_not_lower_the_generators_precision() -> None:
    gen = FactorGenerator(SHAPES, CONFIG)
    _randomize(gen)
    want = gen()
    for formulation in ("batched", "loop"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = gen(formulation)
        for (A, B), (A32, B32) in zip(got, want, strict=True):
            assert A.dtype == B.dtype == torch.float32
            torch.testing.assert_close(A, A32)
            torch.testing.assert_close(B, B32)


def test_refuses_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="same r"):
        FactorGenerator([((4, 8), (6, 3))], CONFIG)
    with pytest.raises(ValueError, match="empty"):
        FactorGenerator([], CONFIG)


# --- config ----------------------------------------------------------------------------------------------


def test_config_defaults_are_the_reference_values() -> None:
    assert OPLoRAConfig() == OPLoRAConfig(embedding_dim=128, hidden_dim=32, init_std=0.01, formulation="auto")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embedding_dim": 0}, r"embedding_dim=0: expected a positive integer"),
        ({"hidden_dim": 2.5}, r"hidden_dim=2.5: expected a positive integer"),
        ({"hidden_dim": True}, r"hidden_dim=True"),
        ({"init_std": -1.0}, r"init_std=-1.0: expected a finite number > 0"),
        ({"init_std": float("nan")}, r"init_std=nan"),
        ({"formulation": "fast"}, r"formulation='fast': expected one of 'auto', 'batched', 'loop'"),
        ({"magnitude": "learned"}, r"magnitude='learned': expected one of 'generated', 'direct'"),
    ],
)
def test_config_errors_name_the_field_the_value_and_the_expectation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OPLoRAConfig(**kwargs)


def test_config_from_the_spec_dict_round_trips_and_refuses_unknown_keys() -> None:
    spec = {
        "embedding_dim": 64,
        "hidden_dim": 16,
        "init_std": 0.02,
        "formulation": "loop",
        "magnitude": "direct",
    }
    config = OPLoRAConfig.from_dict(spec)
    assert config == OPLoRAConfig(64, 16, 0.02, "loop", "direct") and config.to_dict() == spec
    assert OPLoRAConfig.from_dict({}) == OPLoRAConfig()
    with pytest.raises(ValueError, match="unknown key.*'hiddenDim'"):
        OPLoRAConfig.from_dict({"hiddenDim": 16})
    with pytest.raises(Exception, match="frozen|cannot assign"):
        config.hidden_dim = 3  # type: ignore[misc]


def test_auto_resolves_per_device() -> None:
    assert resolve_formulation("loop", "cuda") == "loop"
    assert resolve_formulation("batched", "cpu") == "batched"
    assert resolve_formulation("auto", "cuda") == "batched"
    assert resolve_formulation("auto", "cpu") in ("batched", "loop")
