"""Tasks: one module per `task` value of the spec union, each with `run(spec, ctx) -> metrics`.

Tasks own their training loops and share small functions, not base classes. Heavy imports (diffusers,
transformers, CLIP) live inside the task that needs them.
"""
