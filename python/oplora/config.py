"""OP-LoRA generator configuration: one frozen dataclass, validated once, at the boundary.

The JSON form (the spec's ``oplora`` object) uses the same snake_case keys as the fields::

    {"embedding_dim": 128, "hidden_dim": 32, "init_std": 0.01, "formulation": "auto", "magnitude": "direct"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch

Formulation = Literal["auto", "batched", "loop"]
FORMULATIONS: tuple[str, ...] = ("auto", "batched", "loop")
Magnitude = Literal["generated", "direct"]
MAGNITUDES: tuple[str, ...] = ("generated", "direct")


@dataclass(frozen=True)
class OPLoRAConfig:
    """How each layer's LoRA factors are generated while training (arXiv 2412.10362).

    Per adapted layer ``l``::

        z_l ~ N(0, init_std²)                      # (e,)      e = embedding_dim
        h_l = ReLU(W1_l z_l + b1_l)                # (h,)      h = hidden_dim
        A_l = reshape(WA_l h_l + bA_l)             # (r, d_in)
        B_l = reshape(WB_l h_l + bB_l)             # (d_out, r), WB_l = bB_l = 0 at init -> ΔW = 0

    With DoRA (PEFT's ``use_dora``) each layer also has a magnitude vector m_l (d_out,): ``magnitude =
    "generated"`` adds a third head, m_l = WM_l h_l + bM_l with WM_l = 0 and bM_l = PEFT's initial magnitude
    (the column norms of W), so step 0 still equals the base model; ``"direct"`` trains PEFT's own m_l as a
    plain parameter next to the generator.
    """

    embedding_dim: int = 128  # e: size of each layer's learned embedding z_l (the reference code's value)
    hidden_dim: int = 32  # h: width of each layer's MLP; generator params ≈ (h + 1) x LoRA params
    init_std: float = 0.01  # z_l ~ N(0, init_std²)
    # "batched": a few stacked matrix-vector products per group of same-shaped layers;
    # "loop": one small MLP call per layer (the reference the batched path must equal);
    # "auto": the faster one on the generator's device (see bench/generator.py and resolve_formulation).
    formulation: Formulation = "auto"
    # DoRA only, see the class docstring. "direct" by default: at each mode's best lr it had 0.83-0.84x the
    # generated mode's loss on the small UNet (3 of 3 seeds) and tied on the small LLaVA (3 of 5 seeds lower),
    # with fewer parameters (bench/text_to_image.py, bench/llava.py: quality.magnitude).
    magnitude: Magnitude = "direct"

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OPLoRAConfig.{name}={value!r}: expected a positive integer")
        std = self.init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std <= 0:
            raise ValueError(f"OPLoRAConfig.init_std={std!r}: expected a finite number > 0")
        if self.formulation not in FORMULATIONS:
            raise ValueError(
                f"OPLoRAConfig.formulation={self.formulation!r}: expected one of {', '.join(map(repr, FORMULATIONS))}"
            )
        if self.magnitude not in MAGNITUDES:
            raise ValueError(
                f"OPLoRAConfig.magnitude={self.magnitude!r}: expected one of {', '.join(map(repr, MAGNITUDES))}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OPLoRAConfig:
        """Builds a config from the spec's JSON object; missing keys take the defaults, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise TypeError(f"OPLoRAConfig.from_dict: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"OPLoRAConfig: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {sorted(known)}"
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with the same snake_case keys; ``from_dict(c.to_dict()) == c``."""
        return asdict(self)


def resolve_formulation(formulation: str, device: torch.device | str) -> Literal["batched", "loop"]:
    """Resolves ``"auto"`` for a device: ``"batched"`` on every device.

    Measured with ``bench/generator.py`` (SDXL-shaped set: 560 layers, r = 4, h = 32, 194M generator
    parameters, forward + backward, 2-core CPU, torch 2.13, median of 5): batched 174 ms vs per-layer
    loop 333 ms with 2 threads (287 vs 526 ms with 1). The batched path wins on the CPU too once its
    backward forms outer products by broadcasting (not a k = 1 ``bmm``: 790 ms) and groups are
    chunked (unchunked: 251 ms).
    On CUDA the loop's thousands of kernel launches dominate (``scripts/gpu-check.sh`` re-measures).
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation={formulation!r}: expected one of {', '.join(map(repr, FORMULATIONS))}")
    if formulation != "auto":
        return formulation  # type: ignore[return-value]
    torch.device(device)  # validates; the choice does not depend on it today
    return "batched"
