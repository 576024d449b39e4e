"""The Python side validates specs against the committed JSON Schema and fills the same defaults."""

from __future__ import annotations

import pytest
from oplora.run.spec import NO_DORA, SpecError, validate_spec


def test_defaults_filled_through_unions():
    spec = validate_spec({"task": "matrix_factorization"})
    assert spec["adapter"]["kind"] == "op-lora"
    assert spec["adapter"]["generator"]["embedding_dim"] == 128
    assert spec["adapter"]["generator"]["hidden_dim"] == 32
    assert spec["optimizer"]["name"] == "adam"
    assert spec["device"] == "auto"


def test_lora_branch_gets_no_generator():
    spec = validate_spec({"task": "matrix_factorization", "adapter": {"kind": "lora", "r": 4}})
    assert "generator" not in spec["adapter"]
    assert spec["adapter"]["r"] == 4


def test_every_problem_is_listed_with_its_path():
    with pytest.raises(SpecError) as e:
        validate_spec(
            {"task": "matrix_factorization", "adapter": {"kind": "op-lora", "r": -1, "bogus": 1}, "seed": "x"}
        )
    problems = e.value.problems
    assert any(p.startswith("adapter.r:") for p in problems)
    assert any(p.startswith("adapter:") and "bogus" in p for p in problems)
    assert any(p.startswith("seed:") for p in problems)


def test_unknown_task_names_the_choices():
    with pytest.raises(SpecError) as e:
        validate_spec({"task": "nope"})
    assert e.value.problems[0].startswith("task: expected one of")
    assert "'nope'" in e.value.problems[0]


def test_unknown_adapter_kind_is_named():
    with pytest.raises(SpecError) as e:
        validate_spec({"task": "matrix_factorization", "adapter": {"kind": "dora"}})
    assert e.value.problems == ["adapter.kind: expected one of ['lora', 'op-lora'], got 'dora'"]


def test_input_is_not_mutated():
    raw = {"task": "matrix_factorization"}
    validate_spec(raw)
    assert raw == {"task": "matrix_factorization"}


def test_mf_rank_above_min_rows_cols_is_refused():
    spec = {
        "task": "matrix_factorization",
        "matrix": {"rows": 4, "cols": 6},
        "adapter": {"kind": "lora", "r": 5},
    }
    with pytest.raises(SpecError) as e:
        validate_spec(spec)
    assert e.value.problems == ["adapter.r: rank 5 exceeds min(matrix.rows, matrix.cols) = 4, got 5"]
    spec["adapter"]["r"] = 4
    assert validate_spec(spec)["adapter"]["r"] == 4


@pytest.mark.parametrize("kind", ["lora", "op-lora"])
def test_mf_refuses_dora_with_the_reason(kind):
    spec = {"task": "matrix_factorization", "adapter": {"kind": kind, "use_dora": True}}
    with pytest.raises(SpecError) as e:
        validate_spec(spec)
    assert e.value.problems == [f"adapter.use_dora: {NO_DORA}, got true"]
    assert "column norm" in NO_DORA and "zero" in NO_DORA
    spec["adapter"]["use_dora"] = False
    assert validate_spec(spec)["adapter"]["use_dora"] is False


@pytest.mark.parametrize("task", ["matrix_factorization", "text_to_image", "llava"])
@pytest.mark.parametrize("kind", ["lora", "op-lora"])
def test_use_rslora_defaults_false_and_must_be_a_boolean(task, kind):
    extra = {
        "text_to_image": {"model": {"pretrained": "x"}, "data": {"folder": "d"}},
        "llava": {"model": {"pretrained": "x"}, "data": {"train_json": "t.json", "image_folder": "i"}},
    }.get(task, {})
    spec = {"task": task, "adapter": {"kind": kind, "r": 4}, **extra}
    assert validate_spec(spec)["adapter"]["use_rslora"] is False
    assert validate_spec({**spec, "adapter": {"kind": kind, "use_rslora": True}})["adapter"]["use_rslora"]
    with pytest.raises(SpecError) as e:
        validate_spec({**spec, "adapter": {"kind": kind, "use_rslora": "yes"}})
    assert any(p.startswith("adapter.use_rslora:") for p in e.value.problems), e.value.problems
