"""LLaVA conversation data: records, the processor's chat template, assistant-only labels, batches.

    train.json ──load_records──► [Record(id, image path | None, messages, answers)]   (checked up front)
    Record ──Encoder.encode──► input_ids (<image> expanded to N image tokens), labels (-100 except the
                               assistant's tokens), the image (padded to square)
    [encoded] ──collate──► {input_ids, attention_mask, labels, pixel_values}   (right-padded)

A `datasets` split with image, question and answer columns (dataset_records) becomes single-turn records:
`<image>\nquestion` from the user, the answer (the most common one when the column holds a list) from the
assistant, and the answer(s) as the VQA references.

LLaVA's JSON: `[{"id", "image", "conversations": [{"from": "human", "value": "<image>\\nQ"},
{"from": "gpt", "value": "A"}, ...]}]`; an optional `answers` list gives VQA reference answers for the
last question (default: the last assistant turn).

Labels: the conversation is rendered with the processor's chat template three ways per assistant turn
(everything before it with the generation prompt, everything up to and including it, everything), which
gives the assistant's character span; tokens starting inside a span are labelled, all others are -100.
When the template writes no end-of-sequence token after an assistant turn (llava-hf's does not), one is
inserted and labelled, so the model learns to stop.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ...training.dataset_source import RowImage

IMAGE = "<image>"
IGNORE = -100
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """Bad data, naming the field, file or record; the task re-raises it as runner.InputError."""


@dataclass
class Record:
    id: str
    image: Path | RowImage | None
    messages: list[dict[str, Any]]
    answers: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        user = [m for m in self.messages if m["role"] == "user"][-1]
        return " ".join(c["text"] for c in user["content"] if c["type"] == "text")


def _content(value: str) -> list[dict[str, Any]]:
    """'<image>\\nWhat is it?' -> [{"type": "image"}, {"type": "text", "text": "What is it?"}]."""
    out: list[dict[str, Any]] = []
    for i, part in enumerate(value.split(IMAGE)):
        if i > 0:
            out.append({"type": "image"})
        if part.strip():
            out.append({"type": "text", "text": part.strip()})
    return out


def load_records(json_path: Path, image_folder: Path | None, field_name: str) -> list[Record]:
    """Read and check a LLaVA JSON file. Raises DataError naming `field_name`, the record and the problem."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataError(f"{field_name}: {json_path} does not exist")
    try:
        raw = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{field_name}: {json_path} is not valid JSON ({e})") from e
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{field_name}: {json_path} must hold a non-empty JSON list of records")
    records = []
    for i, r in enumerate(raw):
        rid = str(r.get("id", i)) if isinstance(r, dict) else str(i)
        where = f"{field_name}: record {i} (id {rid!r})"
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected an object with 'conversations'")
        conv = r.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise DataError(f"{where}: empty conversation ('conversations' must be a non-empty list)")
        messages, n_image_tokens = [], 0
        for j, turn in enumerate(conv):
            if (
                not isinstance(turn, dict)
                or turn.get("from") not in _ROLES
                or not isinstance(turn.get("value"), str)
            ):
                raise DataError(
                    f"{where}: conversations[{j}] must be {{'from': one of {sorted(_ROLES)}, 'value': string}}"
                )
            n_image_tokens += turn["value"].count(IMAGE)
            role = _ROLES[turn["from"]]
            if role == "assistant" and IMAGE in turn["value"]:
                raise DataError(f"{where}: conversations[{j}] is an assistant turn holding {IMAGE}")
            messages.append({"role": role, "content": _content(turn["value"])})
        if not any(m["role"] == "assistant" and m["content"] for m in messages):
            raise DataError(f"{where}: empty conversation (no non-empty assistant turn to learn from)")
        if not any(m["role"] == "user" for m in messages):
            raise DataError(f"{where}: empty conversation (no human turn)")
        image = r.get("image")
        path = None
        if image:
            if n_image_tokens != 1:
                raise DataError(
                    f"{where}: the record has an image ({image!r}) but its conversation holds "
                    f"{n_image_tokens} {IMAGE} tokens; expected exactly one"
                )
            path = Path(image_folder or json_path.parent) / str(image)
            if not path.is_file():
                raise DataError(f"{where}: image file {path} does not exist")
        elif n_image_tokens:
            raise DataError(f"{where}: the conversation holds {IMAGE} but the record has no 'image'")
        answers = r.get("answers")
        if answers is None:
            last = [m for m in messages if m["role"] == "assistant"][-1]
            answers = [" ".join(c["text"] for c in last["content"])]
        elif not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
            raise DataError(f"{where}: 'answers' must be a non-empty list of strings")
        records.append(Record(rid, path, messages, list(answers)))
    return records


def dataset_records(
    d: dict[str, Any], split_field: str = "split", max_rows: int | None = None
) -> list[Record]:
    """Single-turn VQA records from the split `d[split_field]` of `d["dataset_name"]`; InputError naming the
    field and row."""
    from ...training.dataset_source import check_columns, image_rows, load_split

    split = d[split_field]
    ds = load_split(
        d["dataset_name"],
        split,
        d.get("dataset_config_name"),
        d.get("revision"),
        split_field=f"data.{split_field}",
    )
    if max_rows:
        ds = ds.select(range(min(max_rows, len(ds))))
    where = f"{d['dataset_name']} split {split!r}"
    cols = {f"data.{k}": d[k] for k in ("image_column", "question_column", "answer_column")}
    check_columns(ds, cols, where)
    images = image_rows(ds, d["image_column"], "data.image_column", where)
    records = []
    for i, (image, q, a) in enumerate(
        zip(images, ds[d["question_column"]], ds[d["answer_column"]], strict=True)
    ):
        answers = [a] if isinstance(a, str) else a
        if not (
            isinstance(answers, list) and answers and all(isinstance(x, str) and x.strip() for x in answers)
        ):
            raise DataError(
                f"data.answer_column: {where} row {i}: expected a non-empty string or list of strings, got {a!r}"
            )
        if not isinstance(q, str) or not q.replace(IMAGE, "").strip():
            raise DataError(f"data.question_column: {where} row {i}: expected a non-empty string, got {q!r}")
        messages = [
            {"role": "user", "content": _content(f"{IMAGE}\n{q.replace(IMAGE, '').strip()}")},
            {"role": "assistant", "content": _content(Counter(answers).most_common(1)[0][0])},
        ]
        records.append(Record(str(i), image, messages, list(answers)))
    return records


