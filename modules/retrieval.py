"""Query-by-example retrieval: MAP and precision@k from a similarity matrix, MFCC features, and DTW on sequences.

Every segment queries all the others; a hit is a segment with the same label. These functions score any
method the same way: embeddings (cosine similarity), mean-pooled MFCC vectors, or DTW distances (negated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def retrieval_scores(similarity: np.ndarray | torch.Tensor, labels: Sequence, ks: Sequence[int] = (1, 10)) -> dict:
    """Mean average precision and precision@k of query-by-example retrieval.

    Each row ``i`` ranks every other segment by ``similarity[i]`` (higher = closer; ties keep index order);
    the segment itself is left out. Queries with no other segment of their label are skipped.

    Args:
        similarity: ``(N, N)`` scores.
        labels: ``N`` labels.
        ks: Cut-offs for precision@k.

    Returns:
        ``{"map": float, "p@k": float for each k, "queries": int}``.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64).clone()
    n = sim.size(0)
    if sim.shape != (n, n):
        raise ValueError(f"similarity must be square, got {tuple(sim.shape)}")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} segments")
    if n < 2:
        raise ValueError("retrieval needs at least 2 segments")
    codes = {lab: i for i, lab in enumerate(dict.fromkeys(labels))}
    lab = torch.tensor([codes[x] for x in labels])
    sim.fill_diagonal_(float("-inf"))
    order = torch.sort(-sim, dim=1, stable=True).indices[:, : n - 1]  # (N, N-1), self (at -inf) dropped
    rel = (lab[order] == lab[:, None]).double()  # (N, N-1)
    n_rel = rel.sum(1)
    valid = n_rel > 0
    precision = rel.cumsum(1) / torch.arange(1, n, dtype=torch.float64)[None, :]
    ap = (precision * rel).sum(1) / n_rel.clamp_min(1)
    out = {"map": float(ap[valid].mean()) if valid.any() else 0.0}
    for k in ks:
        kk = min(int(k), n - 1)
        out[f"p@{k}"] = float(rel[valid, :kk].mean()) if valid.any() else 0.0
    out["queries"] = int(valid.sum())
    return out


def cosine_similarity_matrix(vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, D)`` -> ``(N, N)`` cosine similarities."""
    v = F.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=1)
    return v @ v.T


def mfcc_sequences(waveforms: Sequence[torch.Tensor], sample_rate: int, n_mfcc: int = 13, n_mels: int = 40,
                   win_ms: float = 25.0, hop_ms: float = 10.0) -> list[torch.Tensor]:
    """MFCC frames ``(T_i, n_mfcc)`` per waveform (25 ms windows, 10 ms hop by default)."""
    import math

    import torchaudio

    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    mfcc = torchaudio.transforms.MFCC(
        sample_rate=sample_rate, n_mfcc=n_mfcc,
        melkwargs={"n_fft": 2 ** math.ceil(math.log2(win)), "win_length": win, "hop_length": hop, "n_mels": n_mels,
                   "center": True})
    with torch.no_grad():
        return [mfcc(w.float()).T.contiguous() for w in waveforms]


def mean_pooled(sequences: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each ``(T_i, D)`` sequence averaged over time, then every dimension standardised over the set: ``(N, D)``."""
    v = torch.stack([s.mean(0) for s in sequences])
    return (v - v.mean(0)) / v.std(0).clamp_min(1e-8)


def dtw(cost: np.ndarray) -> float:
    """Accumulated cost of the best monotonic alignment (steps right, down, diagonal) through a cost matrix.

    The plain dynamic programme: ``D[i, j] = cost[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1])``; the value is
    ``D[-1, -1]``. A reference for :func:`dtw_distance_matrix`.
    """
    cost = np.asarray(cost, dtype=np.float64)
    ta, tb = cost.shape
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, ta + 1):
        for j in range(1, tb + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(acc[ta, tb])


def _dtw_block(a: torch.Tensor, la: torch.Tensor, b: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """DTW of ``P`` pairs at once: ``a (P, Ta, D)``, ``b (P, Tb, D)`` zero-padded -> accumulated costs ``(P,)``.

    Cells along each anti-diagonal depend only on the two previous ones, so one diagonal is one vector step over
    all pairs. Padding never reaches a pair's result: ``D[la, lb]`` depends only on cells above and left of it.
    """
    p, ta, tb = a.size(0), a.size(1), b.size(1)
    cost = torch.cdist(a, b)  # (P, Ta, Tb) Euclidean frame distances
    acc = torch.full((p, ta + 1, tb + 1), float("inf"), dtype=cost.dtype)
    acc[:, 0, 0] = 0.0
    for d in range(ta + tb - 1):
        i = torch.arange(max(0, d - tb + 1), min(ta - 1, d) + 1)
        j = d - i
        best = torch.minimum(torch.minimum(acc[:, i, j], acc[:, i, j + 1]), acc[:, i + 1, j])
        acc[:, i + 1, j + 1] = cost[:, i, j] + best
    return acc[torch.arange(p), la, lb]


def dtw_distance_matrix(sequences: Sequence[torch.Tensor], *, normalize: bool = True,
                        max_cells: int = 4_000_000) -> torch.Tensor:
    """Symmetric ``(N, N)`` DTW distances between ``(T_i, D)`` sequences (Euclidean frame cost).

    With ``normalize`` each accumulated cost is divided by ``T_i + T_j`` so long and short segments compare
    fairly. Pairs are sorted by length and processed in blocks of about ``max_cells`` cost cells (bounded memory).
    """
    n = len(sequences)
    lens = torch.tensor([s.size(0) for s in sequences])
    if n and int(lens.min()) < 1:
        raise ValueError("DTW needs sequences of at least one frame")
    ii, jj = torch.triu_indices(n, n, offset=1)
    longest = torch.maximum(lens[ii], lens[jj])
    order = torch.argsort(longest, stable=True)
    ii, jj = ii[order], jj[order]
    dist = torch.zeros(n, n, dtype=torch.float64)
    start = 0
    while start < ii.numel():
        t = int(longest[order[start]])
        size = max(1, max_cells // (t * t))
        # The block's padded size follows its longest pair (pairs are sorted, so its last one).
        size = min(size, ii.numel() - start)
        t = int(torch.maximum(lens[ii[start + size - 1]], lens[jj[start + size - 1]]))
        bi, bj = ii[start: start + size], jj[start: start + size]
        a = torch.zeros(size, int(lens[bi].max()), sequences[0].size(1), dtype=torch.float64)
        b = torch.zeros(size, int(lens[bj].max()), sequences[0].size(1), dtype=torch.float64)
        for k, (x, y) in enumerate(zip(bi.tolist(), bj.tolist(), strict=True)):
            a[k, : lens[x]] = sequences[x]
            b[k, : lens[y]] = sequences[y]
        d = _dtw_block(a, lens[bi], b, lens[bj])
        if normalize:
            d = d / (lens[bi] + lens[bj]).to(d.dtype)
        dist[bi, bj] = d
        dist[bj, bi] = d
        start += size
    return dist


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """Multinomial logistic regression on frozen vectors (standardised with the training statistics).

    Full-batch Adam; returns train and test accuracy (percent) and ``test_pred``, the test predictions.
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = torch.nn.Linear(xtr.size(1), n_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.01)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(layer(xtr), train_y).backward()
        opt.step()
    with torch.no_grad():
        acc = {name: float((layer(x).argmax(-1) == y).float().mean() * 100)
               for name, x, y in (("train_acc", xtr, train_y), ("test_acc", xte, test_y))}
        acc["test_pred"] = layer(xte).argmax(-1)
    return acc
