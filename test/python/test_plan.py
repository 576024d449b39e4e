"""plan.py: counts equal a real attach (generator and LoRA parameters), memory adds up, `fits` names the knobs."""

from __future__ import annotations

import pytest
import torch
from oplora.adapter import lora_parameters
from oplora.plan import generator_parameters_per_layer, plan, saved_activations

MF = {"task": "matrix_factorization", "device": "cpu", "matrix": {"rows": 24, "cols": 40}}


def test_generator_formula() -> None:
    # e=4, h=3, nA=2*5=10, nB=6*2=12: z 4 + W1 12 + b1 3 + A head 30+10 + B head 36+12
    assert generator_parameters_per_layer(10, 12, 4, 3) == 4 + 12 + 3 + 30 + 10 + 36 + 12
    # DoRA, magnitude generated: + an M head of d_out = 6 (18 + 6)
    assert generator_parameters_per_layer(10, 12, 4, 3, 6) == 4 + 12 + 3 + 30 + 10 + 36 + 12 + 18 + 6


@pytest.mark.parametrize(
    ("kind", "magnitude"), [("lora", None), ("op-lora", "generated"), ("op-lora", "direct")]
)
def test_dora_counts_equal_a_real_attach(make_tiny_peft, kind, magnitude) -> None:
    """The plan's DoRA terms against a real DoRA model (tiny net: 2 Conv2d, 4 Linear): each layer's magnitude
    (d_out) is stored; op-lora generates it (an M head) or trains it directly."""
    from oplora.adapter import apply_adapter
    from oplora.plan import count

    model = make_tiny_peft(use_dora=True)
    layers = [
        (n, tuple(m.lora_A["default"].weight.shape), tuple(m.lora_B["default"].weight.shape))
        for n, m in model.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    ]
    adapter = {"kind": kind, "r": 4, "use_dora": True}
    if kind == "op-lora":
        adapter["generator"] = {"embedding_dim": 16, "hidden_dim": 8, "magnitude": magnitude}
    counts = count(layers, adapter)
    assert counts["lora_parameters"] == sum(t.numel() for t in lora_parameters(model).values())
    module, params = apply_adapter(model, adapter)
    trainable = sum(p.numel() for p in params)
    if kind == "op-lora":
        assert counts["generator_parameters"] == module.num_generator_parameters()
        assert counts["generator_parameters"] + counts["direct_parameters"] == trainable
        assert (counts["direct_parameters"] > 0) is (magnitude == "direct")
    else:
        assert counts["lora_parameters"] == trainable and counts["direct_parameters"] == 0


@pytest.mark.parametrize("kind", ["lora", "op-lora"])
def test_counts_match_a_real_model(kind: str) -> None:
    import peft  # noqa: F401
    from oplora.tasks.matrix_factorization.task import build_model

    spec = {
        **MF,
        "adapter": {
            "kind": kind,
            "r": 3,
            **({"generator": {"embedding_dim": 8, "hidden_dim": 5}} if kind == "op-lora" else {}),
        },
    }
    p = plan(spec)
    from oplora.run.spec import validate_spec

    peft_model, module, params = build_model(24, 40, validate_spec(spec)["adapter"])
    lora = sum(t.numel() for t in lora_parameters(peft_model).values())
    assert p["layers"] == 1
    assert p["lora_parameters"] == 3 * 40 + 24 * 3
    if kind == "op-lora":
        assert p["generator_parameters"] == sum(t.numel() for t in module.generator.parameters())
        assert p["trainable_parameters"] == p["generator_parameters"]
    else:
        assert p["lora_parameters"] == lora == sum(t.numel() for t in params)
        assert p["generator_parameters"] == 0
    assert p["base_parameters"] == 24 * 40
    mem = p["memory_bytes"]
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    assert mem["trainable_state"] == 16 * p["trainable_parameters"]
    assert mem["target_matrix"] == 24 * 40 * 12  # MF's own term: M in fp64 + its fp32 copy
    assert mem["loss_transient"] == 24 * 40 * 6 * 4  # six fp32 rows x cols temporaries
    # the trainable gradients come after the peak: the smaller of them and the step's transients is deducted
    assert mem["gradients_after_peak"] == -min(4 * p["trainable_parameters"], mem["loss_transient"])
    assert p["memory_formula"].keys() == mem.keys()


def test_study_plans_as_one_op_trial() -> None:
    p = plan({"task": "matrix_factorization_study", "device": "cpu", "r": 4})
    assert p["adapter_kind"] == "op-lora"
    assert p["groups"][0]["lora_A_shape"] == [4, 64]


def test_does_not_fit_names_the_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    import oplora.plan as plan_module

    monkeypatch.setattr(plan_module, "device_memory", lambda device: ("cuda:0", 1000))
    p = plan({**MF, "adapter": {"kind": "op-lora", "r": 8}})
    assert p["fits"] is False
    for knob in ("r", "target_modules", "generator.hidden_dim"):
        assert knob in p["message"]


def test_a_real_run_records_peak_memory() -> None:
    """A tiny MF run's result carries peak_memory_bytes (RSS growth on the CPU): > 0 and below the machine's
    RAM. The plan's estimate is not compared here: on a tiny model the CPU figure is mostly the process's
    lazily loaded library code and allocator arenas (bench/memory.py reports the ratios)."""
    import os

    from oplora.run.spec import validate_spec
    from oplora.tasks.matrix_factorization.task import fit

    spec = validate_spec({**MF, "adapter": {"kind": "op-lora", "r": 3}, "train": {"steps": 5}})
    peak = fit(spec).metrics["peak_memory_bytes"]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < peak < ram


