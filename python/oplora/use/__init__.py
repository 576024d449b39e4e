"""Using what a run trained, the stock way: images from a text-to-image run's base pipeline with its
diffusers LoRA file loaded (`pipe.load_lora_weights`), answers from a LLaVA run's base model with its PEFT
adapter loaded (`PeftModel.from_pretrained`).

    python -m oplora generate RUN --prompt "..." --out img.png [--seed 0] [--steps N] [--guidance G] [--compare]
    python -m oplora answer RUN --image photo.jpg --question "..." [--max-new-tokens 32]

Each prints one JSON line (what was written / the answer). A run of the wrong task, a run that did not
finish, or one whose adapter files are missing is refused (InputError, exit 2) before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..run.rundir import write_bytes_atomic
from ..run.runner import InputError

__all__ = ["read_run", "adapter_file", "save_png", "generate_main", "answer_main"]

#: What each task's use needs from its run directory (relative paths).
ADAPTER_FILES = {
    "text_to_image": "diffusers_lora/pytorch_lora_weights.safetensors",
    "llava": "adapter/adapter_model.safetensors",
}


def read_run(run_dir: str | Path, task: str) -> dict[str, Any]:
    """The validated spec of a finished `task` run in `run_dir`; InputError naming the file otherwise."""
    from ..run.spec import SpecError, validate_spec

    d = Path(run_dir)
    spec_file = d / "spec.json"
    if not spec_file.is_file():
        raise InputError(f"{d}: not a run directory (no spec.json)")
    try:
        spec = validate_spec(json.loads(spec_file.read_text()))
    except (json.JSONDecodeError, SpecError) as e:
        raise InputError(f"{spec_file}: {e}") from e
    if spec["task"] != task:
        raise InputError(f"{d}: a {spec['task']} run; this needs a {task} run")
    adapter_file(d, task)
    return spec


def adapter_file(run_dir: Path, task: str) -> Path:
    """The run's adapter file for `task`; InputError when it is missing (run unfinished or files moved) or
    not readable safetensors."""
    from ..inspect import open_safetensors

    f = run_dir / ADAPTER_FILES[task]
    if not f.is_file():
        raise InputError(f"{f}: missing (the run did not finish, or its adapter files were moved)")
    try:
        with open_safetensors(f):
            pass
    except ValueError as e:
        raise InputError(str(e)) from None
    return f


def save_png(path: Path, *images: Any) -> Path:
    """Images (H, W, 3) in [0, 1] side by side as one PNG, written atomically (temp file, then rename)."""
    import io

    import numpy as np
    from PIL import Image

    row = np.concatenate(images, axis=1)
    png = io.BytesIO()
    Image.fromarray((row * 255).round().clip(0, 255).astype(np.uint8)).save(png, format="PNG")
    write_bytes_atomic(path, png.getvalue())
    return path


def check_out(path: Path) -> None:
    """--out must be a .png path whose folder is (or can be) a folder, and not an existing folder."""
    if path.suffix.lower() != ".png":
        raise InputError(f"--out: {path} must end in .png")
    if path.is_dir():
        raise InputError(f"--out: {path} is a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"--out: {parent} is a file, not a folder")
            break


def generate_main(
    run_dir: str, prompt: str, out: str, seed: int, steps: int | None, guidance: float | None, compare: bool
) -> dict[str, Any]:
    from ..tasks.text_to_image.generate import generate_images

    d, o = Path(run_dir), Path(out)
    spec = read_run(d, "text_to_image")
    check_out(o)
    tuned, base = generate_images(spec, d, prompt, seed, steps, guidance, compare)
    save_png(o, *([base, tuned] if base is not None else [tuned]))
    return {"image": str(o.resolve()), "compare": compare, "prompt": prompt, "seed": seed}


def answer_main(run_dir: str, image: str, question: str, max_new_tokens: int) -> dict[str, Any]:
    from ..tasks.llava.answer import answer_question

    d = Path(run_dir)
    spec = read_run(d, "llava")
    return {"answer": answer_question(spec, d, Path(image), question, max_new_tokens), "question": question}
