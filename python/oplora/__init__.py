"""oplora: OP-LoRA (arXiv 2412.10362) on PEFT."""

__version__ = "0.1.0"
