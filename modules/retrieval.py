"""Query-by-example retrieval (MAP, precision@k), same-different average precision, MFCC features, and DTW.

Every segment queries all the others; a hit is a segment with the same label. These functions score any
method the same way: embeddings (cosine similarity), mean-pooled or downsampled MFCC vectors, or DTW
distances (negated). :func:`same_different_ap` is the pair-level protocol of acoustic word embedding papers.
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


def same_different_ap(scores: np.ndarray | torch.Tensor, labels: Sequence, speakers: Sequence | None = None, *,
                      higher_is_similar: bool) -> dict:
    """Same-different average precision over all unordered pairs of tokens (Carlin et al. 2011).

    Every pair ``i < j`` is one trial; it is positive when both tokens have the same label. Pairs are ranked from
    most to least similar and AP is the mean, over the positive pairs, of the precision at their rank (the area
    under the precision-recall curve, as in Kamper's ``samediff``). Tied scores form one threshold: every
    positive pair of a tie group gets the precision at the group's end, so the result does not depend on the
    order of the tokens. All pairs are sorted once (float32 scores, the condensed upper triangle).

    Args:
        scores: ``(N, N)`` matrix (only the part above the diagonal is read), or the condensed upper triangle
            ``(N * (N - 1) / 2,)`` in row-major order (``torch.triu_indices(N, N, 1)``).
        labels: ``N`` word labels.
        speakers: ``N`` speaker names, or None. With speakers, ``ap_cross_speaker`` keeps only the pairs of two
            different speakers and ``ap_same_speaker`` only the pairs of one speaker (the other pairs are left out
            as positives and as negatives).
        higher_is_similar: True for similarities (cosine), False for distances (DTW).

    Returns:
        ``{"ap", "pairs", "positive_pairs"}``, and with speakers also ``ap_cross_speaker``, ``cross_speaker_pairs``,
        ``cross_speaker_positive_pairs``, ``ap_same_speaker``, ``same_speaker_pairs``,
        ``same_speaker_positive_pairs``. An AP is ``nan`` when its pairs hold no positive pair (its
        ``*positive_pairs`` count is then 0).

    Raises:
        ValueError: wrong shapes, fewer than 2 tokens, or a NaN score.
    """
    s = torch.as_tensor(scores)
    n = len(labels)
    if n < 2:
        raise ValueError("same-different AP needs at least 2 tokens")
    if speakers is not None and len(speakers) != n:
        raise ValueError(f"{len(speakers)} speakers for {n} tokens")
    if s.dim() == 2:
        if s.shape != (n, n):
            raise ValueError(f"scores must be ({n}, {n}) for {n} labels, got {tuple(s.shape)}")
        values = torch.cat([s[i, i + 1:].float() for i in range(n - 1)])  # row by row: no (N, N) index
    elif s.dim() == 1 and s.numel() == n * (n - 1) // 2:
        values = s.to(torch.float32, copy=True)  # negated in place below
    else:
        raise ValueError(f"scores must be ({n}, {n}) or condensed ({n * (n - 1) // 2},), got {tuple(s.shape)}")
    if torch.isnan(values).any():
        raise ValueError("scores hold NaN")

    def same(values_of: Sequence) -> torch.Tensor:  # condensed: both tokens of the pair have the same value
        codes = {v: i for i, v in enumerate(dict.fromkeys(values_of))}
        c = torch.tensor([codes[v] for v in values_of])
        return torch.cat([c[i + 1:] == c[i] for i in range(n - 1)])

    # Ascending key = most similar first. Ties are scored as one threshold, so the sort need not be stable.
    key, order = torch.sort(values.neg_() if higher_is_similar else values)
    del values
    positive = same(labels)[order]
    out = {"ap": _sorted_ap(key, positive), "pairs": int(key.numel()), "positive_pairs": int(positive.sum())}
    if speakers is not None:
        one_speaker = same(speakers)[order]
        for name, keep in (("cross_speaker", ~one_speaker), ("same_speaker", one_speaker)):
            out[f"ap_{name}"] = _sorted_ap(key[keep], positive[keep])
            out[f"{name}_pairs"] = int(keep.sum())
            out[f"{name}_positive_pairs"] = int(positive[keep].sum())
    return out


def _sorted_ap(key: torch.Tensor, positive: torch.Tensor) -> float:
    """AP of pairs sorted by ascending ``key`` (most similar first); equal keys share one threshold.

    Only the positive pairs are visited: a positive's rank is the number of pairs with a key at most its own
    (the end of its tie group), its hits the number of positives up to that rank.
    """
    where = positive.nonzero().squeeze(1)  # ascending positions of the positives
    if where.numel() == 0:
        return float("nan")
    rank = torch.searchsorted(key, key[where], right=True)
    hits = torch.searchsorted(where, rank - 1, right=True)
    return float((hits.double() / rank.double()).mean())


def cosine_similarity_matrix(vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(N, D)`` -> ``(N, N)`` cosine similarities."""
    v = F.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=1)
    return v @ v.T


