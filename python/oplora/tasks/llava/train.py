"""The pieces of the LLaVA training loop: deterministic batches, the masked loss, evaluation.

batch_indices(m)  the m-th global micro-batch of an endless stream of seeded per-epoch permutations,
                  this process's slice of it; a pure function of m, so resume needs no loader state
masked_loss       next-token cross-entropy summed over labelled (assistant) tokens, and their count
evaluate          eval loss (token-weighted) and, optionally, VQA accuracy of greedy answers
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...metrics.vqa import vqa_accuracy
from .data import IGNORE, Encoder, Record, collate


@cache
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def batch_indices(n: int, batch_size: int, seed: int, micro: int, rank: int = 0, world: int = 1) -> list[int]:
    """Record indices of global micro-batch `micro` for process `rank` of `world`."""
    start = (micro * world + rank) * batch_size
    return [_permutation(n, seed, p // n)[p % n] for p in range(start, start + batch_size)]


class MicroBatches(torch.utils.data.Dataset):
    """Item i = the collated micro-batch `start + i` of this process: a map-style dataset, so a DataLoader
    with workers encodes and decodes images ahead of the loop while the order stays a function of i."""

    def __init__(
        self, records: list[Record], encoder: Encoder, batch_size: int, seed: int, start: int, stop: int,
        rank: int = 0, world: int = 1,
    ) -> None:  # fmt: skip
        self.records, self.encoder, self.batch_size, self.seed = records, encoder, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = batch_indices(
            len(self.records), self.batch_size, self.seed, self.start + i, self.rank, self.world
        )
        return collate([self.encoder.encode(self.records[j]) for j in idx], self.encoder)


def micro_batch_loader(dataset: MicroBatches, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
    )


def masked_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over labelled tokens, their count). logits (B, T, V), labels (B, T)."""
    shift_logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    shift_labels = labels[:, 1:].to(logits.device)  # (B, T-1)
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return total, (shift_labels != IGNORE).sum()


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    out = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def forward_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


@torch.no_grad()
def eval_loss(
    model: Any,
    encoder: Encoder,
    records: list[Record],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    """Token-weighted mean loss over the records' assistant tokens."""
    total, count = 0.0, 0
    for i in range(0, len(records), batch_size):
        batch = to_device(
            collate([encoder.encode(r) for r in records[i : i + batch_size]], encoder), device, dtype
        )
        s, c = masked_loss(forward_logits(model, batch), batch["labels"])
        total, count = total + float(s), count + int(c)
    return total / max(count, 1)


@torch.no_grad()
def generate_answers(
    model: Any,
    encoder: Encoder,
    records: list[Record],
    batch_size: int,
    max_new_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> list[str]:
    """Greedy answers to each record's last question (left-padded batches)."""
    tok = encoder.tokenizer
    answers: list[str] = []
    for i in range(0, len(records), batch_size):
        items = [encoder.prompt(r) for r in records[i : i + batch_size]]
        batch = to_device(collate(items, encoder, left_pad=True), device, dtype)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=encoder.pad_id,
            eos_token_id=encoder.eos_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return answers


def evaluate(
    model: Any,
    encoder: Encoder,
    records: list[Record],
    ev: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    predictions_path: Path | None,
) -> dict[str, Any]:
    """{eval_loss, vqa_accuracy?}; writes one JSON line per question to `predictions_path` when VQA is on."""
    was_training = model.training
    model.eval()
    try:
        metrics: dict[str, Any] = {
            "eval_loss": eval_loss(model, encoder, records, ev["batch_size"], device, dtype)
        }
        if ev.get("vqa", True):
            preds = generate_answers(
                model, encoder, records, ev["batch_size"], ev["max_new_tokens"], device, dtype
            )
            scores = [vqa_accuracy(p, r.answers) for p, r in zip(preds, records, strict=True)]
            metrics["vqa_accuracy"] = sum(scores) / len(scores)
            if predictions_path is not None:
                lines = [
                    json.dumps(
                        {
                            "id": r.id,
                            "question": r.question,
                            "prediction": p,
                            "answers": r.answers,
                            "accuracy": s,
                        }
                    )
                    for r, p, s in zip(records, preds, scores, strict=True)
                ]
                predictions_path.write_text("\n".join(lines) + "\n")
    finally:
        model.train(was_training)
    return metrics
