"""Cosine triplet loss with in-batch negatives (hardest and semi-hard), on hand-made vectors."""

import math

import pytest
import torch

from modules.word_embedding import cosine_triplet_loss


def _unit(*degrees):
    """2-d unit vectors at these angles (degrees): cosine similarity is the cosine of the angle between them."""
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_hardest_negative_value_by_hand():
    # Label 0 at 0 and 60 degrees, label 1 at 90 and 180 degrees.
    emb, labels = _unit(0, 60, 90, 180), torch.tensor([0, 0, 1, 1])
    loss, stats = cosine_triplet_loss(emb, labels, margin=0.5)
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    # (anchor, positive): hardest negative = the most similar other-label token.
    terms = [0.5 + c(90) - c(60),   # 0 -> 60, negative 90 (cos 0 beats cos 180)
             0.5 + c(30) - c(60),   # 60 -> 0, negative 90
             0.5 + c(30) - c(90),   # 90 -> 180, negative 60
             0.5 + c(120) - c(90)]  # 180 -> 90, negative 60 (cos 120 beats cos 180)
    assert loss.item() == pytest.approx(sum(max(0.0, t) for t in terms) / 4, abs=1e-6)
    assert stats["triplets"].item() == 4 and stats["active"].item() == pytest.approx(0.5)  # two hinges at 0


def test_zero_when_every_positive_is_closer_by_the_margin():
    emb = _unit(0, 10, 90, 100, 180, 190) * torch.tensor([[1.0], [3.0], [0.5], [2.0], [1.0], [7.0]])  # norm ignored
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for negatives in ("hardest", "semi_hard"):
        loss, stats = cosine_triplet_loss(emb, labels, margin=0.4, negatives=negatives)
        assert loss.item() == 0.0 and stats["active"].item() == 0.0
    # ... and positive once the margin is larger than the gap (cos 10 - cos 80 = 0.81).
    loss, _ = cosine_triplet_loss(emb, labels, margin=0.9)
    assert loss.item() > 0


def test_semi_hard_takes_the_closest_negative_beyond_the_positive():
    # Label 0 at 0 and 40 degrees, label 1 at 30 and 50 degrees.
    emb, labels = _unit(0, 40, 30, 50), torch.tensor([0, 0, 1, 1])
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    m = 0.4
    semi, _ = cosine_triplet_loss(emb, labels, margin=m, negatives="semi_hard")
    hard, _ = cosine_triplet_loss(emb, labels, margin=m, negatives="hardest")
    semi_terms = [m + c(50) - c(40),   # 0 -> 40: 50 deg is less similar than the positive; 30 deg is not
                  m + c(10) - c(40),   # 40 -> 0: both negatives (10 deg away) beat the positive: the least similar
                  m + c(30) - c(20),   # 30 -> 50: 0 deg (cos 30) is below the positive's cos 20; 40 deg is not
                  m + c(50) - c(20)]   # 50 -> 30: 0 deg
    hard_terms = [m + c(30) - c(40), m + c(10) - c(40), m + c(10) - c(20), m + c(10) - c(20)]
    assert semi.item() == pytest.approx(sum(max(0.0, t) for t in semi_terms) / 4, abs=1e-6)
    assert hard.item() == pytest.approx(sum(max(0.0, t) for t in hard_terms) / 4, abs=1e-6)
    assert semi.item() < hard.item()


def test_gradient_flows_and_degenerate_batches_give_zero():
    emb = torch.randn(6, 4, requires_grad=True)
    loss, _ = cosine_triplet_loss(emb, torch.tensor([0, 0, 1, 1, 2, -1]), margin=0.4)
    loss.backward()
    assert emb.grad is not None and emb.grad[5].abs().sum() == 0  # label -1 takes no part
    for labels in (torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0] * 6)):  # no positive / no negative
        loss, stats = cosine_triplet_loss(emb, labels)
        assert loss.item() == 0.0 and stats["triplets"].item() == 0 and loss.requires_grad
    with pytest.raises(ValueError, match="negatives must be one of"):
        cosine_triplet_loss(emb, torch.zeros(6, dtype=torch.long), negatives="random")
