"""Evaluation: validation-prompt images (PNGs + a grid, emitted as artifacts as they appear) and CMMD
between images generated from the reference captions and the reference images (metrics/cmmd.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

_EMBEDDERS: dict[tuple[str, str], Any] = {}
_REFERENCE: dict[tuple[str, str, str], torch.Tensor] = {}


def generate(pipe: Any, prompt: str, seed: int, spec: dict[str, Any]) -> np.ndarray:
    """One image (H, W, 3) in [0, 1], float32, from a CPU generator seeded with `seed`."""
    ev, res = spec["eval"], spec["data"]["resolution"]
    out = pipe(
        prompt,
        num_inference_steps=ev["num_inference_steps"],
        guidance_scale=ev["guidance_scale"],
        height=res,
        width=res,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.asarray(out.images[0], dtype=np.float32)


def _to_pil(x: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray((x * 255).round().clip(0, 255).astype(np.uint8))


def _reference_captions(folder: Path, fallback: list[str]) -> list[str]:
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        caps = [json.loads(x).get("text", "") for x in meta.read_text().splitlines() if x.strip()]
        if caps:
            return caps
    return fallback


def evaluate(
    pipe: Any,
    spec: dict[str, Any],
    ctx: Any,
    step: int,
    final: bool,
    examples: list[Any],
    dtype: torch.dtype,
    reference: list[Any] | None = None,
) -> dict[str, Any]:
    """Validation images, and CMMD against `eval.reference_folder` or `reference` (the examples of
    `eval.reference_split`)."""
    from diffusers.utils import make_image_grid

    from ...metrics.cmmd import ClipEmbedder, cmmd, load_images

    ev, seed = spec["eval"], int(spec["seed"])
    tag = "final" if final else f"step-{step:06d}"
    out: dict[str, Any] = {}
    arrays, pils, paths = [], [], []
    for i, prompt in enumerate(ev["prompts"]):
        for j in range(ev["num_images_per_prompt"]):
            x = generate(pipe, prompt, seed + 1000 * i + j, spec)
            arrays.append(x)
            img = _to_pil(x)
            path = ctx.path("samples", tag, f"{i:02d}-{j:02d}.png")
            img.save(path)
            ctx.artifact("image", path, step=step, label=prompt)
            pils.append(img)
            paths.append(ctx.rel(path))
    if pils:
        grid = make_image_grid(pils, rows=len(ev["prompts"]), cols=ev["num_images_per_prompt"])
        gpath = ctx.path("samples", tag, "grid.png")
        grid.save(gpath)
        ctx.artifact("grid", gpath, step=step)
        out["samples"] = paths
        out["grid"] = ctx.rel(gpath)
        if final:  # exact values, for checking that the exported file reproduces the trained model
            np.save(ctx.path("samples", tag, "images.npy"), np.stack(arrays))
    if ev.get("reference_folder") or reference:
        from ...training.dataset_source import open_rgb

        dev = str(ctx.device or "cpu")
        key = (ev["clip_model"], dev)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = ClipEmbedder(ev["clip_model"], dev)
        emb = _EMBEDDERS[key]
        if reference:
            d = spec["data"]
            source = f"{d['dataset_name']}:{d.get('dataset_config_name')}:{d.get('revision')}:{ev['reference_split']}"
            captions = [e.caption for e in reference]
        else:
            ref_dir = Path(ev["reference_folder"])
            source = str(ref_dir.resolve())
            captions = _reference_captions(ref_dir, [e.caption for e in examples])
        rkey = (*key, source)
        if rkey not in _REFERENCE:
            images = [open_rgb(e.image) for e in reference] if reference else load_images(ref_dir)
            _REFERENCE[rkey] = emb(images)
        gen = [
            _to_pil(generate(pipe, captions[k % len(captions)], seed + 10_000 + k, spec))
            for k in range(ev["cmmd_num_images"])
        ]
        r = cmmd(_REFERENCE[rkey], gen, emb)
        out.update(
            {
                "cmmd": r["cmmd"],
                "cmmd_num_reference": r["num_reference"],
                "cmmd_num_generated": r["num_generated"],
            }
        )
    return out
