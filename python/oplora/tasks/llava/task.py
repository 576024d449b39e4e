"""Task `llava`: LoRA / OP-LoRA fine-tuning of a LLaVA model on conversation data, with VQA evaluation.

check inputs (records, images, processor, max_length)  ── InputError before any weight is loaded
memory plan from the config on the meta device         ── InputError when it exceeds the device
LlavaForConditionalGeneration.from_pretrained ─► PEFT LoRA on the language model's linears
    (+ projector as modules_to_save) ─► apply_adapter (OP-LoRA: generator attached)
accelerate loop: micro-batches ─► masked loss (assistant tokens) ─► accumulate ─► clip ─► step
    every checkpoint_every: checkpoint; every eval_every: eval loss + VQA accuracy + predictions
end: eval ─► (reference logits) ─► collapse + PEFT adapter dir ─► (merged full weights)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...adapter import lora_parameters
from ...run.runner import InputError, RunContext
from .data import DataError, Encoder, Record, dataset_records, load_records
from .memory import memory_terms  # noqa: F401  (plan.py's hook: the activation terms)
from .model import DTYPES, PROJECTOR, base_parameter_count, llava_config, lora_layer_shapes

__all__ = ["run", "lora_layer_shapes", "base_weights"]


def _records(data: dict[str, Any]) -> tuple[list[Record], list[Record]]:
    if "dataset_name" in data:
        train = dataset_records(data, "split")
        if not data.get("eval_split"):
            return train, []
        return train, dataset_records(data, "eval_split", data.get("max_eval_examples"))
    for key in ("image_folder", "eval_image_folder"):
        if data.get(key) and not Path(data[key]).is_dir():
            raise DataError(f"data.{key}: {data[key]} is not a folder")
    folder = Path(data["image_folder"]) if data.get("image_folder") else None
    train = load_records(Path(data["train_json"]), folder, "data.train_json")
    evals: list[Record] = []
    if data.get("eval_json"):
        ef = data.get("eval_image_folder") or data.get("image_folder")
        evals = load_records(Path(data["eval_json"]), Path(ef) if ef else None, "data.eval_json")
        if data.get("max_eval_examples"):
            evals = evals[: data["max_eval_examples"]]
    return train, evals


def check_inputs(spec: dict[str, Any]) -> tuple[Any, Encoder, list[Record], list[Record]]:
    """Everything that can be checked without the weights: model type, processor, data, max_length."""
    from transformers import AutoProcessor

    try:
        config = llava_config(spec["model"]["pretrained"], spec["model"].get("revision"))
        train, evals = _records(spec["data"])
        processor = AutoProcessor.from_pretrained(
            spec["model"]["pretrained"], revision=spec["model"].get("revision")
        )
        encoder = Encoder(processor, spec["data"]["max_length"], spec["data"]["pad_to_square"])
    except DataError as e:
        raise InputError(str(e)) from e
    if spec["data"]["max_length"] <= encoder.n_image:
        raise InputError(
            f"data.max_length: {spec['data']['max_length']} is not longer than the {encoder.n_image} tokens one "
            "image takes; raise it above the image tokens plus the prompt and answer"
        )
    return config, encoder, train, evals


# --- memory plan ------------------------------------------------------------------------------------------


def base_weights(spec: dict[str, Any]) -> tuple[int, int]:
    """(parameters, bytes) of the frozen base model, all held in model.dtype (the plan's hook)."""
    n = base_parameter_count(spec)
    return n, n * DTYPES[spec["model"]["dtype"]].itemsize


def check_memory(spec: dict[str, Any], plan: dict[str, Any]) -> None:
    """Refuse (InputError) when `oplora.plan.plan(spec)` says the run does not fit, naming the knobs."""
    if plan["fits"]:
        return
    a = spec["adapter"]
    knobs = f"adapter.r = {a['r']}"
    if a["kind"] == "op-lora":
        knobs += f", adapter.generator.hidden_dim = {a['generator']['hidden_dim']}"
    targets = a.get("target_modules") or "every language-model linear (the default)"
    raise InputError(
        f"memory: {plan['message']}. Lower {knobs}, or adapt fewer layers with adapter.target_modules "
        f"(now: {targets}; {plan['layers']} layers, {plan['lora_parameters']:,} LoRA and "
        f"{plan['generator_parameters']:,} generator parameters); check_memory: false skips this check"
    )


# --- model ------------------------------------------------------------------------------------------------


def build_model(spec: dict[str, Any], device: torch.device) -> tuple[Any, Any, list[torch.nn.Parameter], Any]:
    """(module to train, plain PEFT model, trainable params in optimizer groups, target_modules)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from ...adapter import apply_adapter, lora_config_kwargs
    from .model import resolve_targets

    m = spec["model"]
    model = LlavaForConditionalGeneration.from_pretrained(
        m["pretrained"], revision=m.get("revision"), dtype=DTYPES[m["dtype"]]
    ).to(device)
    model.requires_grad_(False)
    a, train = spec["adapter"], spec["train"]
    targets = resolve_targets(spec, model)
    if train["gradient_checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = LoraConfig(
        **lora_config_kwargs(a),
        target_modules=targets,
        lora_dropout=a["lora_dropout"],
        modules_to_save=[PROJECTOR] if a["train_projector"] else None,
    )
    peft_model = get_peft_model(model, cfg)
    module, params = apply_adapter(peft_model, a)
    groups: list[Any] = [{"params": params}]
    if a["train_projector"]:
        proj = [p for n, p in peft_model.named_parameters() if f"{PROJECTOR}.modules_to_save" in n]
        for p in proj:
            p.requires_grad_(True)
        groups.append(
            {"params": proj, "lr": spec["optimizer"].get("projector_lr") or spec["optimizer"]["lr"]}
        )
    return module, peft_model, groups, targets


def _plain(module: Any) -> Any:
    """The PEFT model inside an OP-LoRA wrapper (or the module itself), with OP-LoRA's factors regenerated
    from the generator's current parameters, so calls that bypass the wrapper (generate) see them."""
    if hasattr(module, "regenerate"):
        with torch.no_grad():  # no graph: the next training forward regenerates with one
            module.regenerate()
    return getattr(module, "base", module)


def _optimizer_step(
    accelerator: Any,
    module: Any,
    optimizer: Any,
    batches: Any,
    params: list[Any],
    train: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    step: int,
) -> tuple[float, int]:
    """Optimizer step `step` over `gradient_accumulation_steps` micro-batches: (mean loss over them and the
    processes, tokens seen)."""
    from ...training.loop import optimizer_step
    from .train import forward_logits, masked_loss, to_device

    n_tok = 0

    def micro_loss() -> torch.Tensor:
        nonlocal n_tok
        try:
            batch = to_device(next(batches), device, dtype)
        except DataError as e:  # seen only when a record is first encoded (image tokens truncated)
            raise InputError(str(e)) from e
        n_tok += int(batch["attention_mask"].sum())
        with accelerator.autocast():
            total, count = masked_loss(forward_logits(module, batch), batch["labels"])
        return total / count.clamp(min=1)

    micro = (micro_loss for _ in range(train["gradient_accumulation_steps"]))
    loss = optimizer_step(accelerator, module, optimizer, params, train["max_grad_norm"], micro, step)
    return loss, n_tok


def _export(
    spec: dict[str, Any],
    ctx: RunContext,
    unwrapped: Any,
    encoder: Encoder,
    eval_records: list[Record],
    device: torch.device,
    dtype: torch.dtype,
    step: int,
) -> dict[str, Any]:
    """Main process, after training: reference logits, the PEFT adapter dir, merged weights; their metrics."""
    from ...training.export import save_adapter
    from .data import collate
    from .train import forward_logits, to_device

    ev, out = spec["eval"], {}
    if spec["export"]["reference_logits"] and eval_records:
        from safetensors.torch import save_file

        batch = to_device(
            collate([encoder.encode(r) for r in eval_records[: ev["batch_size"]]], encoder), device, dtype
        )
        with torch.no_grad():
            logits = forward_logits(_plain(unwrapped).eval(), batch)
        ref = ctx.path("reference_logits.safetensors")
        save_file({"logits": logits.float().cpu().contiguous()}, str(ref))
        ctx.artifact("file", ref, label="reference logits (first eval batch)")
    adapter_dir = ctx.path("adapter", "x").parent
    plain = save_adapter(unwrapped, adapter_dir, ctx, step=step, label="PEFT adapter")
    encoder.processor.save_pretrained(str(adapter_dir))
    out["adapter_path"] = ctx.rel(adapter_dir)
    out["lora_parameters"] = sum(p.numel() for p in lora_parameters(plain).values())
    if spec["export"]["merged"]:
        merged_dir = ctx.path("merged", "x").parent
        plain.merge_and_unload().save_pretrained(str(merged_dir))
        encoder.processor.save_pretrained(str(merged_dir))
        ctx.artifact("file", merged_dir, label="merged full weights")
        out["merged_path"] = ctx.rel(merged_dir)
    return out


def _build_and_resume(spec: dict[str, Any], ctx: RunContext, device: torch.device) -> tuple[Any, ...]:
    """Model, optimizer groups, target modules, optimizer, scheduler and (step, losses, tokens), restored
    from the run directory's latest checkpoint when there is one."""
    from ...training.loop import build_lr_scheduler, build_optimizer
    from ...training.state import latest_checkpoint, load_checkpoint

    module, _peft_model, groups, targets = build_model(spec, device)
    optimizer = build_optimizer(groups, spec["optimizer"])
    scheduler = build_lr_scheduler(optimizer, spec["train"])
    step, losses, tokens = 0, [], 0
    ckpt = latest_checkpoint(ctx.run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, module, optimizer, scheduler)
        step, losses, tokens = int(state["step"]), list(state.get("losses", [])), int(state.get("tokens", 0))
    return module, groups, targets, optimizer, scheduler, (step, losses, tokens)


# --- run --------------------------------------------------------------------------------------------------


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The task entry point (see the module docstring). Kept as one unit of ~100 lines on purpose: the loop
    state (step, losses, tokens, evals) is shared by the step, checkpoint, eval and final-metrics phases,
    and the steps themselves live in `_optimizer_step`, `_build_and_resume` and `_export`."""
    from ...adapter import count_parameters, set_seed
    from ...plan import plan as make_plan
    from ...run.launch import relaunch_if_needed
    from ...training.loop import (
        build_accelerator,
        input_warnings,
        memory_baseline,
        peak_memory_bytes,
        reset_peak_memory,
        tensor_peak_metric,
    )
    from ...training.state import save_checkpoint
    from .train import MicroBatches, evaluate, micro_batch_loader

    t_start = time.perf_counter()
    train, ev = spec["train"], spec["eval"]
    _, encoder, records, eval_records = check_inputs(spec)
    plan = make_plan(spec)  # refuses target_modules that match no layer
    if spec["check_memory"]:
        check_memory(spec, plan)
    relaunched = relaunch_if_needed(spec, ctx)
    if relaunched is not None:
        return relaunched
    for name, message in input_warnings(train, len(records)):  # once: here or in the launch's rank 0
        ctx.warn(name, message)

    set_seed(spec["seed"])
    accelerator = build_accelerator(train, ctx.device, ctx.run_dir)
    device = accelerator.device
    dtype = DTYPES[spec["model"]["dtype"]]
    reset_peak_memory(device)
    baseline = memory_baseline(device, ("transformers", "peft"))
    module, groups, targets, optimizer, scheduler, state = _build_and_resume(spec, ctx, device)
    step, losses, tokens = state
    n_trainable = sum(count_parameters(g["params"]) for g in groups)
    module, optimizer = accelerator.prepare(module, optimizer)
    module.train()

    accum = train["gradient_accumulation_steps"]
    params = [p for g in groups for p in g["params"]]
    rank, world = accelerator.process_index, accelerator.num_processes
    evals: list[dict[str, Any]] = []

    def run_eval(at: int) -> dict[str, Any] | None:
        if not eval_records or not accelerator.is_main_process:
            return None
        path = ctx.path("predictions", f"step-{at:06d}.jsonl") if ev["vqa"] else None
        m = evaluate(_plain(accelerator.unwrap_model(module)), encoder, eval_records, ev, device, dtype, path)
        evals.append({"step": at, **m})
        ctx.eval(at, m)
        if path is not None:
            ctx.artifact("predictions", path, step=at)
        return m

    micro_batches = MicroBatches(
        records, encoder, train["batch_size"], spec["seed"], step * accum, train["steps"] * accum, rank, world
    )
    batches = iter(micro_batch_loader(micro_batches, train["dataloader_num_workers"]))
    t_train, train_s, session_tokens = time.perf_counter(), 0.0, 0
    while step < train["steps"]:
        t0 = time.perf_counter()
        step_loss, n_tok = _optimizer_step(
            accelerator, module, optimizer, batches, params, train, device, dtype, step + 1
        )
        tokens, session_tokens = tokens + n_tok, session_tokens + n_tok
        scheduler.step()
        step += 1
        losses.append(step_loss)
        train_s += time.perf_counter() - t0
        if step % train["log_every"] == 0 or step == train["steps"]:
            ctx.step(step, train["steps"], step_loss, lr=scheduler.get_last_lr()[0])
        if train["checkpoint_every"] and step % train["checkpoint_every"] == 0 and step < train["steps"]:
            if accelerator.is_main_process:
                path = save_checkpoint(
                    ctx.run_dir, step, accelerator.unwrap_model(module), optimizer, scheduler,
                    {"losses": losses, "tokens": tokens},
                )  # fmt: skip
                ctx.checkpoint(step, path)
            accelerator.wait_for_everyone()
        if train["eval_every"] and step % train["eval_every"] == 0 and step < train["steps"]:
            run_eval(step)
            accelerator.wait_for_everyone()
    wall_train = time.perf_counter() - t_train

    metrics: dict[str, Any] = {
        "loss_curve": [{"step": i + 1, "loss": x} for i, x in enumerate(losses)],
        "final_loss": losses[-1] if losses else None,
        "evals": evals,
        "plan": plan,
        "target_modules": targets,
        "trainable_parameters": n_trainable,
        "generator_parameters": plan["generator_parameters"],
        "steps": step,
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = run_eval(step)
        if final:
            metrics.update(final)
            if ev["vqa"]:
                metrics["predictions_path"] = f"predictions/step-{step:06d}.jsonl"
        metrics.update(
            _export(spec, ctx, accelerator.unwrap_model(module), encoder, eval_records, device, dtype, step)
        )
    metrics["peak_memory_bytes"] = peak_memory_bytes(device, baseline)
    metrics.update(tensor_peak_metric())
    metrics["train_s"] = train_s
    # Tokens of every process (each encodes its own share of the global batch).
    session_tokens = int(accelerator.reduce(torch.tensor(session_tokens, device=device), "sum"))
    metrics["tokens_per_second"] = session_tokens / wall_train if wall_train > 0 else None
    metrics["tokens"] = tokens
    metrics["wall_s"] = time.perf_counter() - t_start
    return metrics
