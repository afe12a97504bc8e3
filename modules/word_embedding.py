"""Discriminative acoustic word embeddings: a recurrent encoder to one vector, trained with a cosine triplet loss.

Settle and Livescu (2016): a (bi)RNN reads a spoken word's frames, its pooled output is projected to a fixed-size
vector, and a triplet hinge on cosine similarity pulls two tokens of the same word together and pushes a token of
another word away. With in-batch negatives, every anchor's negative is chosen among the batch's tokens of other
labels (:func:`cosine_triplet_loss`).

:class:`SequenceEmbedder` has the attribute names of :class:`modules.autoencoder.SequenceAutoencoder`'s encoder
side (``frontend``, ``encoder``, ``pool``, ``to_embedding``), so an autoencoder's weights can start it.

Shapes: B batch, S samples, T frames, F features per frame, E embedding size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend
from modules.heads import encoder_pooling
from modules.networks import FrontendEncoderModel

NEGATIVE_CHOICES = ("hardest", "semi_hard")


def cosine_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.4,
                        negatives: Literal["hardest", "semi_hard"] = "hardest") -> tuple[Tensor, dict[str, Tensor]]:
    """Cosine triplet hinge with in-batch negatives: ``max(0, margin + cos(a, n) - cos(a, p))``.

    Every ordered pair ``(a, p)`` of two different tokens with the same label is one triplet; its negative ``n``
    is one of the batch's tokens with another label:

    * ``hardest``: the most similar one to ``a`` (the "most offending" negative);
    * ``semi_hard``: the most similar one that is still less similar to ``a`` than ``p`` is (FaceNet), else,
      when every negative is closer than ``p``, the least similar one.

    The loss is the mean over all triplets (zero when every positive is closer than its negative by the
    margin). Tokens with label ``-1`` take no part.

    Args:
        embeddings: ``(B, E)``, any norm (they are compared by cosine).
        labels: ``(B,)`` int.
        margin: The hinge margin, in cosine similarity (cosine distance ``1 - cos`` differs by the same amount).
        negatives: ``hardest`` or ``semi_hard``.

    Returns:
        ``(loss, stats)``: the scalar loss, and ``stats`` with ``triplets`` (how many), ``active`` (the fraction
        with a positive loss), ``pos_sim`` / ``neg_sim`` (mean cosine of the positives and chosen negatives).
        A batch without a triplet (no label twice, or one label only) gives a zero loss that keeps the graph.
    """
    if negatives not in NEGATIVE_CHOICES:
        raise ValueError(f"negatives must be one of {'|'.join(NEGATIVE_CHOICES)}, got {negatives!r}")
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"expected embeddings (B, E) and labels (B,), got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}")
    z = F.normalize(embeddings.float(), dim=1)
    sim = z @ z.T  # (B, B)
    labels = labels.to(sim.device)
    valid = labels >= 0
    same = (labels[:, None] == labels[None, :]) & valid[:, None] & valid[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    pos_mask = same & ~eye  # (B, B): (a, p)
    neg_mask = ~same & valid[:, None] & valid[None, :]  # (B, B): (a, n)
    has_neg = neg_mask.any(1)
    pos_mask = pos_mask & has_neg[:, None]
    zero = embeddings.sum() * 0.0
    if not pos_mask.any():
        return zero, {"triplets": torch.tensor(0), "active": zero.detach(), "pos_sim": zero.detach(),
                      "neg_sim": zero.detach()}
    a_idx, p_idx = pos_mask.nonzero(as_tuple=True)  # (P,), (P,)
    pos = sim[a_idx, p_idx]  # (P,)
    neg_all = sim[a_idx].masked_fill(~neg_mask[a_idx], float("-inf"))  # (P, B)
    hardest = neg_all.max(1).values
    if negatives == "hardest":
        neg = hardest
    else:
        farther = neg_all.masked_fill(neg_all >= pos[:, None], float("-inf")).max(1).values
        easiest = sim[a_idx].masked_fill(~neg_mask[a_idx], float("inf")).min(1).values
        neg = torch.where(torch.isfinite(farther), farther, easiest)
    hinge = F.relu(margin + neg - pos)
    stats = {"triplets": torch.tensor(int(pos.numel())), "active": (hinge > 0).float().mean().detach(),
             "pos_sim": pos.mean().detach(), "neg_sim": neg.mean().detach()}
    return hinge.mean(), stats


class SequenceEmbedder(FrontendEncoderModel):
    """Waveform -> log-mel -> recurrent encoder -> pooling -> linear: one vector per segment.

    Args:
        frontend: Log-mel features (its SpecAugment, if on, acts while training only).
        encoder: Stacked (bi)RNN over the frames.
        embedding_size: E.
        pooling: How encoder outputs become one vector (see :class:`~modules.heads.SequencePooling`).

    Shape:
        waveforms ``(B, S)``, lengths ``(B,)`` samples -> ``(B, E)``.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder, embedding_size: int = 128,
                 pooling: Literal["last", "mean", "max", "attention"] = "last") -> None:
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        super().__init__(frontend=frontend, encoder=encoder)
        self.pool = encoder_pooling(encoder, pooling)
        self.to_embedding = nn.Linear(encoder.output_size, embedding_size)
        self.embedding_size = embedding_size

    def encode_features(self, feats: Tensor, frames: Tensor) -> Tensor:
        h, out_frames = self.encoder(feats, frames)  # (B, T, D*H)
        return self.to_embedding(self.pool(h, out_frames))  # (B, E)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        feats, frames = self.frontend(waveforms, lengths)
        return self.encode_features(feats, frames)
