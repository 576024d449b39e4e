"""Binding a FactorGenerator to a PEFT-LoRA'd model: ``attach`` and the ``OPLoRAModel`` it returns.

    OPLoRAModel ─┬─ base: the PEFT model (PeftModel, diffusers UNet with add_adapter, any LoRA'd module)
                 │    └─ ...lora_A[adapter].weight ─ parametrization ─┐  (returns its layer's A_l)
                 │    └─ ...lora_B[adapter].weight ─ parametrization ─┤  (returns its layer's B_l)
                 │    └─ ...lora_magnitude_vector[adapter].weight ────┤  (DoRA, magnitude "generated": m_l)
                 └─ generator: FactorGenerator      ◄── _FactorCache ─┘  (plain object, not a Module)

PEFT keeps the structure (names, forward, save/load); the generator owns the math; each ``lora_A`` /
``lora_B`` weight is a ``torch.nn.utils.parametrize`` parametrization that ignores its stored tensor and
returns its slice of the generator's cached output. The generator is reachable from the parametrizations
only through the cache, a plain Python object, so it never enters PEFT's module tree or state dict.

The cache is generated once per training forward (``OPLoRAModel.forward`` with grad enabled) and shared by
every weight access until then, including non-reentrant activation-checkpointing recomputation inside
backward (which must see the very tensors of the forward). A weight access regenerates only when the
cache is stale: the generator's parameters changed in place (``_version``: an optimiser step, a load), or
grad mode needs a graph the cache lacks (generated under ``no_grad``, or its graph was consumed by a
backward). So calling ``op.base`` directly, e.g. a diffusers pipeline's ``pipe.unet`` under ``no_grad``
during evaluation, always sees the current factors. To keep a weight access O(1), the parameters'
versions are compared only after an optimiser step (a global step hook), before every forward of the base
model (a forward pre-hook) and of ``op``, and when a factor's device no longer matches its weight's; an
in-place edit made outside an optimiser and read through a submodule called on its own is not noticed
until one of those.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

from .config import OPLoRAConfig, resolve_formulation
from .generator import FactorGenerator

# Bumped after every torch optimiser step (any optimiser): the cue for a full staleness check.
_STEP_EPOCH = [0]
_STEP_HOOK: list[Any] = []


def _count_optimizer_step(*_: Any) -> None:
    _STEP_EPOCH[0] += 1


class _FactorCache:
    """The generator's current output, shared by all parametrizations; regenerated only when stale.

    A weight access costs O(1): the full check (every generator parameter's ``_version`` and ``data_ptr``)
    runs only after an optimiser step (a global step hook bumps an epoch), at every forward of the base
    model (a pre-hook), and when a factor's device no longer matches its weight's (``.to()``).
    """

    def __init__(self, generator: FactorGenerator, formulation: str) -> None:
        self.generator = generator
        self.formulation = formulation
        self.params: list[Tensor] = list(generator.parameters())
        self.factors: list[tuple[Tensor, ...]] | None = None
        self.key: tuple[int, ...] = ()
        self.epoch = -1
        self.trainable = False
        self.has_graph = False
        self.inference = False
        self.pinned = False  # collapse: serve fixed factors, never regenerate
        self.shared = False  # FactorStep: serve one step's leaf factors, never regenerate
        self.closed = False
        if not _STEP_HOOK:
            _STEP_HOOK.append(register_optimizer_step_post_hook(_count_optimizer_step))
        for p in self.params:
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._graph_consumed)

    def _graph_consumed(self, _: Tensor) -> None:
        # Runs after the generator's own backward, i.e. after every recomputation in that backward.
        self.has_graph = False

    def _key(self) -> tuple[int, ...]:
        # In-place updates bump _version; .to() or a load into new storage changes data_ptr.
        return tuple(x for p in self.params for x in (p._version, p.data_ptr()))

    def stale(self, full: bool = False) -> bool:
        if self.pinned or self.shared:
            return False
        if self.factors is None:
            return True
        if full or self.epoch != _STEP_EPOCH[0]:
            self.epoch = _STEP_EPOCH[0]
            if self.key != self._key():
                return True
        if self.inference and not torch.is_inference_mode_enabled():
            return True  # inference tensors cannot join an autograd graph
        return not self.has_graph and self.trainable and torch.is_grad_enabled()

    def refresh(self) -> None:
        if self.closed:
            raise RuntimeError("this OPLoRAModel was collapsed; its generator is gone")
        self.factors = self.generator(self.formulation)
        self.key, self.epoch = self._key(), _STEP_EPOCH[0]
        self.inference = torch.is_inference_mode_enabled()
        self.trainable = any(p.requires_grad for p in self.params)
        self.has_graph = self.trainable and torch.is_grad_enabled()

    def refresh_if_stale(self, full: bool = False) -> None:
        if self.stale(full):
            self.refresh()

    def __call__(self, *_: Any) -> None:
        """Forward pre-hook of the base model: a direct call checks every generator parameter first."""
        if not self.closed:
            self.refresh_if_stale(full=True)

    def get(self, layer: int, which: int) -> Tensor:
        if self.stale():
            self.refresh()
        return self.factors[layer][which]  # type: ignore[index]

    def share(self, factors: list[tuple[Tensor, ...]] | None) -> None:
        """Serve ``factors`` until ``share(None)``, which leaves the cache empty (regenerated on next use)."""
        self.factors, self.shared, self.has_graph = factors, factors is not None, False

    def pin(self, factors: list[tuple[Tensor, ...]]) -> None:
        self.factors, self.pinned = factors, True

    def close(self) -> None:
        """Forgets the generator and its output (collapse), so neither outlives the wrapper's use."""
        self.generator, self.params, self.factors, self.closed = None, [], None, True  # type: ignore[assignment]


class FactorStep:
    """Every (A_l, B_l) generated once for all micro-batches of one optimizer step.

        generator ──► generated (float32, with the generator's graph) ──detach──► leaves (requires_grad)
        micro-batch i: loss_i.backward() accumulates Σ_i ∂loss_i/∂leaf into leaf.grad (the graph stops there)
        backward():    one generator backward with grad_tensors = leaf.grad

    Since the generator's parameters do not change between micro-batches, Σ_i J_θᵀ ∂loss_i/∂(A, B) =
    J_θᵀ Σ_i ∂loss_i/∂(A, B): the same gradients as regenerating per micro-batch, for one generator forward
    and backward per step. Non-reentrant checkpointing recomputes with the same leaves. Built by
    ``OPLoRAModel.generation_per_step``.
    """

    def __init__(self, cache: _FactorCache) -> None:
        self._cache = cache
        with torch.enable_grad():
            generated = cache.generator(cache.formulation, cast=False)
        self._generated = [t for factors in generated for t in factors]
        leaves = [tuple(t.detach().requires_grad_() for t in factors) for factors in generated]
        self._leaves = [t for factors in leaves for t in factors]
        cache.share(leaves)

    def backward(self) -> None:
        """The generator's backward, once, from the gradients the micro-batches left on the leaves."""
        pairs = [
            (g, x.grad) for g, x in zip(self._generated, self._leaves, strict=True) if x.grad is not None
        ]
        if pairs:
            torch.autograd.backward([g for g, _ in pairs], grad_tensors=[d for _, d in pairs])
        for x in self._leaves:
            x.grad = None

    def close(self) -> None:
        self._cache.share(None)
        self._generated, self._leaves = [], []


class FactorParametrization(nn.Module):
    """Parametrization of one ``lora_A`` (which=0), ``lora_B`` (which=1) or DoRA magnitude (which=2) weight:
    returns the generator's current A_l, B_l or m_l and ignores the stored tensor, which stays only as PEFT's
    placeholder until collapse."""

    def __init__(self, cache: _FactorCache, layer: int, which: int) -> None:
        super().__init__()
        self._cache = cache  # a plain object: the generator stays out of this module tree
        self.layer, self.which = layer, which

    def forward(self, original: Tensor) -> Tensor:
        t = self._cache.get(self.layer, self.which)
        if t.device != original.device:  # moved since generated: check everything
            self._cache.refresh_if_stale(full=True)
            t = self._cache.get(self.layer, self.which)
        return t if t.dtype == original.dtype else t.to(original.dtype)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, {'ABm'[self.which]}"


class OPLoRAModel(nn.Module):
    """A PEFT-LoRA'd model whose LoRA factors come from a FactorGenerator (OP-LoRA, arXiv 2412.10362).

    ``op(*args, **kwargs)`` regenerates every (A_l, B_l) once (when grad is enabled, or when the cached
    factors are stale) and returns ``op.base(*args, **kwargs)``. Only ``op.trainable_parameters()`` train:
    the generator's, and with DoRA magnitudes kept "direct" PEFT's magnitude vectors. Built by
    :func:`attach`; turned back into a plain PEFT model by ``collapse``.
    """

    def __init__(
        self,
        base: nn.Module,
        generator: FactorGenerator,
        cache: _FactorCache,
        config: OPLoRAConfig,
        adapter_name: str,
        layer_names: tuple[str, ...],
        lora_modules: list[tuple[nn.Module, ...]],
        requires_grad: dict[Tensor, bool],
        direct_magnitudes: list[nn.Parameter],
    ) -> None:
        super().__init__()
        self.base = base
        self.generator = generator
        self.config = config
        self.adapter_name = adapter_name
        self.layer_names = layer_names
        self.collapsed = False
        self._shapes = generator.shapes
        # Plain containers: these references are bookkeeping, not submodules.
        self._cache = cache
        self._lora_modules = lora_modules  # per layer: (lora_A[adapter], lora_B[adapter][, magnitude])
        self._direct_magnitudes = direct_magnitudes  # DoRA, magnitude "direct": trained as they are
        self._requires_grad = requires_grad  # base params' flags before attach, restored by collapse
        self._checkpointing_modules = [m for m in base.modules() if hasattr(m, "gradient_checkpointing")]
        # A direct call of the base model (e.g. a pipeline's pipe.unet) checks every parameter's version first.
        self._pre_hook = base.register_forward_pre_hook(cache)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "generator" and self.__dict__.get("collapsed"):
                raise AttributeError("this OPLoRAModel was collapsed: its generator was dropped") from None
            raise

    def _check_usable(self) -> None:
        if self.collapsed:
            raise RuntimeError(
                "this OPLoRAModel was collapsed; use the PEFT model collapse() returned (also op.base)"
            )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._check_usable()
        if torch.is_grad_enabled():
            _refuse_reentrant_checkpointing(self._checkpointing_modules)
            if not self._cache.shared:
                self._cache.refresh()
        else:
            self._cache.refresh_if_stale(full=True)
        # PEFT reads each LoRA weight more than once per forward (dtype checks): serve repeats from a dict.
        with parametrize.cached():
            return self.base(*args, **kwargs)

    @contextlib.contextmanager
    def generation_per_step(self) -> Iterator[FactorStep]:
        """Generates every (A_l, B_l) once for the forwards and backwards inside the block (the micro-batches
        of one optimizer step); call ``.backward()`` on what it yields after the last micro-batch's backward
        and before clipping: that runs the generator's backward once. See :class:`FactorStep`."""
        self._check_usable()
        step = FactorStep(self._cache)
        try:
            yield step
        finally:
            step.close()

    def regenerate(self) -> None:
        """Regenerates every (A_l, B_l) now (as ``forward`` does before calling ``base``)."""
        self._check_usable()
        self._cache.refresh()

    @property
    def formulation(self) -> str:
        """The formulation the generator runs with on its current device ("batched" or "loop")."""
        return resolve_formulation(self._cache.formulation, self._cache.params[0].device)

    def lora_factors(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Current ``{layer name: (A, B)}``, detached, as the LoRA weights would hold them."""
        self._check_usable()
        with torch.no_grad():
            return {
                name: (modules[0].weight.detach(), modules[1].weight.detach())
                for name, modules in zip(self.layer_names, self._lora_modules, strict=True)
            }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimizer trains: the generator's parameters, then any DoRA magnitudes kept "direct"."""
        self._check_usable()
        return [*self.generator.parameters(), *self._direct_magnitudes]

    def num_generator_parameters(self) -> int:
        """Parameters of the generator, ≈ (h + 1) x num_lora_parameters(); 0 once collapsed."""
        if self.collapsed:
            return 0
        return sum(p.numel() for p in self.generator.parameters())

    def num_lora_parameters(self) -> int:
        """Parameters of the LoRA factors (what the collapsed adapter stores): Σ_l numel(A_l) + numel(B_l)."""
        return sum(shapes[0].numel() + shapes[1].numel() for shapes in self._shapes)

    def collapse_to_base(self) -> nn.Module:
        """The work of `oplora.collapse` (call that): generate once, store the factors as the LoRA weights,
        remove the parametrizations, restore the base's requires_grad flags, drop the generator."""
        if self.collapsed:
            raise RuntimeError("collapse: this OPLoRAModel was already collapsed")
        cache = self._cache
        with torch.no_grad():
            factors = [
                tuple(t.clone(memory_format=torch.contiguous_format) for t in layer)
                for layer in self.generator(cache.formulation)
            ]
            cache.pin(factors)
            for modules in self._lora_modules:
                for module in modules:
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for p, flag in self._requires_grad.items():
            p.requires_grad_(flag)
        cache.close()
        self._pre_hook.remove()
        del self.generator
        self._requires_grad, self._direct_magnitudes = {}, []
        self.collapsed = True
        return self.base

    def extra_repr(self) -> str:
        return f"adapter={self.adapter_name!r}, layers={len(self.layer_names)}, collapsed={self.collapsed}"


def _lora_layer_type() -> type:
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def is_reentrant(func: Any) -> bool | None:
    """True/False when ``func`` (a model's ``_gradient_checkpointing_func``) is known to be (non-)reentrant."""
    checkpoint = torch.utils.checkpoint.checkpoint
    if func is checkpoint:
        return True  # torch's default for an unset use_reentrant is True
    if isinstance(func, functools.partial):
        if "use_reentrant" in func.keywords:
            return func.keywords["use_reentrant"] is not False
        if func.func is checkpoint:
            return True
        return is_reentrant(func.func)
    # diffusers' default is a local function that passes use_reentrant=False explicitly.
    if getattr(func, "__qualname__", "").endswith(
        "enable_gradient_checkpointing.<locals>._gradient_checkpointing_func"
    ):
        return False
    return None


def _refuse_reentrant_checkpointing(modules: list[nn.Module]) -> None:
    for m in modules:
        if getattr(m, "gradient_checkpointing", False) and is_reentrant(
            getattr(m, "_gradient_checkpointing_func", None)
        ):
            raise ValueError(
                f"{type(m).__name__} has reentrant gradient checkpointing enabled; OP-LoRA shares one generator "
                "output per step, which needs use_reentrant=False: "
                'model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})'
            )


def _select_adapter(layers: list[tuple[str, nn.Module]], adapter_name: str | None) -> str:
    available = sorted({a for _, layer in layers for a in layer.lora_A.keys()})
    if adapter_name is not None:
        if adapter_name not in available:
            raise ValueError(f"adapter_name={adapter_name!r}: the model has LoRA adapters {available}")
        return adapter_name
    if len(available) == 1:
        return available[0]
    active = sorted({a for _, layer in layers for a in layer.active_adapters if a in available})
    if len(active) == 1:
        return active[0]
    raise ValueError(
        f"the model has several LoRA adapters {available} (active: {active}); pass adapter_name= to choose one"
    )


def attach(
    model: nn.Module,
    config: OPLoRAConfig | Mapping[str, Any] | None = None,
    *,
    adapter_name: str | None = None,
) -> OPLoRAModel:
    """Binds a new FactorGenerator to every LoRA layer of ``model`` and returns the trainable wrapper.

    ``model`` is any module with PEFT LoRA layers (``get_peft_model``, diffusers ``add_adapter``, ...), on
    ``nn.Linear`` or ``nn.Conv2d`` base layers. Every base parameter, PEFT's LoRA weights included, is frozen:
    only ``op.generator.parameters()`` train. At step 0 B_l = 0, so ``op(x)`` equals the model without LoRA.

    DoRA layers (PEFT's ``use_dora``) keep PEFT's DoRA forward; their magnitude vector is generated by a
    third head (``config.magnitude == "generated"``, starting at PEFT's initial magnitude) or trained as it is
    (``"direct"``, then it is in ``op.trainable_parameters()``).

    Refuses (ValueError/TypeError) an OPLoRAModel or a model already attached to, a model without LoRA
    layers, LoRA variants other than DoRA, LoRA biases and embedding LoRA, several adapters when none is
    named or active, LoRA weights spread over several devices, and reentrant gradient checkpointing.
    """
    if isinstance(model, OPLoRAModel):
        raise TypeError("attach: model is already an OPLoRAModel; attach takes the PEFT model itself")
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach: model must be a torch.nn.Module, got {type(model).__name__}")
    if config is None:
        config = OPLoRAConfig()
    elif isinstance(config, Mapping):
        config = OPLoRAConfig.from_dict(config)
    elif not isinstance(config, OPLoRAConfig):
        raise TypeError(f"attach: config must be an OPLoRAConfig or a dict, got {type(config).__name__}")

    lora_layer = _lora_layer_type()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, lora_layer) and len(m.lora_A) > 0]
    embedding = [
        n for n, m in model.named_modules() if isinstance(m, lora_layer) and len(m.lora_embedding_A) > 0
    ]
    if embedding:
        raise ValueError(f"attach: LoRA on embedding layers is not supported ({embedding[0]}); target others")
    if not layers:
        raise ValueError(
            "attach: the model has no PEFT LoRA layers; wrap it first, e.g. get_peft_model(model, LoraConfig(...)) "
            "or unet.add_adapter(LoraConfig(...))"
        )
    adapter = _select_adapter(layers, adapter_name)
    layers = [(n, m) for n, m in layers if adapter in m.lora_A]

    lora_modules: list[tuple[nn.Module, ...]] = []
    direct: list[nn.Parameter] = []
    for name, layer in layers:
        modules = _layer_modules(name, layer, adapter)
        if len(modules) == 3 and config.magnitude == "direct":
            direct.append(modules[2].weight)
            modules = modules[:2]
        lora_modules.append(modules)
    devices = {m.weight.device for modules in lora_modules for m in modules} | {p.device for p in direct}
    if len(devices) != 1:
        raise ValueError(
            f"attach: the LoRA weights are spread over devices {sorted(map(str, devices))}; expected one"
        )
    device = devices.pop()
    if device.type == "meta":
        raise ValueError("attach: the LoRA weights are on the meta device; load the model's weights first")

    checkpointing = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
    _refuse_reentrant_checkpointing(checkpointing)

    generator = FactorGenerator(
        [tuple(m.weight.shape for m in modules) for modules in lora_modules],
        config,
        dtypes=[modules[0].weight.dtype for modules in lora_modules],
        device=device,
        magnitudes=[modules[2].weight if len(modules) == 3 else None for modules in lora_modules],
    )
    cache = _FactorCache(generator, config.formulation)
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    direct_ids = {id(p) for p in direct}
    for p in model.parameters():
        p.requires_grad_(id(p) in direct_ids)
    with torch.no_grad():
        cache.refresh()  # registration runs each parametrization once: the cache must hold a value first
        for i, modules in enumerate(lora_modules):
            for which, m in enumerate(modules):
                parametrize.register_parametrization(m, "weight", FactorParametrization(cache, i, which))
    names = tuple(n for n, _ in layers)
    return OPLoRAModel(model, generator, cache, config, adapter, names, lora_modules, requires_grad, direct)


