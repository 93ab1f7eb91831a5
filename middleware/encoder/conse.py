"""ConSE zero-shot composition (Norouzi et al., 2014) between the image tower and the text space.

An image is embedded as the probability-weighted mean of the text embeddings of the ImageNet-1k
class names its classifier finds most likely. That puts images into the text tower's space
without any paired training, so it works for any photo the tower's 1000 classes can describe.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from middleware.encoder.base import l2_normalise

ASSETS = Path(__file__).resolve().parent / "assets"
IMAGENET_CLASSES_TSV = ASSETS / "imagenet_classes.tsv"

# Generic photo prompts used to embed each ImageNet class name (prompt ensembling).
CLASS_BANK_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of the {}.",
    "an image showing a {}.",
    "a close-up photo of a {}.",
    "a {} in a photo.",
)


def load_imagenet_classes(path: str | Path = IMAGENET_CLASSES_TSV) -> list[tuple[str, list[str]]]:
    """``(wnid, names)`` of the 1000 ImageNet-1k classes in classifier index order (first name first)."""
    rows: list[tuple[str, list[str]]] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows.append((row["wnid"], [n.strip() for n in row["names"].split(",") if n.strip()]))
    if len(rows) != 1000:
        raise ValueError(f"{path} lists {len(rows)} classes, expected 1000")
    return rows


def load_imagenet_class_names(path: str | Path = IMAGENET_CLASSES_TSV) -> list[list[str]]:
    """Names of the 1000 ImageNet-1k classes in classifier index order (first name first)."""
    return [names for _, names in load_imagenet_classes(path)]


def build_class_bank(
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    class_names: Sequence[Sequence[str]],
    templates: Sequence[str] = CLASS_BANK_TEMPLATES,
    max_synonyms: int = 2,
) -> np.ndarray:
    """Embed every class as the normalised mean over templates x its first synonyms."""
    phrases: list[str] = []
    owners: list[int] = []
    for index, names in enumerate(class_names):
        for name in list(names)[:max_synonyms]:
            for template in templates:
                phrases.append(template.format(name))
                owners.append(index)
    emb = encode_texts(phrases)
    bank = np.zeros((len(class_names), emb.shape[1]), dtype=np.float64)
    np.add.at(bank, np.asarray(owners), emb)
    return l2_normalise(bank)


def conse_weights(logits: np.ndarray, top_k: int, temperature: float) -> np.ndarray:
    """Sparse class weights: softmax(logits / T) restricted to the top-k classes, renormalised."""
    logits = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    return conse_mixture_weights(logits, top_k, temperature).numpy()


def conse_embed(logits: np.ndarray, bank: np.ndarray, top_k: int = 10, temperature: float = 1.0) -> np.ndarray:
    """ConSE image embeddings (unit rows in the text space) from classifier logits."""
    weights = conse_weights(logits, top_k, temperature)
    return l2_normalise(weights @ np.asarray(bank, dtype=np.float64))


def conse_mixture_weights(logits: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """:func:`conse_weights` on tensors, differentiable in the kept logits (tuned classifiers train
    through it): the top-k of softmax(logits / T), renormalised (the others are 0)."""
    probs = torch.softmax(logits / temperature, dim=1)
    if top_k < probs.shape[1]:
        kept, index = probs.topk(top_k, dim=1)
        probs = torch.zeros_like(probs).scatter(1, index, kept)
    return probs / probs.sum(dim=1, keepdim=True)


def conse_mixture(logits: torch.Tensor, bank: torch.Tensor, top_k: int, temperature: float) -> torch.Tensor:
    """:func:`conse_embed` on tensors, with gradients to the logits."""
    weights = conse_mixture_weights(logits, top_k, temperature)
    return torch.nn.functional.normalize(weights @ bank.to(weights.dtype), dim=-1)
