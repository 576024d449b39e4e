"""Text-to-image: LoRA / OP-LoRA fine-tuning of Stable Diffusion 1.x/2.x and SDXL, as diffusers' own
`train_text_to_image_lora(_sdxl).py` do it, with CMMD evaluation and diffusers-loadable export.

    spec.model ─► pipeline (SD or SDXL, detected) ─► unet (+ text encoders).add_adapter(LoraConfig)
        ─► Denoiser (one module: text encoders + UNet) ─► apply_adapter (OP-LoRA: attach generator)
        ─► accelerate: per step  latents = vae(x)·s;  x_t = q(x_t | x_0, ε, t);  loss = w(t)·|f(x_t, t, c) - target|²
           (target ε or v; w = min(SNR, γ)/SNR (ε) or /(SNR+1) (v) with snr_gamma)
        ─► every N steps: checkpoint (resume), evaluation (validation images, CMMD)
        ─► collapse ─► DIR/adapter/ (PEFT dirs) + DIR/diffusers_lora/pytorch_lora_weights.safetensors
        ─► final evaluation with the collapsed model (what the exported file reproduces)

All randomness of a step (batch, crop, flip, noise, timesteps) is seeded from (seed, step), so a resumed
run ends with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...adapter import lora_parameters
from ...run.runner import InputError, RunContext
from .memory import memory_terms  # noqa: F401  (plan.py's hook: the activation terms)

TAIL_STEPS = 10
"""`tail_loss` = the mean training loss over the last min(TAIL_STEPS, steps) steps (one batch's loss, the
`final_loss`, is too noisy to rank runs by)."""


class Denoiser(nn.Module):
    """Text encoders + UNet as one module (what the adapter, the generator and accelerate wrap):
    (noisy latents, t, token ids per encoder, SDXL time ids) -> UNet prediction."""

    def __init__(self, unet: nn.Module, encoders: list[nn.Module], sdxl: bool, train_text: bool) -> None:
        super().__init__()
        self.unet = unet
        self.encoders = nn.ModuleList(encoders)
        self.sdxl, self.train_text = sdxl, train_text

    def forward(
        self, noisy: torch.Tensor, t: torch.Tensor, ids: list[torch.Tensor], add_time_ids: torch.Tensor | None
    ) -> torch.Tensor:
        from .pipeline import encode_prompts

        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            states, pooled = encode_prompts(list(zip(self.encoders, ids, strict=True)), self.sdxl)
        kw: dict[str, Any] = {}
        if self.sdxl:
            kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": add_time_ids.to(noisy.device)}
        return self.unet(noisy, t, encoder_hidden_states=states.to(noisy.dtype), **kw, return_dict=False)[0]


# --- plan (no weights) ------------------------------------------------------------------------------------


def _unet_on_meta(spec: dict[str, Any]) -> nn.Module:
    return _component_on_meta(spec, "unet", "diffusers", "UNet2DConditionModel")


def lora_layer_shapes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, lora_A weight shape, lora_B weight shape) for every adapted layer, from the configs: the UNet's
    and, with adapter.train_text_encoder, each text encoder's."""
    from diffusers import DiffusionPipeline

    adapter = spec["adapter"]
    parts = [("unet", _unet_on_meta(spec), adapter["target_modules"])]
    if adapter["train_text_encoder"]:
        index = DiffusionPipeline.load_config(
            spec["model"]["pretrained"], revision=spec["model"].get("revision")
        )
        for name in ("text_encoder", "text_encoder_2"):
            library, cls_name = index.get(name) or (None, None)
            if library == "transformers" and cls_name:
                module = _component_on_meta(spec, name, library, cls_name)
                parts.append((name, module, adapter["text_encoder_target_modules"]))
    return [
        shape
        for prefix, module, targets in parts
        for shape in _adapted(prefix, module, targets, int(adapter["r"]))
    ]


