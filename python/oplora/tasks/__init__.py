"""Tasks: one module per `task` value of the spec union, each with `run(spec, ctx) -> metrics`.

Tasks own their training loops and share small functions, not base classes. Heavy imports (diffusers,
transformers, CLIP) live inside the task that needs them.
"""

from pathlib import Path


def looks_local(name: str) -> bool:
    """Whether a model name is a path on disk rather than a hub id ("org/name"): it exists, or it starts with
    ".", "/" or "~", or it has more than one "/". A local path that does not exist is then the user's typo,
    said before from_pretrained turns it into the hub's "Repo id must be in the form" message."""
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
