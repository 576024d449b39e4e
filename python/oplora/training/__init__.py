"""Small training helpers shared by the model tasks (text_to_image, llava): plain functions, no base class.

    spec.optimizer ──build_optimizer──► torch optimizer over the trainable params
    spec.train     ──build_lr_scheduler──► diffusers' get_scheduler (constant / linear / cosine, warm-up)
                   ──build_accelerator──► accelerate.Accelerator (accumulation, precision, cpu)
    every step     ──optimizer_step──► mean loss; a NaN / inf loss raises TrainingDiverged before the update
    every N steps  ──save_checkpoint──► DIR/checkpoints/step-000010/ (trainable params, optimizer,
                                        scheduler, RNG states, step); latest_checkpoint + load_checkpoint resume
    at the end     ──save_adapter──► finalize_adapter (collapse OP-LoRA) + save_pretrained + "adapter" artifact

A checkpoint holds only the *trainable* parameters, by name (the generator's for OP-LoRA, PEFT's lora_A /
lora_B for LoRA), so it stays small next to a frozen base of billions of parameters, and works whether or
not the module was wrapped by accelerate (names are taken from the unwrapped module).

Modules: `loop` (optimizer, schedule, accelerator, the step and its divergence check, precision, peak
memory), `state` (checkpoints with RNG states), `export` (PEFT adapter directories), `dataset_source` (Hugging
Face datasets and image folders).
"""