def _adapted(
    prefix: str, model: nn.Module, targets: Any, r: int
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    cfg = LoraConfig(r=r, target_modules=targets)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and check_target_module_exists(cfg, name):
            out.append((f"{prefix}.{name}", (r, m.in_features), (m.out_features, r)))
        elif isinstance(m, nn.Conv2d) and check_target_module_exists(cfg, name):
            k = m.kernel_size
            out.append((f"{prefix}.{name}", (r, m.in_channels, *k), (m.out_channels, r, 1, 1)))
    return out


def _component_on_meta(spec: dict[str, Any], name: str, library: str, cls_name: str) -> nn.Module:
    """One pipeline component (vae, text_encoder, ...), built from its config on the meta device."""
    import importlib

    model, sub = spec["model"], {"subfolder": name, "revision": spec["model"].get("revision")}
    cls = getattr(importlib.import_module(library), cls_name)
    with torch.device("meta"):
        if library == "diffusers":
            return cls.from_config(cls.load_config(model["pretrained"], **sub))
        from transformers import AutoConfig

        return cls._from_config(AutoConfig.from_pretrained(model["pretrained"], **sub))


def _base_components(spec: dict[str, Any]) -> dict[str, int]:
    """{component: parameters} of every model the run holds on the device: the UNet, the VAE and the text
    encoders (model_index.json's vae, text_encoder, text_encoder_2; a separate model.vae is counted as the
    pipeline's own), each from its config on the meta device."""
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(spec["model"]["pretrained"], revision=spec["model"].get("revision"))
    sizes = {"unet": sum(p.numel() for p in _unet_on_meta(spec).parameters())}
    for name in ("vae", "text_encoder", "text_encoder_2"):
        library, cls_name = index.get(name) or (None, None)
        if library in ("diffusers", "transformers") and cls_name:
            module = _component_on_meta(spec, name, library, cls_name)
            sizes[name] = sum(p.numel() for p in module.parameters())
    return sizes


def base_weights(spec: dict[str, Any]) -> tuple[int, int]:
    """(parameters, bytes) of the frozen models, in the dtypes the run holds them: under fp16/bf16 mixed
    precision the UNet and the text encoders load in it, the VAE stays fp32 (pipeline.load_pipeline)."""
    from ...training.loop import autocast_dtype

    half = autocast_dtype(spec["train"]["mixed_precision"]).itemsize
    sizes = _base_components(spec)
    return sum(sizes.values()), sum(n * (4 if name == "vae" else half) for name, n in sizes.items())


# --- the run ----------------------------------------------------------------------------------------------


def _add_adapters(pipe: Any, adapter: dict[str, Any], train_text: bool) -> None:
    """LoRA on the UNet (diffusers' add_adapter) and, with train_text, on each text encoder. The text
    encoders get PEFT's inject_adapter_in_model directly: transformers' add_adapter does only that (plus
    bookkeeping) but refuses any peft < 0.22, and the pinned peft is < 0.22."""
    from peft import LoraConfig, inject_adapter_in_model

    from ...adapter import lora_config_kwargs
    from .pipeline import text_encoders

    common = {
        **lora_config_kwargs(adapter),
        "lora_dropout": adapter["lora_dropout"],
        "init_lora_weights": "gaussian",
    }
    pipe.unet.add_adapter(LoraConfig(target_modules=adapter["target_modules"], **common))
    if train_text:
        for _, _, te in text_encoders(pipe):
            cfg = LoraConfig(target_modules=adapter["text_encoder_target_modules"], **common)
            inject_adapter_in_model(cfg, te, "default")


def _check_targets(pipe: Any, adapter: dict[str, Any]) -> None:
    names = [n for n, _ in pipe.unet.named_modules()]
    for t in adapter["target_modules"]:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise InputError(f"adapter.target_modules: no UNet module matches {t!r}")


def _loss(
    pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, scheduler: Any, snr_gamma: float | None
) -> torch.Tensor:
    import torch.nn.functional as F

    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t)
    w = torch.stack([snr, snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    w = w / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else w / snr
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (loss * w).mean()


class Trainer:
    """One run's state: pipeline, data, module, optimizer, accelerator. Methods are the loop's steps."""

    def __init__(self, spec: dict[str, Any], ctx: RunContext) -> None:
        from ...adapter import set_seed
        from ...training.loop import autocast_dtype, build_accelerator, input_warnings, memory_baseline
        from .data import ImageCaptions, read_dataset, read_imagefolder
        from .pipeline import check_model_path, check_resolution, is_sdxl, load_pipeline, text_encoders

        self.spec, self.ctx = spec, ctx
        self.train, self.data_spec, self.eval_spec = spec["train"], spec["data"], spec["eval"]
        adapter = spec["adapter"]
        # Input checks first: every one names its field or file, and none needs the weights.
        check_model_path(spec["model"]["pretrained"])
        d = self.data_spec
        if "dataset_name" in d:
            examples = read_dataset(d, d["split"], max_examples=d.get("max_examples"))
        else:
            examples = read_imagefolder(d["folder"], d["image_column"], d["caption_column"])
        if d.get("max_examples"):
            examples = examples[: d["max_examples"]]
        for name, message in input_warnings(self.train, len(examples)):
            ctx.warn(name, message)
        self.reference: list[Any] = []
        if self.eval_spec.get("reference_split"):
            if "dataset_name" not in d:
                raise InputError("eval.reference_split: needs data.dataset_name (use eval.reference_folder)")
            self.reference = read_dataset(d, self.eval_spec["reference_split"], "eval.reference_split")
        if self.eval_spec.get("reference_folder"):
            ref = Path(self.eval_spec["reference_folder"])
            if not ref.is_dir():
                raise InputError(f"eval.reference_folder: {ref} does not exist or is not a folder")

        self.accelerator = build_accelerator(self.train, ctx.device)
        self.weight_dtype = autocast_dtype(self.train["mixed_precision"])
        self.memory_baseline = memory_baseline(self.accelerator.device, ("diffusers", "transformers", "peft"))
        pipe = load_pipeline(spec["model"], self.weight_dtype)
        check_resolution(pipe, d["resolution"])
        _check_targets(pipe, adapter)
        if spec["model"].get("prediction_type"):
            pipe.scheduler.register_to_config(prediction_type=spec["model"]["prediction_type"])
        self.pipe, self.sdxl = pipe, is_sdxl(pipe)
        self.examples = examples
        self.data = ImageCaptions(examples, d["resolution"], d["center_crop"], d["random_flip"], spec["seed"])
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.train_text = bool(adapter["train_text_encoder"])
        self.encoders = text_encoders(pipe)

        dev = self.accelerator.device
        for m in (pipe.unet, pipe.vae, *(te for _, _, te in self.encoders)):
            m.requires_grad_(False).to(dev)  # in their load dtypes: the VAE fp32, the rest weight_dtype
        set_seed(spec["seed"])  # the LoRA init (and, in run(), the generator's) is the seed's, not chance's
        _add_adapters(pipe, adapter, self.train_text)
        if self.train["gradient_checkpointing"]:
            pipe.unet.enable_gradient_checkpointing()  # diffusers' checkpointing is non-reentrant
            if self.train_text:
                for _, _, te in self.encoders:
                    te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.denoiser = Denoiser(pipe.unet, [te for _, _, te in self.encoders], self.sdxl, self.train_text)

    def run(self) -> dict[str, Any]:
        from ...adapter import apply_adapter, count_parameters
        from ...training.loop import (
            build_lr_scheduler,
            build_optimizer,
            optimizer_step,
            peak_memory_bytes,
            reset_peak_memory,
            tensor_peak_metric,
        )
        from ...training.state import latest_checkpoint, load_checkpoint, save_checkpoint

        spec, ctx, tr, acc = self.spec, self.ctx, self.train, self.accelerator
        lora_params = sum(p.numel() for p in lora_parameters(self.denoiser).values())
        module, params = apply_adapter(self.denoiser, spec["adapter"])
        gen_params = module.num_generator_parameters() if spec["adapter"]["kind"] == "op-lora" else 0
        for p in params:  # trainable params in fp32 (diffusers' cast_training_params)
            p.data = p.data.float()
        optimizer = build_optimizer(params, spec["optimizer"])
        scheduler = build_lr_scheduler(optimizer, tr)
        start, resumed_from = 0, None
        history: dict[str, list[Any]] = {"loss": [], "cmmd": []}
        ck = latest_checkpoint(ctx.run_dir)  # a fresh run dir has none: --resume picks up the latest
        if ck is not None:
            state = load_checkpoint(ck, module, optimizer, scheduler)
            start = resumed_from = int(state["step"])
            history = state.get("history", history)
        module, optimizer = acc.prepare(module, optimizer)
        reset_peak_memory(acc.device)

        total, gas, bs = int(tr["steps"]), int(tr["gradient_accumulation_steps"]), int(tr["batch_size"])
        t0 = time.perf_counter()
        module.train()
        for step in range(start + 1, total + 1):
            micro = (functools.partial(self.micro_step, module, (step - 1) * gas + m, bs) for m in range(gas))
            loss_value = optimizer_step(acc, module, optimizer, params, tr["max_grad_norm"], micro, step)
            scheduler.step()
            history["loss"].append([step, loss_value])
            if step % tr["log_every"] == 0 or step == total:
                ctx.step(step, total, loss_value, lr=scheduler.get_last_lr()[0])
            if tr["checkpoint_every"] and step % tr["checkpoint_every"] == 0 and step < total:
                if acc.is_main_process:
                    path = save_checkpoint(
                        ctx.run_dir,
                        step,
                        acc.unwrap_model(module),
                        optimizer.optimizer,
                        scheduler,
                        extra={"history": history},
                    )
                    ctx.checkpoint(step, path)
                acc.wait_for_everyone()
            if tr["eval_every"] and step % tr["eval_every"] == 0 and step < total and acc.is_main_process:
                self._evaluate(step, history)
        train_s = time.perf_counter() - t0
        acc.wait_for_everyone()
        peak = peak_memory_bytes(acc.device, self.memory_baseline)
        tail = [v for _, v in history["loss"][-TAIL_STEPS:]]
        metrics: dict[str, Any] = {
            "model_kind": "sdxl" if self.sdxl else "sd",
            "steps": total,
            "resumed_from_step": resumed_from,
            "final_loss": history["loss"][-1][1] if history["loss"] else None,
            "tail_loss": statistics.fmean(tail) if tail else None,
            "loss_curve": [{"step": st, "loss": v} for st, v in history["loss"]],
            "lora_parameters": lora_params,
            "generator_parameters": gen_params,
            "trainable_parameters": count_parameters(params),
            "peak_memory_bytes": peak,
            "train_s": train_s,
            "steps_per_s": (total - start) / train_s if train_s > 0 else None,
            "num_processes": acc.num_processes,
        }
        if not acc.is_main_process:
            return metrics
        plain = self._export(acc.unwrap_model(module), total, metrics)
        self.denoiser = plain
        final = self._evaluate(total, history, final=True)
        metrics.update(final)
        metrics["cmmd_curve"] = [{"step": st, "cmmd": v} for st, v in history["cmmd"]]
        metrics["peak_memory_bytes"] = max(peak, peak_memory_bytes(acc.device, self.memory_baseline))
        metrics.update(tensor_peak_metric())
        return metrics

    def micro_step(self, module: nn.Module, u: int, bs: int) -> torch.Tensor:
        from .data import seeded_generator
        from .pipeline import time_ids, tokenize

        acc, pipe, sched = self.accelerator, self.pipe, self.noise_scheduler
        b = self.data.batch(u, bs, acc.process_index, acc.num_processes)
        g = seeded_generator(self.spec["seed"], u, acc.process_index, 31)
        with torch.no_grad():
            pix = b["pixels"].to(acc.device, torch.float32)
            latents = pipe.vae.encode(pix).latent_dist.sample(generator=g)
            sf = pipe.vae.config.scaling_factor
            latents = (latents - (getattr(pipe.vae.config, "shift_factor", None) or 0)) * sf
        latents = latents.to(self.weight_dtype)
        noise = torch.randn(latents.shape, generator=g).to(latents)
        if self.train["noise_offset"]:
            noise = noise + self.train["noise_offset"] * torch.randn(
                (latents.shape[0], latents.shape[1], 1, 1), generator=g
            ).to(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=g).to(
            acc.device
        )
        noisy = sched.add_noise(latents, noise, t)
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
        ids = [tokenize(tok, b["captions"]) for _, tok, _ in self.encoders]
        add_ids = (
            time_ids(b["original_sizes"], b["crops"], self.data_spec["resolution"]) if self.sdxl else None
        )
        with acc.autocast():
            pred = module(noisy, t, ids, add_ids)
        return _loss(pred, target, t, sched, self.train.get("snr_gamma"))

    def _export(self, module: nn.Module, step: int, metrics: dict[str, Any]) -> nn.Module:
        from .export import export_adapters

        paths = export_adapters(module, self.pipe, self.ctx, self.spec["adapter"], step)
        metrics.update(paths)
        return module

    @torch.no_grad()
    def _evaluate(self, step: int, history: dict[str, list[Any]], final: bool = False) -> dict[str, Any]:
        from .evaluate import evaluate

        was_training = self.denoiser.training
        self.denoiser.eval()
        out = evaluate(
            self.pipe, self.spec, self.ctx, step, final, self.examples, self.weight_dtype, self.reference
        )
        if "cmmd" in out:
            history["cmmd"].append([step, out["cmmd"]])
            self.ctx.eval(step, {k: out[k] for k in ("cmmd", "cmmd_num_reference", "cmmd_num_generated")})
        self.denoiser.train(was_training)
        return out


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Train, export and evaluate one text-to-image adapter (see the module docstring)."""
    from ...run.launch import relaunch_if_needed

    relaunched = relaunch_if_needed(spec, ctx)
    if relaunched is not None:
        return relaunched
    t0 = time.perf_counter()
    trainer = Trainer(spec, ctx)
    metrics = trainer.run()
    metrics["wall_s"] = time.perf_counter() - t0
    return metrics
