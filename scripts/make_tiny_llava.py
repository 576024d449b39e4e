"""Builds a tiny LLaVA and a generated VQA set of coloured shapes, fully offline.

    OUT/model/   LlavaForConditionalGeneration (2-layer llama, 2-layer CLIP vision tower) + LlavaProcessor
                 (CLIPImageProcessor, WordLevel PreTrainedTokenizerFast with an <image> token and a
                 LLaVA-1.5-style chat template), all written with save_pretrained
    OUT/data/    train.json, eval.json in LLaVA's conversation format, images/*.png

    python scripts/make_tiny_llava.py OUT [--train 48] [--eval 16] [--image-size 32] [--hidden 64] [--layers 2]

The questions ask for a shape's colour or kind, with single-word answers, so a few hundred steps can
learn them; tests use a handful of steps and only need the plumbing to be right.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_models.py, beside this script


COLORS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = {
    "color": ["What color is the shape?", "Which color is the object?"],
    "shape": ["What shape is this?", "Which shape is shown?"],
}
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT: ...</s>"), in the HF content-list style.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _words() -> list[str]:
    words = {"USER", "ASSISTANT", ":", "?", ".", "\n", *COLORS, *SHAPES}
    for qs in QUESTIONS.values():
        for q in qs:
            words.update(q.replace("?", " ").split())
    words.update(["a", "the", "is", "it", "yes", "no", "there", "image", "describe", "this"])
    return sorted(words)


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + _words())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=512,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(
    out: Path,
    image_size: int = 32,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    vision_hidden: int = 32,
    vision_layers: int = 2,
) -> Path:
    """Writes OUT/model (model + processor) and returns that folder; `hidden`/`layers` size the LM,
    `vision_hidden`/`vision_layers` the CLIP vision tower (intermediate 2 x hidden)."""
    import torch
    from tiny_models import llama_config
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer()
    patch = 8
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=vision_hidden,
    )
    text = llama_config(
        hidden=hidden,
        layers=layers,
        heads=4,
        kv_heads=2,
        vocab=len(tokenizer),
        positions=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # The lm_head stays frozen under LoRA: at the usual 0.02 its logits span about +-1.3 at hidden 64,
        # too flat for any adapter to make a confident answer. 0.1 lets a short run learn the task.
        initializer_range=0.1,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token; "default" strategy drops it again
        chat_template=CHAT_TEMPLATE,
    )
    folder = out / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def draw(color: str, shape: str, size: tuple[int, int], rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, (245, 245, 245))
    d = ImageDraw.Draw(img)
    s = min(w, h)
    r = rng.uniform(0.3, 0.42) * s
    cx, cy = w / 2 + rng.uniform(-0.08, 0.08) * s, h / 2 + rng.uniform(-0.08, 0.08) * s
    fill = COLORS[color]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def build_data(out: Path, n_train: int = 48, n_eval: int = 16, image_size: int = 32, seed: int = 0) -> Path:
    """Writes OUT/data/{train,eval}.json and OUT/data/images; returns OUT/data."""
    rng = random.Random(seed)
    folder = out / "data"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for split, n in (("train", n_train), ("eval", n_eval)):
        for i in range(n):
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
            # Some images are not square, so padding to square is exercised.
            size = (image_size, image_size) if i % 3 else (image_size, image_size * 3 // 4)
            name = f"{split}_{i:04d}.png"
            draw(color, shape, size, rng).save(folder / "images" / name)
            kind = "color" if i % 2 == 0 else "shape"
            answer = color if kind == "color" else shape
            record = {
                "id": f"{split}-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{rng.choice(QUESTIONS[kind])}"},
                    {"from": "gpt", "value": answer},
                ],
            }
            splits[split].append(record)
    for split, records in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(records, indent=1))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    build_model(a.out, a.image_size, a.hidden, a.layers, a.seed)
    build_data(a.out, a.train, a.eval, a.image_size, a.seed)
    print(a.out)


if __name__ == "__main__":
    main()
