"""Matrix factorisation: the target, ΔW = 0 at step 0, training, metrics, and the task end to end."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from oplora.run.runner import run_spec
from oplora.run.spec import validate_spec
from oplora.tasks.matrix_factorization import task as mf

ARMS = ["lora", "op-lora"]


def spec(
    kind="lora", spectrum="geometric", steps=60, log_every=10, opt="adam", lr=3e-2, rows=12, cols=10, r=3
):
    adapter = {"kind": kind, "r": r}
    if kind == "op-lora":
        adapter["generator"] = {"embedding_dim": 8, "hidden_dim": 8}
    return validate_spec(
        {
            "task": "matrix_factorization",
            "device": "cpu",
            "matrix": {"rows": rows, "cols": cols, "spectrum": spectrum},
            "adapter": adapter,
            "optimizer": {"name": opt, "lr": lr},
            "train": {"steps": steps, "log_every": log_every},
        }
    )


@pytest.mark.parametrize("spectrum", ["gaussian", "geometric", "power_law"])
def test_target_spectrum_and_eckart_young_optimum(spectrum):
    m = {"rows": 12, "cols": 9, "geometric_ratio": 0.7, "power_law_exponent": 1.5}
    t = mf.make_target(m, spectrum, r=3, seed=1)
    assert t.matrix.shape == (12, 9)
    sigma = torch.linalg.svdvals(t.matrix)
    torch.testing.assert_close(t.sigma, sigma)
    assert float((t.matrix**2).sum()) == pytest.approx(12 * 9)  # normalised: loss of ΔW = 0 is 1
    assert t.initial_loss == pytest.approx(1.0)
    if spectrum != "gaussian":  # the shape of the spectrum is the one asked for, up to the normalisation
        i = torch.arange(9, dtype=torch.float64)
        shape = 0.7**i if spectrum == "geometric" else (i + 1) ** -1.5
        torch.testing.assert_close(sigma / sigma[0], shape)
    u, s, vh = torch.linalg.svd(t.matrix, full_matrices=False)
    best = u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
    assert float(((best - t.matrix) ** 2).mean()) == pytest.approx(t.optimal_loss)
    assert t.optimal_loss == pytest.approx(float((s[3:] ** 2).sum()) / (12 * 9))
    assert mf.make_target(m, spectrum, 3, seed=1).matrix.equal(t.matrix)
    assert not mf.make_target(m, spectrum, 3, seed=2).matrix.equal(t.matrix)


def test_target_refuses_a_rank_above_the_matrix():
    with pytest.raises(ValueError, match="adapter.r"):
        mf.make_target(
            {"rows": 4, "cols": 3, "geometric_ratio": 0.5, "power_law_exponent": 1}, "geometric", 4, 0
        )


@pytest.mark.parametrize("kind", ARMS)
def test_delta_is_zero_at_step_zero(kind):
    s = spec(kind)
    torch.manual_seed(0)
    peft_model, module, params = mf.build_model(12, 10, s["adapter"])
    delta = mf.delta_weight_fn(peft_model, module)()
    assert delta.shape == (12, 10)
    assert torch.count_nonzero(delta) == 0
    assert all(p.requires_grad for p in params)
    base = mf.lora_layer(peft_model).base_layer.weight
    assert not base.requires_grad and torch.count_nonzero(base) == 0


@pytest.mark.parametrize("kind", ARMS)
def test_a_short_run_fits_and_its_metrics_are_consistent(kind):
    logged = []
    res = mf.fit(spec(kind, steps=60, log_every=1), on_log=lambda *a: logged.append(a))
    m = res.metrics
    curve = m["loss_curve"]
    assert [p["step"] for p in curve] == list(range(61))
    assert curve[0]["loss"] == pytest.approx(m["initial_loss"], rel=1e-5)
    assert m["final_loss"] < 0.5 * m["initial_loss"]
    assert m["excess_loss"] == pytest.approx(m["final_loss"] - m["optimal_loss"])
    init_excess = m["initial_loss"] - m["optimal_loss"]
    assert m["relative_excess"] == pytest.approx(m["excess_loss"] / init_excess)
    # steps_to_excess: the first logged step at or below each level
    for key, n in m["steps_to_excess"].items():
        rel = [(p["loss"] - m["optimal_loss"]) / init_excess for p in curve]
        first = next((i for i, x in enumerate(rel) if x <= float(key)), None)
        assert n == first, key
    assert m["effective_rank_curve"][0]["effective_rank"] == 0.0  # ΔW = 0
    assert 1.0 <= m["final_effective_rank"] <= 3.0
    assert m["trainable_parameters"] == (3 * (12 + 10) if kind == "lora" else m["trainable_parameters"])
    assert len(logged) == 61 and logged[-1][0] == 60
    assert res.delta.shape == (12, 10)


def test_op_lora_regenerates_the_factors_once_per_step(monkeypatch):
    calls = []
    real = mf.build_model

    def counting(*a, **k):
        peft_model, module, params = real(*a, **k)
        module.generator.register_forward_hook(lambda *_: calls.append(1))
        return peft_model, module, params

    monkeypatch.setattr(mf, "build_model", counting)
    mf.fit(spec("op-lora", steps=7, log_every=3))
    assert len(calls) == 7 + 1  # one per training step, one for the final ΔW


def test_log_every_thins_the_curves_and_steps_to_excess_stays_exact():
    m = mf.fit(spec(steps=50, log_every=20)).metrics
    assert [p["step"] for p in m["loss_curve"]] == [0, 20, 40, 50]
    assert [p["step"] for p in m["effective_rank_curve"]] == [0, 20, 40, 50]
    init_excess = m["initial_loss"] - m["optimal_loss"]
    for key, n in m["steps_to_excess"].items():
        for p in m["loss_curve"]:
            reached = (p["loss"] - m["optimal_loss"]) / init_excess <= float(key)
            if n is None or p["step"] < n:
                assert not reached or p["step"] == 50  # final loss is recomputed in float64
            else:
                assert reached or p["step"] == 50


def test_metrics_shape():
    m = mf.fit(spec(steps=5, log_every=2)).metrics
    for key in (
        "final_loss",
        "optimal_loss",
        "excess_loss",
        "relative_excess",
        "loss_curve",
        "effective_rank_curve",
        "steps_to_excess",
        "final_effective_rank",
        "optimal_effective_rank",
        "trainable_parameters",
        "wall_s",
    ):
        assert key in m
    assert list(m["steps_to_excess"]) == ["1e-2", "1e-3", "1e-4"]
    json.dumps(m, allow_nan=False)


def test_a_diverging_run_stops_and_reports_nulls():
    m = mf.fit(spec(opt="sgd", lr=1e6, steps=200, log_every=5)).metrics
    assert m["diverged"] and m["steps_done"] < 200
    assert m["final_loss"] is None and m["relative_excess"] is None
    json.dumps(m, allow_nan=False)


def test_divergence_names_the_first_non_finite_step_not_the_log_step_that_saw_it():
    every = mf.fit(spec(opt="sgd", lr=1e6, steps=200, log_every=1)).divergence
    sparse = mf.fit(spec(opt="sgd", lr=1e6, steps=200, log_every=50)).divergence
    assert every is not None and every[0] % 50 != 0  # a step the sparse run does not log
    assert sparse is not None and sparse[0] == every[0] and not math.isfinite(sparse[1])


def test_the_task_fails_a_diverged_run_with_advice(tmp_path):
    raw = {
        "task": "matrix_factorization",
        "device": "cpu",
        "matrix": {"rows": 8, "cols": 6},
        "adapter": {"kind": "lora", "r": 2},
        "optimizer": {"name": "sgd", "lr": 1e6},
        "train": {"steps": 30},
    }
    result, code = run_spec(raw, tmp_path / "run")
    assert code == 1 and result["status"] == "failed" and result["error"]["type"] == "TrainingDiverged"
    assert re.fullmatch(
        r"training diverged at step \d+: loss (nan|inf) with lr 1e\+06; lower optimizer\.lr \(sgd\)",
        result["error"]["message"],
    ), result["error"]["message"]
    assert not (tmp_path / "run" / "adapter").exists()  # ΔW is no longer finite: nothing exported


def test_threshold_key():
    assert [mf.threshold_key(t) for t in (1e-2, 1e-3, 1e-4, 2.5e-3, 0.5)] == [
        "1e-2",
        "1e-3",
        "1e-4",
        "2.5e-3",
        "5e-1",
    ]


@pytest.mark.parametrize("kind", ARMS)
def test_the_task_end_to_end_exports_a_loadable_adapter(tmp_path, kind):
    from peft import PeftModel

    raw = {
        "task": "matrix_factorization",
        "device": "cpu",
        "matrix": {"rows": 8, "cols": 6},
        "adapter": {"kind": kind, "r": 2, "lora_alpha": 4},
        "train": {"steps": 20, "log_every": 5},
    }
    if kind == "op-lora":
        raw["adapter"]["generator"] = {"embedding_dim": 8, "hidden_dim": 4}
    result, code = run_spec(raw, tmp_path / "run")
    assert code == 0, result and result["error"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "succeeded"
    kinds = {a["kind"]: a["path"] for a in saved["artifacts"]}
    assert kinds["adapter"] == "adapter" and kinds["plot"] == "curves.png"
    events = [json.loads(line) for line in (tmp_path / "run" / "events.ndjson").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [0, 5, 10, 15, 20]

    metrics = saved["metrics"]
    assert metrics["collapse_max_abs_diff"] <= 1e-6
    loaded = PeftModel.from_pretrained(mf.ZeroLinear(8, 6), str(tmp_path / "run" / "adapter"))
    delta = mf.lora_layer(loaded).get_delta_weight("default")
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    target = mf.make_target(spec["matrix"], spec["matrix"]["spectrum"], 2, spec["seed"]).matrix
    loss = float(((delta.double() - target) ** 2).mean())
    assert loss == pytest.approx(metrics["final_loss"], rel=1e-6)
    x = torch.randn(3, 6)
    torch.testing.assert_close(loaded(x), x @ delta.T)
