"""Training objectives of the heads: CLIP's symmetric InfoNCE loss (aware that a batch may hold
several photos of one class), cross-entropy of each photo over every class's phrase, and distillation
toward a frozen classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on the learnable temperature's inverse


def clamped_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """The similarity scale from the learnable log-scale, capped as CLIP does."""
    return logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over image-text similarities scaled by a learnable temperature.

    With ``labels``, pairs that share a label are all positives (soft targets), so two photos of
    the same class in one batch are not pushed apart as they would be with CLIP's identity targets.
    """

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = clamped_scale(logit_scale) * image_emb @ text_emb.T
        if labels is None:
            targets = torch.eye(len(image_emb), device=logits.device)
        else:
            targets = (labels[:, None] == labels[None, :]).float()
        loss_images = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
        loss_texts = F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True))
        return (loss_images + loss_texts) / 2


class ClassCrossEntropy(nn.Module):
    """Cross-entropy of each photo over one phrase embedding of every class the trainer holds.

    What the paper protocol asks of an image (pick its label's phrase among N), with all classes as
    negatives in every step instead of those a batch happens to hold, and no text-to-image term.
    """

    def forward(
        self,
        image_emb: torch.Tensor,
        class_emb: torch.Tensor,
        logit_scale: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        return F.cross_entropy(clamped_scale(logit_scale) * image_emb @ class_emb.T, labels)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the class distributions softened by ``temperature``, mean over photos
    (learning without forgetting, Li & Hoiem 2016: the teacher is the frozen model on the same photos)."""
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")
