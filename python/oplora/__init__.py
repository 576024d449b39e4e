"""oplora: OP-LoRA (arXiv 2412.10362) on PEFT.

    from peft import LoraConfig, get_peft_model
    from oplora import OPLoRAConfig, attach, collapse

    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q", "v"]))
    op = attach(model, OPLoRAConfig(embedding_dim=128, hidden_dim=32))  # op(x) == model(x)
    # train op.trainable_parameters(): the generator (and DoRA magnitudes with magnitude="direct")
    plain = collapse(op)                  # plain PEFT model: lora_A / lora_B hold the generated factors
    plain.save_pretrained("adapter/")     # a standard PEFT adapter

The public names are loaded on first use, so `import oplora` (and the CLI's spec validation) stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "OPLoRAConfig": "oplora.config",
    "FactorGenerator": "oplora.generator",
    "OPLoRAModel": "oplora.bind",
    "attach": "oplora.bind",
    "collapse": "oplora.collapse",
    "save_generator": "oplora.checkpoint",
    "load_generator": "oplora.checkpoint",
    "validate_spec": "oplora.run.spec",
    "SpecError": "oplora.run.spec",
    "run_spec": "oplora.run.runner",
    "InputError": "oplora.run.runner",
    "TrainingDiverged": "oplora.training.loop",
}

__all__ = [
    "FactorGenerator",
    "InputError",
    "OPLoRAConfig",
    "OPLoRAModel",
    "SpecError",
    "TrainingDiverged",
    "attach",
    "collapse",
    "load_generator",
    "run_spec",
    "save_generator",
    "validate_spec",
]

if TYPE_CHECKING:
    from .bind import OPLoRAModel, attach
    from .checkpoint import load_generator, save_generator
    from .collapse import collapse
    from .config import OPLoRAConfig
    from .generator import FactorGenerator
    from .run.runner import InputError, run_spec
    from .run.spec import SpecError, validate_spec
    from .training.loop import TrainingDiverged


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        if name != "collapse":
            globals()[name] = value
        return value
    raise AttributeError(f"module 'oplora' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`collapse` names both a submodule and the public function. Importing the submodule makes Python set
    `oplora.collapse` to the module; this property (a data descriptor, so it wins over the module's dict)
    keeps `from oplora import collapse` the function whatever was imported first."""

    @property
    def collapse(self) -> Any:
        from .collapse import collapse

        return collapse

    @collapse.setter
    def collapse(self, _value: Any) -> None:
        pass  # the import system recording the submodule: `oplora.collapse` stays the function


sys.modules[__name__].__class__ = _Package
