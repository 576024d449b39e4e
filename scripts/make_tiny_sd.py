"""Build tiny Stable Diffusion and SDXL pipelines, a tiny CLIP model and a small captioned image set, offline.

    python scripts/make_tiny_sd.py OUT_DIR [--small]

    OUT_DIR/sd/          StableDiffusionPipeline   (save_pretrained; UNet 32/64 channels, VAE /2, CLIP text 32)
    OUT_DIR/sdxl/        StableDiffusionXLPipeline (text_time conditioning, two text encoders)
    OUT_DIR/clip/        CLIPModel + CLIPImageProcessor (image size 32) for CMMD
    OUT_DIR/data/train/  PNGs + metadata.jsonl ({"file_name", "text"})   imagefolder convention
    OUT_DIR/data/reference/  held-out PNGs for CMMD

Component sizes follow diffusers' own pipeline tests. The tokenizer is a CLIP BPE tokenizer written from
a hand-made vocab (the 256 byte symbols, with and without "</w>", plus a few merges), so nothing is
downloaded. `--small` builds a wider UNet (for the benchmark) instead of the tiny one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_models.py, beside this script


COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


def _bytes_to_unicode() -> list[str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_tokenizer(out: Path) -> None:
    """A CLIPTokenizer with a byte-level vocab and merges for the words our captions use."""
    from transformers import CLIPTokenizer

    symbols = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in ["a", "of", *COLORS, *SHAPES, "painting", "style"]:
        if len(word) < 2:
            continue
        cur = word[0]
        for i, ch in enumerate(word[1:], start=1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            vocab.setdefault(cur, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tok = CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(out))


def _text_config(projection: bool = False) -> object:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        hidden_act="gelu",
        projection_dim=32 if projection else 512,
    )


def _vae() -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        sample_size=32,
    )


def _scheduler() -> object:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def make_sd(out: Path, tok_dir: Path, small: bool = False) -> None:
    from diffusers import StableDiffusionPipeline
    from tiny_models import unet as tiny_unet
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = tiny_unet(channels=(64, 128) if small else (32, 64), layers_per_block=2 if small else 1)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config()),  # type: ignore[arg-type]
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        scheduler=_scheduler(),  # type: ignore[arg-type]
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,  # type: ignore[arg-type]
    )
    pipe.save_pretrained(str(out))


def make_sdxl(out: Path, tok_dir: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from tiny_models import CROSS_ATTN_FIRST
    from tiny_models import unet as tiny_unet
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    sdxl = {
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": (1, 1),
        "projection_class_embeddings_input_dim": 80,  # 6 * 8 time ids + 32 pooled text
    }
    unet = tiny_unet(sdxl, blocks=CROSS_ATTN_FIRST, head_dim=(2, 4), cross_attention_dim=64)
    tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=_vae(),
        scheduler=_scheduler(),  # type: ignore[arg-type]
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(True)),  # type: ignore[arg-type]
        tokenizer=tok,
        tokenizer_2=tok,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(out))


def make_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": 1000,
            "projection_dim": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 16,
        },
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(str(out))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(out)
    )


def _image(color: tuple[int, int, int], shape: str, rng: np.random.Generator, size: int) -> object:
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(180, 255, 3))
    img = Image.new("RGB", (size, size), bg)  # type: ignore[arg-type]
    d = ImageDraw.Draw(img)
    lo, hi = int(rng.integers(2, size // 4)), int(rng.integers(3 * size // 4, size - 2))
    (d.rectangle if shape == "square" else d.ellipse)([lo, lo, hi, hi], fill=color)
    return img


def make_data(out: Path, n_train: int = 8, n_ref: int = 4, size: int = 40) -> None:
    """Captioned images of coloured shapes ("a red circle painting") in the imagefolder convention."""
    rng = np.random.default_rng(0)
    combos = [(c, s) for c in COLORS for s in SHAPES]
    for split, n in (("train", n_train), ("reference", n_ref)):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            c, s = combos[(i + (3 if split == "reference" else 0)) % len(combos)]
            name = f"{i:03d}.png"
            _image(COLORS[c], s, rng, size).save(d / name)  # type: ignore[attr-defined]
            lines.append(json.dumps({"file_name": name, "text": f"a {c} {s} painting"}))
        (d / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def build_all(out: Path, small: bool = False) -> Path:
    """Everything the text-to-image tests need, under `out` (skipped when already complete)."""
    out = Path(out)
    if (out / "DONE").exists():
        return out
    tok = out / "tokenizer"
    make_tokenizer(tok)
    make_sd(out / "sd", tok, small=small)
    if not small:
        make_sdxl(out / "sdxl", tok)
        make_clip(out / "clip")
    make_data(out / "data")
    (out / "DONE").write_text("ok\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--small", action="store_true", help="a wider UNet for the benchmark (SD only)")
    a = ap.parse_args()
    print(build_all(a.out, small=a.small))


if __name__ == "__main__":
    main()
