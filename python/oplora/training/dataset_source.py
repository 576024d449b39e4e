"""A Hugging Face `datasets` split as a task's data source, checked before any heavy work.

    dataset_name ──load_split──► datasets.Dataset      a folder from `Dataset.save_to_disk` (load_from_disk),
                                                       any other local path or a hub name (load_dataset)
    Dataset ──check_columns──► InputError naming a missing column and listing the available ones
    Dataset ──image_rows──► [RowImage]                 every image verified; a broken one names its row

The tasks keep their own transforms: a `RowImage` is just another image source next to a file path, opened
lazily (`open_rgb`) so a large split is never held decoded in memory. Every failure is a
`runner.InputError` naming the spec field and the value.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run.runner import InputError


def load_split(
    name: str,
    split: str,
    config_name: str | None = None,
    revision: str | None = None,
    field: str = "data.dataset_name",
    split_field: str = "data.split",
) -> Any:
    """`datasets.Dataset` for `split` of `name` (hub name or local path); InputError when it cannot load."""
    import datasets

    path = Path(name)
    saved = path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))
    try:
        if saved:
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise InputError(
                        f"{split_field}: {split!r} is not a split of {name} (splits: {sorted(ds)})"
                    )
                ds = ds[split]
        else:
            kwargs: dict[str, Any] = {"split": split}
            if revision is not None:
                kwargs["revision"] = revision
            ds = datasets.load_dataset(name, config_name, **kwargs)
    except InputError:
        raise
    except Exception as e:  # datasets raises many types (missing hub repo, offline, bad split, bad files)
        where = "local path" if path.exists() else "hub name (not a local path; needs the network)"
        raise InputError(
            f"{field}: cannot load {name!r} as a {where}, {split_field} {split!r}: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(ds, datasets.Dataset):  # e.g. an IterableDataset from a script
        raise InputError(f"{field}: {name!r} split {split!r} is not a map-style datasets.Dataset")
    if len(ds) == 0:
        raise InputError(f"{field}: {name!r} split {split!r} has no rows")
    return ds


def check_columns(ds: Any, columns: dict[str, str], where: str) -> None:
    """InputError for the first `{field: column}` that `ds` lacks, listing the columns it has."""
    for field, column in columns.items():
        if column not in ds.column_names:
            raise InputError(f"{field}: column {column!r} is not in {where} (columns: {ds.column_names})")


@dataclass(frozen=True)
class RowImage:
    """The image in row `index` of a one-column dataset (image feature, not decoded)."""

    table: Any
    column: str
    index: int

    def open(self) -> Any:
        from PIL import Image

        value = self.table[self.index][self.column]
        if isinstance(value, dict) and value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        if isinstance(value, dict) and value.get("path"):
            return Image.open(value["path"])
        raise ValueError(f"row {self.index}: column {self.column!r} holds no image")


def image_rows(ds: Any, column: str, field: str, where: str) -> list[RowImage]:
    """One verified `RowImage` per row of `ds[column]` (an Image feature, or paths/bytes castable to one)."""
    import datasets

    table = ds.select_columns([column])
    try:
        table = table.cast_column(column, datasets.Image(decode=False))
    except Exception as e:
        raise InputError(
            f"{field}: column {column!r} of {where} does not hold images "
            f"({table.features[column]}): {type(e).__name__}: {e}"
        ) from None
    rows = [RowImage(table, column, i) for i in range(len(table))]
    for row in rows:
        try:
            with row.open() as im:
                im.verify()
        except Exception as e:  # PIL raises many types for a broken image
            raise InputError(
                f"{where} row {row.index}: the image in column {column!r} cannot be read ({type(e).__name__}: {e})"
            ) from None
    return rows


def open_rgb(source: Path | RowImage) -> Any:
    """An image file or a dataset row's image, as an RGB PIL image."""
    from PIL import Image

    if isinstance(source, RowImage):
        with source.open() as im:
            return im.convert("RGB")
    with Image.open(source) as im:
        return im.convert("RGB")
