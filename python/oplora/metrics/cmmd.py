"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD between CLIP image embeddings.

    x_i, y_j = CLIP image embeddings of reference / generated images, L2-normalised     (n, d), (m, d)
    k(a, b)  = exp(-||a - b||² / (2 σ²)),  σ = 10
    CMMD     = 1000 · ( mean_ii' k(x_i, x_i') + mean_jj' k(y_j, y_j') - 2 mean_ij k(x_i, y_j) )

The biased estimator (diagonals included), as in google-research's `cmmd/distance.py`. Images are
preprocessed by the CLIP model's own image processor (resize shortest side, centre crop, CLIP
normalisation; bicubic for ViT-L/14@336). Default model `openai/clip-vit-large-patch14-336`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SIGMA = 10.0
SCALE = 1000.0
DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"


def mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """`scale` · biased MMD² with a Gaussian RBF kernel between rows of x (n, d) and y (m, d), in float64."""
    x, y = x.double(), y.double()
    gamma = 1.0 / (2 * sigma**2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (n, m)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return torch.exp(-gamma * sq.clamp_min(0))

    return float(scale * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()))


class ClipEmbedder:
    """CLIP image embeddings, L2-normalised: load once, embed many image lists."""

    def __init__(
        self, model: str = DEFAULT_CLIP, device: torch.device | str = "cpu", batch_size: int = 32
    ) -> None:
        from transformers import CLIPImageProcessor, CLIPModel

        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(model).eval().to(self.device)
        self.processor = CLIPImageProcessor.from_pretrained(model)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: list[Any]) -> torch.Tensor:
        """PIL images -> (n, d) unit-norm embeddings (float32, CPU)."""
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            pix = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            emb = self.model.get_image_features(pixel_values=pix)
            emb = getattr(emb, "pooler_output", emb)  # transformers may wrap the features in an output object
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)


def load_images(folder: Path) -> list[Any]:
    """Every image file in `folder` (sorted by name), as PIL images."""
    from PIL import Image

    exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
    return [Image.open(p).convert("RGB") for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in exts]


def cmmd(reference: list[Any] | torch.Tensor, generated: list[Any], embedder: ClipEmbedder) -> dict[str, Any]:
    """CMMD between reference images (or their precomputed embeddings) and generated images.

    Returns {"cmmd", "num_reference", "num_generated"}."""
    ref = reference if isinstance(reference, torch.Tensor) else embedder(reference)
    gen = embedder(generated)
    if len(ref) == 0 or len(gen) == 0:
        raise ValueError(
            f"cmmd: needs images on both sides, got {len(ref)} reference and {len(gen)} generated"
        )
    return {"cmmd": mmd2(ref, gen), "num_reference": int(len(ref)), "num_generated": int(len(gen))}
