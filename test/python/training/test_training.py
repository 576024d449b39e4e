"""Shared training helpers: optimizer, schedule, accelerator, checkpoints, peak memory, PEFT dir export."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from oplora.training.export import save_peft_dir
from oplora.training.loop import (
    build_accelerator,
    build_lr_scheduler,
    build_optimizer,
    optimizer_kernel,
    peak_memory_bytes,
)
from oplora.training.state import latest_checkpoint, load_checkpoint, save_checkpoint
from torch import nn


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    m[0].weight.requires_grad_(False)
    return m


def _trainable(m: nn.Module) -> list[nn.Parameter]:
    return [p for p in m.parameters() if p.requires_grad]


def test_build_optimizer_names():
    m = _model()
    assert isinstance(build_optimizer(_trainable(m), {"name": "adamw", "lr": 1e-3}), torch.optim.AdamW)
    assert isinstance(build_optimizer(_trainable(m), {"name": "adam", "lr": 1e-3}), torch.optim.Adam)
    sgd = build_optimizer(_trainable(m), {"name": "momentum", "lr": 0.1, "momentum": 0.5})
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5


def _steps(m: nn.Module, opt: torch.optim.Optimizer, n: int = 8) -> None:
    for s in range(n):
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()


def test_build_optimizer_fused_equals_plain_loop():
    """Adam/AdamW get torch's fused kernel on the CPU, SGD its foreach kernel; after 8 steps the params
    equal torch's plain per-parameter implementation (foreach=False, fused=False)."""
    plain = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "momentum": torch.optim.SGD}
    for name, cls in plain.items():
        opt = {"name": name, "lr": 1e-2, "weight_decay": 0.1, "momentum": 0.9}
        m1, m2 = _model(), _model()
        groups = [{"params": _trainable(m1)[:1]}, {"params": _trainable(m1)[1:], "lr": 3e-2}]
        o1 = build_optimizer(groups, opt)
        kernel = "fused" if name != "momentum" else "foreach"
        assert all(g[kernel] is True for g in o1.param_groups), (name, o1.param_groups[0])
        kw = {"momentum": 0.9} if name == "momentum" else {}
        groups2 = [{"params": _trainable(m2)[:1]}, {"params": _trainable(m2)[1:], "lr": 3e-2}]
        o2 = cls(groups2, lr=1e-2, weight_decay=0.1, foreach=False, fused=False, **kw)
        _steps(m1, o1)
        _steps(m2, o2)
        moved = [not torch.equal(a, b) for a, b in zip(m1.parameters(), _model().parameters(), strict=True)]
        assert sum(moved) == 3, name  # the frozen weight stays, the others trained
        for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_kernel_falls_back_to_foreach():
    assert optimizer_kernel([nn.Parameter(torch.zeros(2))]) == {"fused": True}
    assert optimizer_kernel([nn.Parameter(torch.zeros(2, device="meta"))]) == {"foreach": True}


def test_scheduler_warmup_then_schedule():
    m = _model()
    opt = build_optimizer(_trainable(m), {"name": "sgd", "lr": 1.0})
    sched = build_lr_scheduler(opt, {"steps": 10, "lr_scheduler": "constant", "lr_warmup_steps": 4})
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    opt = build_optimizer(_trainable(m), {"name": "sgd", "lr": 1.0})
    sched = build_lr_scheduler(opt, {"steps": 4, "lr_scheduler": "linear", "lr_warmup_steps": 0})
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0


def test_accelerator_cpu_and_accumulation():
    acc = build_accelerator({"gradient_accumulation_steps": 3, "mixed_precision": "no"}, torch.device("cpu"))
    assert acc.device.type == "cpu" and acc.gradient_accumulation_steps == 3
    acc2 = build_accelerator({"gradient_accumulation_steps": 1, "mixed_precision": "no"}, torch.device("cpu"))
    assert acc2.gradient_accumulation_steps == 1  # state reset between runs in one process