def _layer_modules(name: str, layer: nn.Module, adapter: str) -> tuple[nn.Module, ...]:
    """(lora_A, lora_B) of one LoRA layer, plus its DoRA magnitude module (PEFT's ``DoraLinearLayer`` and
    kin, whose ``weight`` is m_l); refuses what OP-LoRA cannot generate."""
    a, b = layer.lora_A[adapter], layer.lora_B[adapter]
    magnitudes = getattr(layer, "lora_magnitude_vector", {})
    magnitude = magnitudes[adapter] if adapter in magnitudes else None
    if any(parametrize.is_parametrized(m, "weight") for m in (a, b, magnitude) if m is not None):
        raise ValueError(f"attach: {name} is already parametrized; attach was already called on this model")
    if adapter in getattr(layer, "lora_variant", {}) and magnitude is None:
        variant = type(layer.lora_variant[adapter]).__name__
        raise ValueError(
            f"attach: {name} uses a LoRA variant ({variant}); only plain LoRA and DoRA are supported"
        )
    if getattr(layer, "lora_bias", {}).get(adapter, False) or getattr(b, "bias", None) is not None:
        raise ValueError(f"attach: {name} has lora_bias=True; only bias-free LoRA factors are supported")
    return (a, b) if magnitude is None else (a, b, magnitude)
