"""Vision-language pieces of the `llava` task: data (LLaVA JSON, chat template, assistant-only labels),
model helpers (LLaVA check, language-model targets, meta-device plans), the training loop's helpers."""