def image_token_count(processor: Any) -> int:
    """How many image tokens one <image> becomes (576 for llava-1.5 at 336 px), measured by the processor."""
    from PIL import Image

    ids = processor(text=IMAGE, images=Image.new("RGB", (8, 8)), return_tensors="pt")["input_ids"][0]
    return int((ids == processor.image_token_id).sum())


def pad_to_square(image: Any, background: tuple[int, ...]) -> Any:
    """LLaVA's `expand2square`: centre the image on a square of `background` (the processor's mean colour)."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


class Encoder:
    """Turns records into token ids, labels and pixel values with a LLaVA processor."""

    def __init__(self, processor: Any, max_length: int, square: bool = True) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.square = square
        self.n_image = image_token_count(processor)
        self.image_token_id = int(processor.image_token_id)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        mean = getattr(processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.background = tuple(int(round(255 * m)) for m in mean)
        if processor.chat_template is None:
            raise DataError("model: the processor has no chat template; LLaVA data needs one")

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return text.replace(IMAGE, IMAGE * self.n_image)

    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def encode(self, record: Record) -> dict[str, Any]:
        """{input_ids, labels: LongTensor (T,), image: PIL | None}; T <= max_length."""
        full = self._render(record.messages, False)
        spans = []
        for i, m in enumerate(record.messages):
            if m["role"] != "assistant":
                continue
            before = self._render(record.messages[:i], True)
            upto = self._render(record.messages[: i + 1], False)
            if not (full.startswith(before) and full.startswith(upto) and upto.startswith(before)):
                raise DataError(
                    "model: the processor's chat template does not render conversations prefix-consistently, "
                    "so assistant tokens cannot be located for the loss mask"
                )
            spans.append((len(before), len(upto)))
        ids, offsets = self._tokenize(full)
        out_ids: list[int] = []
        labels: list[int] = []
        span_i = 0
        for tok, (start, end) in zip(ids, offsets, strict=True):
            # Close spans that ended before this token (inserting EOS when the template wrote none).
            while span_i < len(spans) and start >= spans[span_i][1] and end > start:
                self._close_span(out_ids, labels)
                span_i += 1
            inside = span_i < len(spans) and spans[span_i][0] <= start < spans[span_i][1] and end > start
            out_ids.append(tok)
            labels.append(tok if inside else IGNORE)
        while span_i < len(spans):
            self._close_span(out_ids, labels)
            span_i += 1
        if len(out_ids) > self.max_length:
            out_ids, labels = out_ids[: self.max_length], labels[: self.max_length]
        n_img = sum(1 for t in out_ids if t == self.image_token_id)
        if record.image is not None and n_img != self.n_image:
            raise DataError(
                f"data.max_length: {self.max_length} truncates the {self.n_image} image tokens of record "
                f"{record.id!r}; raise max_length or shorten the text before the image"
            )
        image = self.load_image(record.image) if record.image is not None else None
        return {
            "input_ids": torch.tensor(out_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "image": image,
        }

    def _close_span(self, ids: list[int], labels: list[int]) -> None:
        """After an assistant span: make sure it ends with a labelled EOS."""
        labelled = [i for i, lab in enumerate(labels) if lab != IGNORE]
        if self.eos_id is None or (labelled and ids[labelled[-1]] == self.eos_id):
            return
        ids.append(self.eos_id)
        labels.append(self.eos_id)

    def prompt(self, record: Record) -> dict[str, Any]:
        """The generation prompt for the record's last question: ids up to the last assistant turn."""
        last = max(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
        ids, _ = self._tokenize(self._render(record.messages[:last], True))
        image = self.load_image(record.image) if record.image is not None else None
        return {"input_ids": torch.tensor(ids[-self.max_length :], dtype=torch.long), "image": image}

    def load_image(self, source: Path | RowImage) -> Any:
        from ...training.dataset_source import open_rgb

        image = open_rgb(source)
        return pad_to_square(image, self.background) if self.square else image

    def pixel_values(self, images: list[Any]) -> torch.Tensor:
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


def collate(items: list[dict[str, Any]], encoder: Encoder, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest item (right for training, left for generation) and stack the images."""
    longest = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), longest), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    labels = torch.full((len(items), longest), IGNORE, dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x["input_ids"])
        sl = slice(longest - n, longest) if left_pad else slice(0, n)
        ids[i, sl] = x["input_ids"]
        mask[i, sl] = 1
        if "labels" in x:
            labels[i, sl] = x["labels"]
    batch = {"input_ids": ids, "attention_mask": mask}
    if not left_pad:
        batch["labels"] = labels
    images = [x["image"] for x in items if x["image"] is not None]
    if images:
        batch["pixel_values"] = encoder.pixel_values(images)
    return batch