def test_saved_activations_with_and_without_checkpointing() -> None:
    blocks = [(100, 10), (300, 20), (50, 5)]
    assert saved_activations(blocks, checkpointing=False) == 450
    assert saved_activations(blocks, checkpointing=True) == 10 + 20 + 5 + 300  # inputs + the largest block
    assert saved_activations([], checkpointing=True) == 0


@pytest.fixture(scope="module")
def tiny_sd_assets():
    from tiny_sd import build_tiny_sd

    return build_tiny_sd()


def _t2i(assets, batch: int = 2, **train) -> dict:
    return {
        "task": "text_to_image",
        "device": "cpu",
        "model": {"pretrained": str(assets / "sd")},
        "adapter": {"kind": "lora", "r": 4, **train.pop("adapter", {})},
        "data": {"folder": str(assets / "data" / "train"), "resolution": 32},
        "train": {"batch_size": batch, **train},
    }


def test_text_to_image_activations_scale_with_batch_and_vanish_under_no_grad(tiny_sd_assets) -> None:
    mem = {b: plan(_t2i(tiny_sd_assets, b))["memory_bytes"] for b in (1, 2, 4)}
    unet = {b: m["unet_activations"] for b, m in mem.items()}
    assert unet[1] > 0 and unet[2] == 2 * unet[1] and unet[4] == 4 * unet[1]
    assert mem[2]["text_encoder_activations"] == 0  # frozen text encoder: no_grad
    trained = plan(_t2i(tiny_sd_assets, 2, adapter={"train_text_encoder": True}))["memory_bytes"]
    assert trained["text_encoder_activations"] > 0
    assert trained["unet_activations"] == unet[2]
    # the VAE encode (no_grad) counts only where it would exceed the UNet's activations: not at this size
    assert mem[2]["vae_encode_transient"] == 0
    ckpt = plan(_t2i(tiny_sd_assets, 2, gradient_checkpointing=True))["memory_bytes"]["unet_activations"]
    half = plan(_t2i(tiny_sd_assets, 2, mixed_precision="bf16"))["memory_bytes"]["unet_activations"]
    assert 0 < ckpt < unet[2] / 2
    assert half == unet[2] // 2


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_text_to_image_base_weights_are_the_bytes_the_run_loads(tiny_sd_assets, mixed_precision) -> None:
    """The plan's base_weights equals the parameter bytes of the pipeline as training loads it: under bf16
    the UNet and text encoder in bf16, the VAE in fp32."""
    from oplora.tasks.text_to_image.pipeline import load_pipeline
    from oplora.training.loop import autocast_dtype

    spec = _t2i(tiny_sd_assets, 2, mixed_precision=mixed_precision)
    pipe = load_pipeline(spec["model"], autocast_dtype(mixed_precision))
    held = {
        name: sum(p.numel() * p.element_size() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "text_encoder")
    }
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}
    assert plan(spec)["memory_bytes"]["base_weights"] == sum(held.values())


def test_llava_activations_scale_with_tokens() -> None:
    from tiny_llava import build_tiny_llava, llava_spec

    root = build_tiny_llava()

    def acts(batch: int, max_length: int) -> int:
        spec = llava_spec(root, train={"batch_size": batch})
        spec["data"]["max_length"] = max_length
        return plan(spec)["memory_bytes"]["lm_activations"]

    assert acts(1, 32) > 0
    assert acts(2, 32) == 2 * acts(1, 32)
    assert acts(1, 64) == 2 * acts(1, 32)  # image tokens are part of max_length


def test_tensor_peak_of_a_known_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """peak_tensor_bytes (OPLORA_PEAK_TENSOR_BYTES=1) of 8 MB + 8 MB live at once is 16 MB within 2%; a
    tensor allocated before the baseline counts neither held nor freed; off without the variable."""
    import torch
    from oplora.training import loop

    cpu = torch.device("cpu")
    monkeypatch.delenv(loop.TENSOR_PEAK_ENV, raising=False)
    loop.memory_baseline(cpu)
    assert loop.peak_tensor_bytes() is None and loop.tensor_peak_metric() == {}
    monkeypatch.setenv(loop.TENSOR_PEAK_ENV, "1")
    before = torch.ones(1024, 1024)
    loop.memory_baseline(cpu)
    del before
    x = torch.ones(2_000_000)
    y = x * 2  # 16 MB live here
    del x, y
    z = torch.ones(1_000_000)  # 4 MB: below the peak
    del z
    peak = loop.peak_tensor_bytes()
    assert peak is not None and abs(peak - 16_000_000) <= 0.02 * 16_000_000
    assert loop.tensor_peak_metric() == {"peak_tensor_bytes": peak}  # read once, the same after


def test_mf_estimate_within_15_percent_of_its_tensor_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real 128x128 MF run: the plan's total against the run's peak_tensor_bytes (bench/memory.py: 1.00)."""
    from oplora.run.spec import validate_spec
    from oplora.tasks.matrix_factorization.task import fit
    from oplora.training.loop import TENSOR_PEAK_ENV

    monkeypatch.setenv(TENSOR_PEAK_ENV, "1")
    raw = {
        **MF,
        "matrix": {"rows": 128, "cols": 128},
        "adapter": {"kind": "lora", "r": 4},
        "train": {"steps": 4},
    }
    measured = fit(validate_spec(raw)).metrics["peak_tensor_bytes"]
    assert abs(plan(raw)["memory_bytes"]["total"] / measured - 1) <= 0.15
