"""Bad llava input is refused before training starts (exit 2), naming the field, file or record."""

from __future__ import annotations

import json

import pytest
from oplora.plan import plan
from oplora.run.runner import EXIT_INVALID, InputError, run_spec
from oplora.tasks.llava.data import DataError, load_records
from tiny_llava import build_tiny_llava, llava_spec, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tiny_llava():
    return build_tiny_llava()


def _record(**over):
    r = {
        "id": "r1",
        "image": "train_0000.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the shape?"},
            {"from": "gpt", "value": "red"},
        ],
    }
    r.update(over)
    return r


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            _record(
                conversations=[{"from": "human", "value": "What color?"}, {"from": "gpt", "value": "red"}]
            ),
            r"record 1 \(id 'r1'\): the record has an image \('train_0000.png'\) but its conversation holds 0 <image>",
        ),
        (
            _record(image=None),
            r"record 1 \(id 'r1'\): the conversation holds <image> but the record has no 'image'",
        ),
        (_record(image="nope.png"), r"record 1 \(id 'r1'\): image file .*nope.png does not exist"),
        (_record(conversations=[]), r"record 1 \(id 'r1'\): empty conversation"),
        (
            _record(conversations=[{"from": "human", "value": "<image>\nQ?"}]),
            r"record 1 \(id 'r1'\): empty conversation",
        ),
    ],
)
def test_bad_records_are_named(tiny_llava, tmp_path, record, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_record(id="ok"), record]))
    with pytest.raises(DataError, match=r"^data.train_json: " + message):
        load_records(path, tiny_llava / "data" / "images", "data.train_json")


def _refused(spec, out):
    result, code = run_spec(spec, out)
    assert code == EXIT_INVALID, result
    assert result["error"]["type"] == "InputError"
    events = [json.loads(line) for line in (out / "events.ndjson").read_text().splitlines()]
    assert not [e for e in events if e["type"] in ("step", "checkpoint")]
    return result["error"]["message"]


def test_the_run_refuses_a_missing_image_before_training(tiny_llava, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_record(image="missing.png")]))
    spec = llava_spec(tiny_llava)
    spec["data"]["train_json"] = str(path)
    msg = _refused(spec, tmp_path / "run")
    assert "data.train_json: record 0 (id 'r1'): image file" in msg and "missing.png" in msg


def test_a_model_that_is_not_llava_is_refused(tiny_llava, tmp_path):
    from tiny_models import llama_config

    llama_config(layers=1, heads=2, kv_heads=2).save_pretrained(tmp_path / "llama")
    spec = llava_spec(tiny_llava, model={"pretrained": str(tmp_path / "llama")})
    msg = _refused(spec, tmp_path / "run")
    assert msg.startswith("model.pretrained:") and "is not a LLaVA model" in msg and "'llama'" in msg


def test_max_length_shorter_than_the_image_tokens_is_refused(tiny_llava, tmp_path):
    spec = llava_spec(tiny_llava)
    spec["data"]["max_length"] = 12
    msg = _refused(spec, tmp_path / "run")
    assert msg.startswith("data.max_length: 12") and "16 tokens one image takes" in msg


def test_a_plan_that_does_not_fit_is_refused_before_loading_weights(tiny_llava, tmp_path):
    spec = llava_spec(
        tiny_llava, adapter={"kind": "op-lora", "r": 4_000_000, "generator": {"hidden_dim": 64}}
    )
    msg = _refused(spec, tmp_path / "run")
    assert msg.startswith("memory: does not fit")
    for knob in ("adapter.r = 4000000", "adapter.generator.hidden_dim = 64", "adapter.target_modules"):
        assert knob in msg


def test_target_modules_matching_no_linear_are_refused_before_loading_weights(tiny_llava, tmp_path):
    spec = llava_spec(tiny_llava, adapter={"kind": "lora", "r": 4, "target_modules": ["q_projj"]})
    msg = _refused(spec, tmp_path / "run")
    assert msg == "adapter.target_modules: ['q_projj'] match no layer of the model"
    with pytest.raises(InputError, match=r"^adapter\.target_modules: \['q_projj'\] match no layer"):
        plan(spec)  # `oplora plan` says so too, instead of "0 layers, fits"


def test_a_model_path_that_does_not_exist_is_named_not_sent_to_the_hub(tiny_llava, tmp_path):
    spec = llava_spec(tiny_llava, model={"pretrained": str(tmp_path / "nope")})
    assert _refused(spec, tmp_path / "run") == f"model.pretrained: {tmp_path / 'nope'} does not exist"
    with pytest.raises(DataError, match=r"^model\.pretrained: .*nope does not exist$"):
        plan(spec)  # was the hub's "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"


def test_an_image_folder_that_does_not_exist_is_named(tiny_llava, tmp_path):
    spec = llava_spec(tiny_llava)
    spec["data"]["image_folder"] = str(tmp_path / "no-images")
    assert _refused(spec, tmp_path / "run") == f"data.image_folder: {tmp_path / 'no-images'} is not a folder"
