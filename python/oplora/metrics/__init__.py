"""Metrics, one module each: effective rank (MF), CMMD (text-to-image), VQA accuracy (LLaVA)."""
