"""`datasets` sources for text_to_image and llava (dataset_source.py), offline: tiny `datasets.Dataset`s built
from the tiny fixtures' generated images, saved with `save_to_disk`, run end to end for 2 steps through
`run_spec`; bad columns, splits and images are refused before training with the column, split or row named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from oplora.run.runner import EXIT_OK, InputError, run_spec
from run_helpers import assert_refused
from tiny_llava import build_tiny_llava, llava_spec, one_thread  # noqa: F401
from tiny_sd import build_tiny_sd

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(rows: list[dict[str, Any]]) -> Any:
    from PIL import Image

    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["image"] = [Image.open(p).convert("RGB") for p in cols["image"]]
    return datasets.Dataset.from_dict(cols).cast_column("image", datasets.Image())


@pytest.fixture(scope="module")
def sd_assets() -> Path:
    return build_tiny_sd()


@pytest.fixture(scope="module")
def sd_dataset(sd_assets, tmp_path_factory) -> Path:
    """{train, test} with `image` and `text`, from the imagefolder fixture's train and reference images."""
    splits = {}
    for split, folder in (("train", "train"), ("test", "reference")):
        d = sd_assets / "data" / folder
        meta = [json.loads(x) for x in (d / "metadata.jsonl").read_text().splitlines() if x.strip()]
        splits[split] = _images([{"image": d / m["file_name"], "text": m["text"]} for m in meta])
    out = tmp_path_factory.mktemp("t2i-ds") / "shapes"
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def llava_assets() -> Path:
    return build_tiny_llava()


@pytest.fixture(scope="module")
def vqa_dataset(llava_assets, tmp_path_factory) -> Path:
    """{train, validation} with `image`, `question`, `answer`, from the LLaVA JSON fixture's records."""
    splits = {}
    for split, name in (("train", "train"), ("validation", "eval")):
        records = json.loads((llava_assets / "data" / f"{name}.json").read_text())
        rows = [
            {
                "image": llava_assets / "data" / "images" / r["image"],
                "question": r["conversations"][0]["value"].replace("<image>", "").strip(),
                "answer": r["conversations"][1]["value"],
            }
            for r in records
        ]
        splits[split] = _images(rows)
    out = tmp_path_factory.mktemp("vqa-ds") / "shapes"
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def t2i_spec(assets: Path, data: dict[str, Any], **eval_over: Any) -> dict[str, Any]:
    return {
        "task": "text_to_image",
        "device": "cpu",
        "model": {"pretrained": str(assets / "sd")},
        "adapter": {"kind": "op-lora", "r": 4},
        "data": {"resolution": 32, **data},
        "train": {"steps": 2, "batch_size": 1},
        "eval": {"prompts": [], "num_inference_steps": 2, "guidance_scale": 0.0, **eval_over},
    }


def test_text_to_image_trains_and_scores_cmmd_from_a_saved_dataset(sd_assets, sd_dataset, tmp_path):
    spec = t2i_spec(
        sd_assets,
        {"dataset_name": str(sd_dataset)},
        reference_split="test",
        cmmd_num_images=2,
        clip_model=str(sd_assets / "clip"),
    )
    result, code = run_spec(spec, tmp_path / "run")
    assert code == EXIT_OK, result and result["error"]
    m = result["metrics"]
    assert m["steps"] == 2 and len(m["loss_curve"]) == 2
    assert m["cmmd_num_reference"] == 4 and m["cmmd_num_generated"] == 2


def test_text_to_image_missing_caption_column_is_named(sd_assets, sd_dataset, tmp_path):
    spec = t2i_spec(sd_assets, {"dataset_name": str(sd_dataset), "caption_column": "caption"})
    assert_refused(spec, tmp_path, "data.caption_column", "'caption'", "['image', 'text']")


def test_text_to_image_missing_splits_are_named(sd_assets, sd_dataset, tmp_path):
    assert_refused(
        t2i_spec(sd_assets, {"dataset_name": str(sd_dataset), "split": "dev"}), tmp_path, "data.split", "dev"
    )
    assert_refused(
        t2i_spec(sd_assets, {"dataset_name": str(sd_dataset)}, reference_split="dev"),
        tmp_path,
        "eval.reference_split",
        "'dev'",
    )


def test_llava_trains_and_evaluates_from_a_saved_dataset(llava_assets, vqa_dataset, tmp_path):
    data = {
        "dataset_name": str(vqa_dataset),
        "eval_split": "validation",
        "max_length": 64,
        "max_eval_examples": 3,
    }
    spec = llava_spec(llava_assets, data=data, train={"steps": 2, "batch_size": 2})
    result, code = run_spec(spec, tmp_path / "run")
    assert code == EXIT_OK, result and result["error"]
    m = result["metrics"]
    assert len(m["loss_curve"]) == 2 and "eval_loss" in m and 0 <= m["vqa_accuracy"] <= 1
    preds = (tmp_path / "run" / m["predictions_path"]).read_text().splitlines()
    assert len(preds) == 3


def test_llava_missing_answer_column_is_named(llava_assets, vqa_dataset, tmp_path):
    data = {"dataset_name": str(vqa_dataset), "answer_column": "answers", "max_length": 64}
    assert_refused(
        llava_spec(llava_assets, data=data), tmp_path, "data.answer_column", "'answers'", "'question'"
    )


def test_an_image_that_does_not_decode_names_its_row(tmp_path):
    from oplora.training.dataset_source import image_rows

    good = tmp_path / "ok.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(good)
    ds = datasets.Dataset.from_dict({"image": [str(good), str(good)], "text": ["a", "b"]})
    ds = ds.cast_column("image", datasets.Image())
    assert len(image_rows(ds, "image", "data.image_column", "x")) == 2
    broken = datasets.Dataset.from_dict({"image": [{"bytes": b"png?", "path": None}] * 2, "text": ["a", "b"]})
    broken = datasets.concatenate_datasets([ds, broken.cast_column("image", datasets.Image())])
    with pytest.raises(InputError, match=r"row 2: the image in column 'image' cannot be read"):
        image_rows(broken, "image", "data.image_column", "x")
    with pytest.raises(InputError, match=r"x row 0: the image in column 'text' cannot be read"):
        image_rows(ds, "text", "data.image_column", "x")  # strings are taken as image paths
    numbers = datasets.Dataset.from_dict({"n": [1, 2]})
    with pytest.raises(InputError, match=r"data.image_column: column 'n' of x does not hold images"):
        image_rows(numbers, "n", "data.image_column", "x")


def test_a_parquet_folder_loads_and_a_missing_split_is_named(tmp_path):
    from oplora.training.dataset_source import load_split

    parquet = tmp_path / "pq"
    parquet.mkdir()
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(parquet / "train.parquet"))
    assert load_split(str(parquet), "train")["text"] == ["a", "b"]
    with pytest.raises(InputError, match=r"data.dataset_name: cannot load .* data.split 'test'"):
        load_split(str(parquet), "test")
