"""Loading a diffusers pipeline (SD 1.x/2.x or SDXL, told apart by its components) and encoding prompts.

    model.pretrained (hub id or folder) ──DiffusionPipeline.from_pretrained──► pipe
    pipe.text_encoder_2 present / unet addition_embed_type == "text_time"  ─►  SDXL, else SD

`encode_prompts` and `time_ids` follow diffusers' `train_text_to_image_lora(_sdxl).py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...run.runner import InputError
from .. import looks_local


def check_model_path(name: str, field: str = "model.pretrained") -> None:
    """A local path must exist and be a diffusers pipeline folder (model_index.json)."""
    if not looks_local(name):
        return  # a hub id: from_pretrained resolves it (or fails with the hub's own message)
    p = Path(name).expanduser()
    if not p.exists():
        raise InputError(f"{field}: {p} does not exist")
    if not (p / "model_index.json").is_file():
        raise InputError(f"{field}: {p} is not a diffusers pipeline folder (no model_index.json)")


def load_pipeline(model: dict[str, Any], weight_dtype: torch.dtype = torch.float32) -> Any:
    """The pipeline of `model.pretrained` (+ a separate `model.vae`), with a UNet; raises InputError otherwise.
    The UNet and the text encoders load in `weight_dtype` (training's frozen-weight dtype, so fp32 copies are
    never held), the VAE in fp32 (SDXL's VAE overflows in fp16)."""
    from diffusers import AutoencoderKL, DiffusionPipeline

    check_model_path(model["pretrained"])
    kw: dict[str, Any] = {"dtype": {"default": weight_dtype, "vae": torch.float32}}
    for key in ("revision", "variant"):
        if model.get(key):
            kw[key] = model[key]
    if model.get("vae"):
        if looks_local(model["vae"]) and not (Path(model["vae"]).expanduser() / "config.json").is_file():
            raise InputError(f"model.vae: {model['vae']} is not a diffusers VAE folder (no config.json)")
        kw["vae"] = AutoencoderKL.from_pretrained(model["vae"], dtype=torch.float32)
    try:
        pipe = DiffusionPipeline.from_pretrained(model["pretrained"], **kw)
    except OSError as e:  # a component folder without its config or weights, or a hub id that cannot load
        raise InputError(f"model.pretrained: cannot load a pipeline from {model['pretrained']} ({e})") from e
    if getattr(pipe, "unet", None) is None or getattr(pipe, "vae", None) is None:
        raise InputError(
            f"model.pretrained: {model['pretrained']} ({type(pipe).__name__}) has no UNet and VAE; "
            "expected a Stable Diffusion or SDXL pipeline"
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_sdxl(pipe: Any) -> bool:
    return (
        getattr(pipe, "text_encoder_2", None) is not None
        or getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
    )


def text_encoders(pipe: Any) -> list[tuple[str, Any, Any]]:
    """[(name, tokenizer, text_encoder)] in the pipeline's order."""
    out = [("text_encoder", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        out.append(("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2))
    return out


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def vae_scale(pipe: Any) -> int:
    """Pixels per latent: 2^(len(vae.config.block_out_channels) - 1)."""
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def check_resolution(pipe: Any, resolution: int) -> None:
    """The UNet halves the latent (len(block_out_channels) - 1) times: the resolution must divide by
    vae_scale · 2^(unet downsamplings), or the skip connections do not line up; the SD/SDXL pipelines
    also require a multiple of 8 for generation."""
    unet_down = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    need = max(8, vae_scale(pipe) * unet_down)
    if resolution % need:
        raise InputError(
            f"data.resolution: {resolution} is not a multiple of {need} (VAE /{vae_scale(pipe)} "
            f"x UNet /{unet_down}); try {max(need, round(resolution / need) * need)}"
        )


def encode_prompts(
    encoders: list[tuple[Any, torch.Tensor]], sdxl: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(text_encoder, input_ids) pairs -> (encoder_hidden_states (B, T, D), pooled (B, P) or None).

    SD: the last hidden state. SDXL: each encoder's penultimate hidden states concatenated on D, and the
    second encoder's projected pooled output."""
    if not sdxl:
        te, ids = encoders[0]
        return te(ids.to(te.device))[0], None
    states, pooled = [], None
    for te, ids in encoders:
        out = te(ids.to(te.device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = getattr(out, "text_embeds", None)
        if pooled is None:
            pooled = out[0]
    return torch.cat(states, dim=-1), pooled


def time_ids(
    original_sizes: list[tuple[int, int]], crops: list[tuple[int, int]], resolution: int
) -> torch.Tensor:
    """SDXL micro-conditioning: (original h, w, crop top, left, target h, w) per example -> (B, 6)."""
    return torch.tensor(
        [[*o, *c, resolution, resolution] for o, c in zip(original_sizes, crops, strict=True)],
        dtype=torch.float32,
    )
