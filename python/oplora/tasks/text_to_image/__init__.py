"""The text-to-image task (`task`), its trainer, data, pipeline loading, evaluation and export."""
