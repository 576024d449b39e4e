"""Mid-training checkpoints of the generator: ``save_generator`` / ``load_generator`` (safetensors).

The file holds the generator's stacked tensors (``groups.<k>.<z|W1|b1|WA|bA|WB|bB[|WM|bM]>``) and, as metadata,
what they mean: the config, the adapter name, every layer's name and (A, B[, DoRA magnitude]) shapes, and which layers each group
stacks. Loading checks the layers and sizes first, so a checkpoint from another model or config fails with
a message naming the difference; a checkpoint whose layers are grouped differently (another chunk size) is
re-stacked layer by layer. The PEFT model itself is saved as usual (its base weights do not change).
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .bind import OPLoRAModel

FORMAT = "oplora.generator/1"


def _check_open(op: OPLoRAModel, what: str) -> None:
    if not isinstance(op, OPLoRAModel):
        raise TypeError(f"{what}: expected an OPLoRAModel (from attach), got {type(op).__name__}")
    if op.collapsed:
        raise RuntimeError(f"{what}: this OPLoRAModel was collapsed; its generator is gone")


def _metadata(op: OPLoRAModel) -> dict[str, str]:
    gen = op.generator
    return {
        "format": FORMAT,
        "config": json.dumps(op.config.to_dict()),
        "adapter_name": op.adapter_name,
        "layer_names": json.dumps(list(op.layer_names)),
        "shapes": json.dumps([[list(s) for s in layer] for layer in gen.shapes]),
        "groups": json.dumps([list(g.layers) for g in gen.groups]),
    }


def save_generator(op: OPLoRAModel, path: str | os.PathLike[str]) -> None:
    """Writes ``op.generator``'s parameters and the metadata needed to check a later load to ``path``."""
    _check_open(op, "save_generator")
    tensors = {k: v.detach().contiguous() for k, v in op.generator.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata=_metadata(op))


def load_generator(op: OPLoRAModel, path: str | os.PathLike[str]) -> None:
    """Loads parameters written by :func:`save_generator` into ``op.generator`` (in place: cached factors go
    stale and are regenerated on next use). Raises ValueError naming the first mismatch."""
    _check_open(op, "load_generator")
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        saved = f.metadata() or {}
    if saved.get("format") != FORMAT:
        raise ValueError(
            f"load_generator: {path} is not an oplora generator checkpoint (format {saved.get('format')!r})"
        )
    ours = _metadata(op)
    saved_config, our_config = json.loads(saved["config"]), json.loads(ours["config"])
    for key in ("embedding_dim", "hidden_dim"):
        if saved_config[key] != our_config[key]:
            raise ValueError(
                f"load_generator: {path} has {key}={saved_config[key]}, this model's generator {our_config[key]}"
            )
    saved_names, our_names = json.loads(saved["layer_names"]), list(op.layer_names)
    if saved_names != our_names:
        missing = sorted(set(our_names) - set(saved_names))[:3]
        extra = sorted(set(saved_names) - set(our_names))[:3]
        raise ValueError(
            f"load_generator: {path} holds {len(saved_names)} layers, this model {len(our_names)}; "
            f"missing from the file: {missing}, not in this model: {extra}"
            + ("" if missing or extra else " (same names, other order)")
        )
    saved_shapes, our_shapes = json.loads(saved["shapes"]), json.loads(ours["shapes"])
    for name, s, o in zip(our_names, saved_shapes, our_shapes, strict=True):
        if s != o:
            raise ValueError(
                f"load_generator: layer {name} has (A, B[, magnitude]) shapes {s} in {path}, {o} in this model"
            )

    device = op.generator.groups[0].z.device
    tensors = load_file(path, device=str(device))
    gen = op.generator
    if json.loads(saved["groups"]) == json.loads(ours["groups"]):
        gen.load_state_dict(tensors, strict=True)
        return
    where = {
        layer: (k, j)
        for k, layers in enumerate(json.loads(saved["groups"]))
        for j, layer in enumerate(layers)
    }
    with torch.no_grad():
        for group in gen.groups:
            for name, _ in group.named_parameters():
                rows = [
                    tensors[f"groups.{where[layer][0]}.{name}"][where[layer][1]] for layer in group.layers
                ]
                getattr(group, name).copy_(torch.stack(rows))
