"""Inspection without weights: the LoRA-targetable modules of a model (built on the meta device) and the
contents of a saved adapter directory. The SDK reaches these through `oplora.run.quick`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

MF_TASKS = ("matrix_factorization", "matrix_factorization_study")


def _modules_of(model: Any) -> list[dict[str, Any]]:
    """LoRA-targetable leaf modules (Linear, Conv1d/2d, Embedding, transformers' Conv1D) with their shapes."""
    from torch import nn

    out = []
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if isinstance(mod, nn.Linear):
            shape = [mod.out_features, mod.in_features]
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            shape = list(mod.weight.shape)
        elif isinstance(mod, nn.Embedding):
            shape = [mod.num_embeddings, mod.embedding_dim]
        elif kind == "Conv1D" and hasattr(mod, "weight"):  # GPT-2 style
            shape = list(mod.weight.shape)
        else:
            continue
        out.append({"name": name, "type": kind, "shape": shape})
    return out


def _diffusers_component(path: Path) -> tuple[Any, str | None]:
    """The trainable component of a diffusers folder (a pipeline's unet/transformer, or a model folder)."""
    import diffusers
    import torch

    index = path / "model_index.json"
    if index.exists():
        entries = json.loads(index.read_text())
        for component in ("unet", "transformer", "prior"):
            if component in entries and (path / component / "config.json").exists():
                return _diffusers_model(path / component, diffusers, torch), component
        raise ValueError(f"model: {path} is a diffusers pipeline without a unet or transformer folder")
    return _diffusers_model(path, diffusers, torch), None


def _diffusers_model(folder: Path, diffusers: Any, torch: Any) -> Any:
    config = json.loads((folder / "config.json").read_text())
    cls = getattr(diffusers, config["_class_name"], None)
    if cls is None:
        raise ValueError(f"model: {folder}/config.json names {config['_class_name']!r}, unknown to diffusers")
    with torch.device("meta"):
        return cls.from_config(config)


def _transformers_model(path: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        return AutoModel.from_config(config)


def list_target_modules(model: str | None = None, task: str | None = None) -> dict[str, Any]:
    if model is None:
        if task in MF_TASKS:
            return {
                "model": None,
                "component": None,
                "modules": [{"name": "linear", "type": "Linear", "shape": []}],
                "suffixes": {"linear": 1},
            }
        raise ValueError(f"model: required for task {task!r}")
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model: {model} does not exist (local folders only in list_target_modules)")
    component: str | None = None
    config = path / "config.json"
    if (path / "model_index.json").exists() or (
        config.exists() and "_class_name" in json.loads(config.read_text())
    ):
        net, component = _diffusers_component(path)
    else:
        net = _transformers_model(str(path))
    modules = _modules_of(net)
    suffixes = Counter(m["name"].rsplit(".", 1)[-1] for m in modules)
    return {
        "model": model,
        "component": component,
        "modules": modules,
        "suffixes": dict(sorted(suffixes.items())),
    }


# --- adapters -------------------------------------------------------------------------------------------------


def open_safetensors(file: Path) -> Any:
    """`safe_open(file)`; ValueError naming the file when it is truncated or another format (a pickled .bin
    renamed), before anything reads it."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(file), framework="pt")
    except SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from None


def read_adapter(dir: str) -> dict[str, Any]:  # noqa: A002
    folder = Path(dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"dir: {dir} is not a folder")
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.exists() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not JSON ({e})") from None
    files = []
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        tensors = []
        with open_safetensors(f) as st:
            metadata = st.metadata()
            for key in st.keys():  # noqa: SIM118 (safe_open is not a dict)
                sl = st.get_slice(key)
                shape = list(sl.get_shape())
                numel = 1
                for s in shape:
                    numel *= s
                total += numel
                tensors.append({"name": key, "shape": shape, "dtype": str(sl.get_dtype())})
        files.append({"file": f.name, "tensors": tensors, "metadata": metadata})
    if config is None and not files:
        inner = sorted(p.parent.name for p in folder.glob("*/adapter_config.json"))
        hint = f"; its adapters are in the subfolders {', '.join(inner)}: read one of those" if inner else ""
        raise FileNotFoundError(f"dir: {dir} holds neither adapter_config.json nor a .safetensors file{hint}")
    return {"dir": str(folder.resolve()), "config": config, "files": files, "parameter_count": total}
