"""An answer from a finished LLaVA run: its base model with the run's PEFT adapter loaded the stock way
(`PeftModel.from_pretrained(base, RUN/adapter)`), the run's processor and prompt format, greedy decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def answer_question(
    spec: dict[str, Any], run_dir: Path, image: Path, question: str, max_new_tokens: int = 32
) -> str:
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from ...run.environment import resolve_device
    from ...run.runner import InputError
    from .data import Encoder, Record
    from .model import DTYPES
    from .train import generate_answers

    if not image.is_file():
        raise InputError(f"--image: {image} does not exist")
    adapter_dir = run_dir / "adapter"
    m = spec["model"]
    dtype, device = DTYPES[m["dtype"]], resolve_device(spec["device"])
    base = LlavaForConditionalGeneration.from_pretrained(
        m["pretrained"], revision=m.get("revision"), dtype=dtype
    )
    model = PeftModel.from_pretrained(base.to(device), str(adapter_dir)).eval()
    processor = AutoProcessor.from_pretrained(str(adapter_dir))
    encoder = Encoder(processor, spec["data"]["max_length"], spec["data"]["pad_to_square"])
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
    ]
    record = Record(id="question", image=image, messages=messages)
    with torch.no_grad():
        out = generate_answers(model, encoder, [record], 1, max_new_tokens, device, dtype)
    return out[0]
