"""Collapse: run every layer's generator once, store the resulting A_l, B_l as plain LoRA weights, drop it.

    OPLoRAModel(base, generator)  ──collapse──►  base: a vanilla PEFT model
    lora_A.weight = parametrized(A_l)             lora_A.weight = Parameter(A_l.clone())

After collapse ``base.state_dict()`` / ``save_pretrained`` hold exactly the keys a fresh PEFT model holds,
each LoRA weight owns its storage, and the Parameters are the same objects as before ``attach`` (an
optimiser holding them stays valid). "Merge" keeps PEFT's meaning (fold ΔW into W): collapse is not merge.
"""

from __future__ import annotations

from torch import nn

from .bind import OPLoRAModel


def collapse(op: OPLoRAModel) -> nn.Module:
    """Turns an :class:`OPLoRAModel` back into the PEFT model it wraps, with the generated factors as weights.

    Runs the generator once under ``no_grad``, clones every (A_l, B_l), removes each parametrization with
    ``leave_parametrized=True`` (the original Parameter takes the clone's storage), restores every base
    parameter's ``requires_grad`` flag to its value before ``attach``, drops the generator and marks ``op``
    collapsed: using ``op`` afterwards, or collapsing it again, raises RuntimeError. Returns ``op.base``.
    """
    if not isinstance(op, OPLoRAModel):
        raise TypeError(f"collapse: expected an OPLoRAModel (from attach), got {type(op).__name__}")
    if op.collapsed:
        raise RuntimeError("collapse: this OPLoRAModel was already collapsed")
    return op.collapse_to_base()
