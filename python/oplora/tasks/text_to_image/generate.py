"""Images from a finished text-to-image run: its base pipeline, then its diffusers LoRA file loaded the
stock way (`pipe.load_lora_weights(RUN/diffusers_lora)`), same seed for both when comparing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def generate_images(
    spec: dict[str, Any],
    run_dir: Path,
    prompt: str,
    seed: int,
    steps: int | None = None,
    guidance: float | None = None,
    compare: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image with the adapter, image of the base pipeline when `compare`), each (H, W, 3) in [0, 1]."""
    from ...run.environment import resolve_device
    from .evaluate import generate
    from .pipeline import load_pipeline

    ev = dict(spec["eval"])
    if steps is not None:
        ev["num_inference_steps"] = steps
    if guidance is not None:
        ev["guidance_scale"] = guidance
    spec = {**spec, "eval": ev}
    pipe = load_pipeline(spec["model"]).to(resolve_device(spec["device"]))
    base = generate(pipe, prompt, seed, spec) if compare else None
    pipe.load_lora_weights(str(run_dir / "diffusers_lora"))
    return generate(pipe, prompt, seed, spec), base