def mfcc_sequences(waveforms: Sequence[torch.Tensor], sample_rate: int, n_mfcc: int = 13, n_mels: int = 40,
                   win_ms: float = 25.0, hop_ms: float = 10.0, deltas: bool = False) -> list[torch.Tensor]:
    """MFCC frames ``(T_i, n_mfcc)`` per waveform (25 ms windows, 10 ms hop by default).

    With ``deltas`` the first and second time derivatives (regression over +-2 frames, edges replicated) are
    appended: ``(T_i, 3 * n_mfcc)``.
    """
    import math

    import torchaudio

    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    mfcc = torchaudio.transforms.MFCC(
        sample_rate=sample_rate, n_mfcc=n_mfcc,
        melkwargs={"n_fft": 2 ** math.ceil(math.log2(win)), "win_length": win, "hop_length": hop, "n_mels": n_mels,
                   "center": True})
    out = []
    with torch.no_grad():
        for w in waveforms:
            m = mfcc(w.float())  # (n_mfcc, T)
            if deltas:
                d1 = torchaudio.functional.compute_deltas(m, win_length=5)
                m = torch.cat([m, d1, torchaudio.functional.compute_deltas(d1, win_length=5)])
            out.append(m.T.contiguous())
    return out


def cmvn(sequences: Sequence[torch.Tensor], groups: Sequence | None = None, eps: float = 1e-5) -> list[torch.Tensor]:
    """Cepstral mean and variance normalisation: every dimension to zero mean and unit variance.

    The statistics are taken over all frames of a group's sequences (``groups[i]`` names sequence ``i``'s group,
    e.g. its speaker), or over each sequence alone when ``groups`` is None.
    """
    if groups is None:
        return [(s - s.mean(0)) / s.std(0, correction=0).clamp_min(eps) for s in sequences]
    if len(groups) != len(sequences):
        raise ValueError(f"{len(groups)} groups for {len(sequences)} sequences")
    stats = {}
    for g in dict.fromkeys(groups):
        frames = torch.cat([s for s, h in zip(sequences, groups, strict=True) if h == g])
        stats[g] = frames.mean(0), frames.std(0, correction=0).clamp_min(eps)
    return [(s - stats[g][0]) / stats[g][1] for s, g in zip(sequences, groups, strict=True)]


def downsampled(sequences: Sequence[torch.Tensor], n_frames: int = 10) -> torch.Tensor:
    """Fixed-size vectors: each ``(T_i, D)`` sequence resampled to ``n_frames`` frames by linear interpolation
    along time (first and last frames kept), then flattened: ``(N, n_frames * D)`` (Levin et al. 2013)."""
    out = [F.interpolate(s.T[None].float(), size=n_frames, mode="linear", align_corners=True)[0].T.reshape(-1)
           for s in sequences]
    return torch.stack(out)


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


def _dtw_block(a: torch.Tensor, la: torch.Tensor, b: torch.Tensor, lb: torch.Tensor,
               metric: str = "euclidean") -> torch.Tensor:
    """DTW of ``P`` pairs at once: ``a (P, Ta, D)``, ``b (P, Tb, D)`` zero-padded -> accumulated costs ``(P,)``.

    Cells along each anti-diagonal depend only on the two previous ones, so one diagonal is one vector step over
    all pairs. Padding never reaches a pair's result: ``D[la, lb]`` depends only on cells above and left of it.
    """
    p, ta, tb = a.size(0), a.size(1), b.size(1)
    if metric == "cosine":  # (P, Ta, Tb) 1 - cosine of frames
        cost = 1 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
    else:
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
                        max_cells: int = 4_000_000, metric: str = "euclidean") -> torch.Tensor:
    """Symmetric ``(N, N)`` DTW distances between ``(T_i, D)`` sequences.

    The frame cost is the Euclidean distance (``metric="euclidean"``) or one minus the cosine similarity
    (``"cosine"``, as in same-different evaluations). With ``normalize`` each accumulated cost is divided by
    ``T_i + T_j`` so long and short segments compare fairly. Pairs are sorted by length and processed in blocks
    of about ``max_cells`` cost cells (bounded memory).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
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
        d = _dtw_block(a, lens[bi], b, lens[bj], metric)
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