def test_accelerator_refuses_fp16_on_the_cpu():
    from oplora.run.runner import InputError

    with pytest.raises(InputError, match=r'train\.mixed_precision: "fp16" needs a GPU'):
        build_accelerator({"mixed_precision": "fp16"}, torch.device("cpu"))


def _train(m: nn.Module, opt: torch.optim.Optimizer, sched, steps: range) -> None:
    for s in steps:
        g = torch.Generator().manual_seed(s)
        x = torch.randn(5, 4, generator=g)
        loss = m(x).pow(2).mean() + 0.01 * torch.rand(()).item()  # uses the global RNG too
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    train = {"steps": 6, "lr_scheduler": "cosine", "lr_warmup_steps": 2}
    m1 = _model()
    o1 = build_optimizer(_trainable(m1), {"name": "adamw", "lr": 1e-2})
    s1 = build_lr_scheduler(o1, train)
    torch.manual_seed(1)
    _train(m1, o1, s1, range(6))

    m2 = _model()
    o2 = build_optimizer(_trainable(m2), {"name": "adamw", "lr": 1e-2})
    s2 = build_lr_scheduler(o2, train)
    torch.manual_seed(1)
    _train(m2, o2, s2, range(3))
    save_checkpoint(tmp_path, 3, m2, o2, s2, extra={"note": "x"})
    (tmp_path / "checkpoints" / "step-000009.tmp").mkdir()  # an incomplete one is ignored
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.name == "step-000003"

    m3 = _model()
    o3 = build_optimizer(_trainable(m3), {"name": "adamw", "lr": 1e-2})
    s3 = build_lr_scheduler(o3, train)
    torch.manual_seed(123)  # load_checkpoint restores the RNG
    state = load_checkpoint(path, m3, o3, s3)
    assert state == {"step": 3, "note": "x"}
    _train(m3, o3, s3, range(3, 6))
    for a, b in zip(m1.parameters(), m3.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Planted:
    """A pickle payload: unpickling it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_holds_no_pickle_and_a_planted_pickle_is_refused_unrun(tmp_path):
    m, train = _model(), {"steps": 4, "lr_scheduler": "cosine", "lr_warmup_steps": 1}
    o = build_optimizer(_trainable(m), {"name": "adamw", "lr": 1e-2})
    s = build_lr_scheduler(o, train)
    _train(m, o, s, range(2))
    path = save_checkpoint(tmp_path, 2, m, o, s)
    assert sorted(p.name for p in path.iterdir()) == [
        "state.json",
        "trainable.safetensors",
        "training_state.json",
        "training_state.safetensors",
    ]
    marker = tmp_path / "pwned"
    torch.save({"state": _Planted(marker)}, path / "optimizer.pt")  # a shared run dir with a planted file
    with pytest.raises(ValueError, match=r"optimizer\.pt: a pickle file") as e:
        load_checkpoint(path, _model(), o, s)
    assert str(path / "optimizer.pt") in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["trainable.safetensors", "training_state.safetensors"])
def test_a_truncated_checkpoint_file_is_named(tmp_path, name):
    m, train = _model(), {"steps": 4}
    o = build_optimizer(_trainable(m), {"name": "adamw", "lr": 1e-2})
    s = build_lr_scheduler(o, train)
    path = save_checkpoint(tmp_path, 2, m, o, s)
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot be read") as e:
        load_checkpoint(path, _model(), o, s)
    assert f"checkpoint {path / name}" in str(e.value)


def test_latest_checkpoint_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_peak_memory_cpu_positive():
    assert peak_memory_bytes(torch.device("cpu")) > 10 * 2**20


def test_save_peft_dir_injected_adapter(tmp_path):
    from peft import LoraConfig, PeftModel, inject_adapter_in_model
    from safetensors.torch import load_file

    def base() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))

    m = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["0", "1"]), base())
    m.peft_config = {"default": LoraConfig(r=2, lora_alpha=4, target_modules=["0", "1"])}
    for n, p in m.named_parameters():
        if "lora_" in n:
            p.data.normal_()  # B != 0, so the reload below is told apart from a fresh adapter
    save_peft_dir(m, tmp_path / "a")
    keys = set(load_file(str(tmp_path / "a" / "adapter_model.safetensors")))
    # PeftModel.save_pretrained's layout: the wrapped model's keys under base_model.model.
    assert keys == {f"base_model.model.{i}.lora_{ab}.weight" for i in "01" for ab in "AB"}
    assert (tmp_path / "a" / "adapter_config.json").exists()
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(base(), str(tmp_path / "a"))
    assert not [w for w in caught if "adapter keys" in str(w.message)], [str(w.message) for w in caught]
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    assert (loaded(x) - base()(x)).abs().max() > 1e-3


# --- optimizer_step: OP-LoRA's factors generated once per optimizer step ----------------------------------


def _accumulation_grads(op, micro_losses, per_step: bool) -> tuple[list[torch.Tensor], int]:
    """(generator grads just before the optimizer step, generator forwards) over 4 micro-batches: through
    `optimizer_step` (one generation per step) or a plain loop regenerating per micro-batch."""
    from oplora.training.loop import optimizer_step

    params = list(op.generator.parameters())
    calls = [0]
    hook = op.generator.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    captured: list[list[torch.Tensor]] = []
    opt = build_optimizer(params, {"name": "sgd", "lr": 0.0})
    opt.register_step_pre_hook(lambda *_: captured.append([p.grad.clone() for p in params]))
    op.train()
    if per_step:
        acc = build_accelerator(
            {"gradient_accumulation_steps": 4, "mixed_precision": "no"}, torch.device("cpu")
        )
        optimizer_step(acc, op, acc.prepare(opt), params, 1e9, micro_losses, step=1)
    else:
        for loss_fn in micro_losses:
            (loss_fn() / 4).backward()
        opt.step()
    hook.remove()
    opt.zero_grad(set_to_none=True)
    assert len(captured) == 1
    return captured[0], calls[0]


def _perturbed(op):
    with torch.no_grad():
        for p in op.generator.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero B heads
    return op


@pytest.mark.parametrize("variant", ["fp64", "bf16-autocast", "checkpointing", "dora"])
def test_optimizer_step_generates_once_with_per_micro_batch_gradients(make_tiny_peft, variant) -> None:
    """The two schedules differ only in summation order, so in float64 they agree to ~1e-15 and the 1e-6
    bound tests the algorithm; in float32 the order alone moves small elements by ~1e-5 relative (seen on
    CI), which says nothing about it. bf16 autocast runs on the float32 model, as training does. "dora": DoRA
    layers with the magnitude generated (a third head, whose gradient accumulates the same way)."""
    from oplora.bind import attach
    from oplora.config import OPLoRAConfig

    torch.manual_seed(0)
    model = make_tiny_peft(use_dora=variant == "dora")
    xs = torch.randn(4, 2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    if variant != "bf16-autocast":  # before attach, so the generator casts its factors to float64 too
        model.double()
        xs = xs.double()
    op = _perturbed(attach(model, OPLoRAConfig(embedding_dim=16, hidden_dim=8, magnitude="generated")))
    op.base.base_model.model.checkpoint = variant == "checkpointing"

    def micro(i: int):
        def loss() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16-autocast"):
                return (op(xs[i]) - 1).pow(2).mean()

        return loss

    want, n_want = _accumulation_grads(op, [micro(i) for i in range(4)], per_step=False)
    got, n_got = _accumulation_grads(op, [micro(i) for i in range(4)], per_step=True)
    assert (n_want, n_got) == (4, 1)
    assert all(w.abs().max() > 0 for w in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6 * float(w.abs().max()))


def test_optimizer_step_generates_once_llama_gradient_checkpointing(make_tiny_llama) -> None:
    from oplora.bind import attach
    from oplora.config import OPLoRAConfig
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        make_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    op = _perturbed(attach(model, OPLoRAConfig(embedding_dim=16, hidden_dim=8)))
    ids = torch.randint(0, 100, (4, 2, 12), generator=torch.Generator().manual_seed(2))
    micro = [functools.partial(lambda i: op(input_ids=ids[i], labels=ids[i]).loss, i) for i in range(4)]
    want, n_want = _accumulation_grads(op, micro, per_step=False)
    got, n_got = _accumulation_grads(op, micro, per_step=True)
    assert (n_want, n_got) == (4, 1)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6 * float(w.abs().max()))


# --- optimizer_step: a non-finite loss stops the run before its update -------------------------------------


def _accumulating(gas: int) -> tuple:
    acc = build_accelerator(
        {"gradient_accumulation_steps": gas, "mixed_precision": "no"}, torch.device("cpu")
    )
    m = _model()
    opt = acc.prepare(build_optimizer(_trainable(m), {"name": "sgd", "lr": 0.1}))
    return acc, m, opt


def test_optimizer_step_raises_on_a_non_finite_loss_before_the_update() -> None:
    """Accumulation 3, the second micro-batch's loss NaN: the step's mean is NaN, so `TrainingDiverged` names
    the step, the loss and the lr, and the weights are the ones before the step."""
    from oplora.training.loop import TrainingDiverged, optimizer_step

    acc, m, opt = _accumulating(3)
    x = torch.randn(2, 4)
    losses = [lambda: m(x).pow(2).mean(), lambda: m(x).sum() * float("nan"), lambda: m(x).pow(2).mean()]
    before = [p.detach().clone() for p in _trainable(m)]
    with pytest.raises(TrainingDiverged, match=r"at step 7: loss nan with lr 0\.1; lower optimizer\.lr"):
        optimizer_step(acc, m, opt, _trainable(m), 1.0, losses, step=7)
    for p, b in zip(_trainable(m), before, strict=True):
        assert torch.equal(p, b)


def test_optimizer_step_a_non_finite_gradient_alone_is_not_divergence() -> None:
    """A finite loss with a non-finite gradient (what fp16's GradScaler skips) does not stop the run."""
    from oplora.training.loop import optimizer_step

    acc, m, opt = _accumulating(2)
    x = torch.randn(2, 4)
    grads: list[bool] = []
    opt.optimizer.register_step_pre_hook(lambda *_: grads.append(torch.isfinite(m[2].bias.grad).all().item()))

    def loss() -> torch.Tensor:  # 0, with sqrt's inf slope at 0
        y = m(x)
        return (y - y.detach()).abs().sqrt().sum()

    assert optimizer_step(acc, m, opt, _trainable(m), 1.0, [loss, loss], step=1) == 0.0
    assert grads == [False]


def test_input_warnings_name_the_field_only_when_the_value_is_likely_a_mistake():
    from oplora.training.loop import input_warnings

    ok = {"steps": 100, "lr_warmup_steps": 10, "batch_size": 4}
    assert input_warnings(ok, examples=4) == []
    assert input_warnings({**ok, "lr_warmup_steps": 0, "steps": 1}, examples=4) == []  # no warm-up asked
    assert [f for f, _ in input_warnings({**ok, "lr_warmup_steps": 100}, examples=3)] == [
        "train.lr_warmup_steps",
        "train.batch_size",
    ]


def test_another_specs_checkpoint_is_refused_as_input(tmp_path):
    """A checkpoint whose parameters differ from the model (another spec's, copied by hand) is an InputError
    naming the file (exit 2), not a training failure."""
    from oplora.run.runner import InputError

    m = _model()
    o = build_optimizer(_trainable(m), {"name": "adamw", "lr": 1e-2})
    s = build_lr_scheduler(o, {"steps": 4})
    path = save_checkpoint(tmp_path, 2, m, o, s)
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    o2 = build_optimizer(_trainable(other), {"name": "adamw", "lr": 1e-2})
    with pytest.raises(InputError, match=r"another spec|has shape") as e:
        load_checkpoint(path, other, o2, build_lr_scheduler(o2, {"steps": 4}))
    assert f"checkpoint {path}" in str(e.value)
