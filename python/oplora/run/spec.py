"""Spec validation on the Python side, against the JSON Schema that the SDK generates from its zod schemas.

The SDK validates first; this is defence in depth, so a spec that skips the SDK (`python -m oplora run`)
is checked the same way, with every problem listed by its path, before any heavy import or work.
Defaults written in the schema (`"default": ...`) are filled in, recursing into union branches.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "spec.schema.json"


class SpecError(ValueError):
    """A spec that does not match the schema. `problems` lists `path: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid spec:\n" + "\n".join(f"  - {p}" for p in problems))


@cache
def schema() -> dict[str, Any]:
    """The committed JSON Schema (generated from the SDK's zod schemas by `npm run schema`)."""
    text = resources.files("oplora").joinpath("schema", SCHEMA_FILE).read_text()
    return json.loads(text)


def _validator(node: dict[str, Any]) -> Any:
    import jsonschema

    root = schema()
    cls = jsonschema.validators.validator_for(root)
    # Sub-schemas keep the root's definitions so that `#/$defs/...` references still resolve.
    return cls(node if node is root else {**node, "$defs": root.get("$defs", {})})


def _path(err: Any) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "(spec)"


def _problems(instance: Any, node: dict[str, Any]) -> list[str]:
    v = _validator(node)
    errors = sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    out: list[str] = []
    for err in errors:
        # For unions, report the errors of the branch picked by the discriminator, not "is not valid under any".
        if err.validator in ("oneOf", "anyOf") and err.context:
            branch = _branch_for(err.instance, err.validator_value)
            prefix = _path(err)
            if branch is not None:
                for p in _problems(err.instance, branch):
                    out.append(
                        p.replace("(spec)", prefix, 1)
                        if p.startswith("(spec)") or prefix == "(spec)"
                        else f"{prefix}.{p}"
                    )
                continue
            tag = _discriminator(err.validator_value)
            if tag is not None and isinstance(err.instance, dict):
                key, allowed = tag
                where = key if prefix == "(spec)" else f"{prefix}.{key}"
                out.append(f"{where}: expected one of {allowed}, got {err.instance.get(key)!r}")
                continue
        out.append(f"{_path(err)}: {err.message}")
    return out


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = schema()
        for part in ref[2:].split("/"):
            target = target[part]
        return _resolve(target)
    return node


def _branch_for(instance: Any, branches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The union branch whose `const` discriminators (e.g. `task`, `kind`) match the instance."""
    if not isinstance(instance, dict):
        return None
    for raw in branches:
        b = _resolve(raw)
        props = b.get("properties", {})
        consts = {k: p["const"] for k, p in props.items() if isinstance(p, dict) and "const" in p}
        if consts and all(instance.get(k) == c for k, c in consts.items()):
            return b
    return None


def _discriminator(branches: list[dict[str, Any]]) -> tuple[str, list[Any]] | None:
    """The property every branch pins with `const` (e.g. `task`), and its allowed values."""
    consts = [
        {
            k: p["const"]
            for k, p in _resolve(b).get("properties", {}).items()
            if isinstance(p, dict) and "const" in p
        }
        for b in branches
    ]
    shared = set.intersection(*(set(c) for c in consts)) if consts else set()
    if not shared:
        return None
    key = sorted(shared)[0]
    return key, [c[key] for c in consts]


def _fill(instance: Any, node: dict[str, Any]) -> Any:
    node = _resolve(node)
    for key in ("oneOf", "anyOf"):
        if key in node:
            branch = _branch_for(instance, node[key])
            if branch is None:
                branch = next((b for b in node[key] if not _problems(instance, _resolve(b))), None)
            return _fill(instance, branch) if branch is not None else instance
    if isinstance(instance, dict) and "properties" in node:
        for name, sub in node["properties"].items():
            sub = _resolve(sub)
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                instance[name] = _fill(instance[name], sub)
    elif isinstance(instance, list) and isinstance(node.get("items"), dict):
        return [_fill(x, node["items"]) for x in instance]
    return instance


def validate_spec(spec: Any) -> dict[str, Any]:
    """Check `spec` against the schema and return a copy with every default filled in.

    Raises SpecError listing every problem as `path: message`.
    """
    root = schema()
    problems = _problems(spec, root)
    if problems:
        raise SpecError(problems)
    filled = _fill(copy.deepcopy(spec), root)
    problems = _problems(filled, root)
    if problems:  # a default that contradicts the schema is our bug, but say so plainly
        raise SpecError([f"after filling defaults: {p}" for p in problems])
    problems = _cross_field(filled)
    if problems:
        raise SpecError(problems)
    return filled


# sdk/spec/matrix-factorization.ts says the same.
NO_DORA = (
    "matrix factorisation cannot use DoRA: its adapted weight W is zero, so DoRA's column norm ||W + dW||_c "
    "starts at 0 and so does its magnitude vector (the adapter could never move)"
)


def _cross_field(spec: dict[str, Any]) -> list[str]:
    """The checks JSON Schema cannot state (the SDK's zod superRefine): MF rank r <= min(rows, cols), and no
    DoRA on MF's zero base weight."""
    task = spec.get("task")
    if task == "matrix_factorization":
        if spec["adapter"].get("use_dora"):
            return [f"adapter.use_dora: {NO_DORA}, got true"]
        r, path = spec["adapter"]["r"], "adapter.r"
    elif task == "matrix_factorization_study":
        r, path = spec["r"], "r"
    else:
        return []
    most = min(spec["matrix"]["rows"], spec["matrix"]["cols"])
    if r > most:
        return [f"{path}: rank {r} exceeds min(matrix.rows, matrix.cols) = {most}, got {r}"]
    return []
