"""The SDK's quick lane (pythonia): small typed calls that take and return JSON strings.

Every function here takes one JSON string of keyword arguments and returns a JSON envelope,
`{"ok": true, "value": ...}` or `{"ok": false, "error": {"type", "message", "traceback"}}`, so results
cross the bridge as plain data and Python's exceptions arrive whole (pythonia drops their message).
Standard output is redirected to standard error during a call: the SDK's process owns stdout.

    doctor()                          environment: versions, CUDA devices, missing packages
    list_target_modules(model, task)  LoRA-targetable modules of a model, built on the meta device
    plan(spec)                        parameter counts and training memory (oplora.plan)
    read_adapter(dir)                 adapter_config.json + tensor names, shapes and dtypes
    echo(value), sleep(seconds), pid()  for tests and benchmarks
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _envelope(fn: Callable[..., Any], payload: str) -> str:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            kwargs = json.loads(payload) if payload else {}
            value = fn(**kwargs)
        return json.dumps({"ok": True, "value": value}, allow_nan=False, default=str)
    except Exception as e:  # everything a call raises goes back as data, with its traceback
        error = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
        return json.dumps({"ok": False, "error": error})


def _doctor() -> dict[str, Any]:
    from .environment import doctor as env_doctor

    report = env_doctor()
    report["oplora_path"] = str(Path(__file__).resolve().parent)
    return report


# --- target modules -------------------------------------------------------------------------------------------

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


def _list_target_modules(model: str | None = None, task: str | None = None) -> dict[str, Any]:
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


def _read_adapter(dir: str) -> dict[str, Any]:  # noqa: A002
    from safetensors import safe_open

    folder = Path(dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"dir: {dir} is not a folder")
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    files = []
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        tensors = []
        with safe_open(str(f), framework="pt") as st:
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
        raise FileNotFoundError(f"dir: {dir} holds neither adapter_config.json nor a .safetensors file")
    return {"dir": str(folder.resolve()), "config": config, "files": files, "parameter_count": total}


def _plan(spec: Any) -> dict[str, Any]:
    from .plan import plan as make_plan

    return make_plan(spec)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# --- the lane's entry points (one JSON string in, one JSON string out) ------------------------------------------


def doctor(payload: str = "{}") -> str:
    return _envelope(_doctor, payload)


def list_target_modules(payload: str) -> str:
    return _envelope(_list_target_modules, payload)


def plan(payload: str) -> str:
    return _envelope(_plan, payload)


def read_adapter(payload: str) -> str:
    return _envelope(_read_adapter, payload)


def echo(payload: str) -> str:
    return _envelope(lambda **kw: kw, payload)


def sleep(payload: str) -> str:
    return _envelope(_sleep, payload)


def pid(payload: str = "{}") -> str:
    return _envelope(lambda: os.getpid(), payload)
