"""Captioned images in diffusers' imagefolder convention, checked before training, sampled deterministically.

    FOLDER/metadata.jsonl   one JSON object a line: {"file_name": "0001.png", "text": "a caption"}
    FOLDER/0001.png ...

or a `datasets` split (dataset_source.py) with an image and a caption column.

`read_imagefolder` checks every line (JSON, columns, the image opens) and raises `InputError` naming the
file, line and field. `ImageCaptions.batch(u, ...)` draws micro-batch `u` from a per-epoch permutation seeded
by (seed, epoch), with crop/flip randomness seeded by (seed, u, rank): the stream depends only on the step,
so a resumed run sees exactly the batches an uninterrupted one does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...run.runner import InputError
from ...training.dataset_source import RowImage, check_columns, image_rows, load_split, open_rgb


@dataclass(frozen=True)
class Example:
    image: Path | RowImage
    caption: str


def read_dataset(
    d: dict[str, Any], split: str, split_field: str = "data.split", max_examples: int | None = None
) -> list[Example]:
    """Every (image, caption) of split `split` of `d["dataset_name"]` (named by `split_field` in errors),
    each image verified."""
    ds = load_split(
        d["dataset_name"], split, d.get("dataset_config_name"), d.get("revision"), split_field=split_field
    )
    if max_examples:
        ds = ds.select(range(min(max_examples, len(ds))))
    where = f"{d['dataset_name']} split {split!r}"
    check_columns(
        ds,
        {"data.image_column": d["image_column"], "data.caption_column": d["caption_column"]},
        where,
    )
    images = image_rows(ds, d["image_column"], "data.image_column", where)
    return [Example(im, str(c)) for im, c in zip(images, ds[d["caption_column"]], strict=True)]


def read_imagefolder(
    folder: str | Path,
    image_column: str = "file_name",
    caption_column: str = "text",
    field: str = "data.folder",
) -> list[Example]:
    """Every (image, caption) of FOLDER/metadata.jsonl, each image opened and verified."""
    from PIL import Image

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{field}: {root} does not exist or is not a folder")
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise InputError(
            f"{field}: {meta} is missing (imagefolder needs metadata.jsonl lines {{file_name, text}})"
        )
    out: list[Example] = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{meta} line {n}: not JSON ({e.msg})") from None
        for col, name in ((image_column, "data.image_column"), (caption_column, "data.caption_column")):
            if col not in rec:
                raise InputError(f"{name}: {col!r} is not a key of {meta} line {n} (keys: {sorted(rec)})")
        path = root / str(rec[image_column])
        try:
            with Image.open(path) as im:
                im.verify()
        except FileNotFoundError:
            raise InputError(f"{meta} line {n}: image {path} does not exist") from None
        except Exception as e:  # PIL raises many types for a broken file
            raise InputError(
                f"{meta} line {n}: image {path} cannot be read ({type(e).__name__}: {e})"
            ) from None
        out.append(Example(path, str(rec[caption_column])))
    if not out:
        raise InputError(f"{field}: {meta} lists no images")
    return out


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU torch.Generator seeded from `parts` (seed, step, rank, ...): the same parts, the same draws."""
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


class ImageCaptions:
    """Examples -> (pixels in [-1, 1], captions, original sizes, crop top-lefts) micro-batches."""

    def __init__(
        self, examples: list[Example], resolution: int, center_crop: bool, random_flip: bool, seed: int
    ):
        self.examples, self.resolution = examples, resolution
        self.center_crop, self.random_flip, self.seed = center_crop, random_flip, seed

    def __len__(self) -> int:
        return len(self.examples)

    def _load(self, ex: Example, g: torch.Generator) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        import numpy as np
        from PIL import Image

        res = self.resolution
        im = open_rgb(ex.image)
        original = (im.height, im.width)
        scale = res / min(im.width, im.height)  # resize the shorter side to `res`, bilinear (as diffusers)
        im = im.resize(
            (max(res, round(im.width * scale)), max(res, round(im.height * scale))), Image.BILINEAR
        )
        if self.center_crop:
            top, left = (im.height - res) // 2, (im.width - res) // 2
        else:
            top = int(torch.randint(0, im.height - res + 1, (1,), generator=g))
            left = int(torch.randint(0, im.width - res + 1, (1,), generator=g))
        im = im.crop((left, top, left + res, top + res))
        if self.random_flip and float(torch.rand((), generator=g)) < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)  # (3, H, W)
        return x, original, (top, left)

    def batch(self, u: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, Any]:
        """Micro-batch number `u` (counted over the whole run) for process `rank` of `world`."""
        n = len(self.examples)
        pixels, captions, originals, crops = [], [], [], []
        g = seeded_generator(self.seed, u, rank)
        for j in range(batch_size):
            s = (u * world + rank) * batch_size + j  # global sample index
            perm = torch.randperm(n, generator=seeded_generator(self.seed, s // n, 7919))
            ex = self.examples[int(perm[s % n])]
            x, orig, crop = self._load(ex, g)
            pixels.append(x)
            captions.append(ex.caption)
            originals.append(orig)
            crops.append(crop)
        return {
            "pixels": torch.stack(pixels),
            "captions": captions,
            "original_sizes": originals,
            "crops": crops,
        }
