"""Retrieval metrics on cases worked by hand, same-different AP against brute force, DTW against a hand-worked
example and the plain DP, MFCC shapes, and the same-different baselines on a separable toy set."""

import math

import numpy as np
import pytest
import torch

from modules.retrieval import (
    cmvn,
    cosine_similarity_matrix,
    downsampled,
    dtw,
    dtw_distance_matrix,
    mean_pooled,
    mfcc_sequences,
    retrieval_scores,
    same_different_ap,
)


def test_map_and_precision_on_a_constructed_case():
    labels = ["a", "a", "b", "b"]
    # query 0 ranks 2, 1, 3: its only hit (1) comes second -> AP 1/2; the other queries rank their hit first.
    sim = torch.tensor([[9, 2, 3, 1],
                        [5, 9, 1, 0],
                        [0, 1, 9, 5],
                        [1, 0, 5, 9]], dtype=torch.float32)
    s = retrieval_scores(sim, labels, ks=(1, 2))
    assert s["map"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert s["p@1"] == pytest.approx(3 / 4)
    assert s["p@2"] == pytest.approx(0.5)  # every query has one hit among its top 2
    assert s["queries"] == 4


def test_map_with_two_hits_and_a_query_without_hits():
    labels = [0, 0, 0, 1, 2]
    sim = -torch.tensor([[0, 2, 4, 1, 3]] * 5, dtype=torch.float32)  # every query: order by this distance
    s = retrieval_scores(sim, labels, ks=(1,))
    # query 0 ranks 3, 1, 4, 2 -> hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5
    # query 1 ranks 0, 3, 4, 2 -> hits at 1 and 4: (1 + 2/4) / 2 = 0.75
    # query 2 ranks 0, 3, 1, 4 -> hits at 1 and 3: (1 + 2/3) / 2
    # queries 3 and 4 have no other segment of their label: skipped
    assert s["queries"] == 3
    assert s["map"] == pytest.approx((0.5 + 0.75 + (1 + 2 / 3) / 2) / 3)


def test_perfect_embeddings_score_one_and_bad_input_is_rejected():
    emb = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    s = retrieval_scores(cosine_similarity_matrix(emb), ["x", "x", "y", "y"])
    assert s["map"] == 1.0 and s["p@1"] == 1.0
    with pytest.raises(ValueError, match="square"):
        retrieval_scores(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="3 labels for 2 segments"):
        retrieval_scores(torch.zeros(2, 2), [0, 1, 1])


def test_dtw_hand_worked_example():
    # a = [0, 1, 2], b = [0, 2] with |a_i - b_j| costs:
    #        b=0  b=2
    # a=0  [  0,   2 ]
    # a=1  [  1,   1 ]
    # a=2  [  2,   0 ]
    # best path (0,0) -> (1,0) or (1,1) -> (2,1): 0 + 1 + 0 = 1
    cost = np.abs(np.array([0, 1, 2.0])[:, None] - np.array([0, 2.0])[None, :])
    assert dtw(cost) == 1.0
    a, b = torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.0], [2.0]])
    d = dtw_distance_matrix([a, b], normalize=False)
    assert d[0, 1] == d[1, 0] == 1.0 and d[0, 0] == 0
    assert dtw_distance_matrix([a, b])[0, 1] == pytest.approx(1.0 / 5)  # normalised by 3 + 2 frames


def test_batched_dtw_matches_the_plain_dynamic_programme():
    torch.manual_seed(0)
    seqs = [torch.randn(int(n), 3, dtype=torch.float64) for n in torch.randint(1, 9, (7,))]
    d = dtw_distance_matrix(seqs, normalize=False, max_cells=60)  # small blocks: several block shapes
    for i in range(7):
        for j in range(7):
            if i != j:
                assert d[i, j].item() == pytest.approx(dtw(torch.cdist(seqs[i], seqs[j]).numpy()))


def test_mfcc_sequences_and_mean_pooling_shapes():
    wavs = [torch.randn(800), torch.randn(1600)]
    seqs = mfcc_sequences(wavs, 8000, n_mfcc=13)
    assert [tuple(s.shape) for s in seqs] == [(11, 13), (21, 13)]  # 10 ms hop, centred frames
    pooled = mean_pooled(seqs)
    assert pooled.shape == (2, 13) and torch.allclose(pooled.mean(0), torch.zeros(13), atol=1e-4)


def _brute_ap(sim, labels, keep=lambda i, j: True):
    """Same-different AP by definition: for each positive pair, the precision among all pairs at least as similar."""
    n = len(labels)
    pairs = [(float(sim[i][j]), labels[i] == labels[j]) for i in range(n) for j in range(i + 1, n) if keep(i, j)]
    precisions = []
    for s, positive in pairs:
        if positive:
            at_or_above = [p for t, p in pairs if t >= s]
            precisions.append(sum(at_or_above) / len(at_or_above))
    return sum(precisions) / len(precisions) if precisions else math.nan


def _kamper_ap(distances, labels):
    """The ``samediff`` recipe for distinct distances: sort ascending, mean precision at the positives."""
    n = len(labels)
    pairs = sorted((float(distances[i][j]), labels[i] == labels[j]) for i in range(n) for j in range(i + 1, n))
    hits, total = 0, 0.0
    for rank, (_, positive) in enumerate(pairs, start=1):
        if positive:
            hits += 1
            total += hits / rank
    return total / hits


def test_same_different_ap_on_a_hand_worked_case():
    labels = ["a", "a", "b", "b"]
    # pairs by similarity: (0,2) 0.9 neg, (0,1) 0.8 pos, (1,3) 0.5 neg, (2,3) 0.4 pos, (0,3) 0.2, (1,2) 0.1
    sim = torch.tensor([[1.0, 0.8, 0.9, 0.2],
                        [0.8, 1.0, 0.1, 0.5],
                        [0.9, 0.1, 1.0, 0.4],
                        [0.2, 0.5, 0.4, 1.0]])
    r = same_different_ap(sim, labels, higher_is_similar=True)
    assert r == {"ap": pytest.approx((1 / 2 + 2 / 4) / 2), "pairs": 6, "positive_pairs": 2}
    # The same ranking as distances, and given as the condensed upper triangle.
    condensed = -sim[tuple(torch.triu_indices(4, 4, 1))]
    assert same_different_ap(condensed, labels, higher_is_similar=False)["ap"] == pytest.approx(0.5)
    # Speakers x y x y: (0,2) and (1,3) are one speaker's pairs; the cross-speaker ranking is (0,1)+, (2,3)+, ...
    r = same_different_ap(sim, labels, ["x", "y", "x", "y"], higher_is_similar=True)
    assert r["ap_cross_speaker"] == 1.0 and r["cross_speaker_pairs"] == 4 and r["cross_speaker_positive_pairs"] == 2
    assert math.isnan(r["ap_same_speaker"]) and r["same_speaker_pairs"] == 2 and r["same_speaker_positive_pairs"] == 0


@pytest.mark.parametrize("seed", range(4))
def test_same_different_ap_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 14
    labels = torch.randint(0, 4, (n,), generator=g).tolist()
    speakers = [f"s{k}" for k in torch.randint(0, 3, (n,), generator=g).tolist()]
    x = torch.randn(n, 5, generator=g)
    sim = x @ x.T
    tied = torch.randint(0, 4, (n, n), generator=g).float()  # many ties
    tied = torch.maximum(tied, tied.T)
    for scores in (sim, tied):
        r = same_different_ap(scores, labels, speakers, higher_is_similar=True)
        assert r["ap"] == pytest.approx(_brute_ap(scores, labels))
        cross = _brute_ap(scores, labels, lambda i, j: speakers[i] != speakers[j])
        same = _brute_ap(scores, labels, lambda i, j: speakers[i] == speakers[j])
        assert r["ap_cross_speaker"] == pytest.approx(cross, nan_ok=True)
        assert r["ap_same_speaker"] == pytest.approx(same, nan_ok=True)
        assert r["pairs"] == r["cross_speaker_pairs"] + r["same_speaker_pairs"] == n * (n - 1) // 2
        # Ties form one threshold: shuffling the tokens changes nothing.
        perm = torch.randperm(n, generator=g)
        shuffled = same_different_ap(scores[perm][:, perm], [labels[i] for i in perm],
                                     [speakers[i] for i in perm], higher_is_similar=True)
        assert shuffled["ap"] == pytest.approx(r["ap"])
        assert shuffled["ap_cross_speaker"] == pytest.approx(r["ap_cross_speaker"], nan_ok=True)
    # Distinct distances: the samediff recipe, and no speakers -> no speaker keys.
    r = same_different_ap(-sim.double(), labels, higher_is_similar=False)
    assert r["ap"] == pytest.approx(_kamper_ap(-sim, labels)) and set(r) == {"ap", "pairs", "positive_pairs"}


def test_same_different_ap_without_positive_pairs_is_nan_and_bad_input_is_rejected():
    r = same_different_ap(torch.rand(3, 3), ["a", "b", "c"], ["x", "x", "x"], higher_is_similar=True)
    assert math.isnan(r["ap"]) and r["positive_pairs"] == 0
    assert math.isnan(r["ap_cross_speaker"]) and r["cross_speaker_pairs"] == 0
    all_tied = same_different_ap(torch.zeros(3, 3), ["a", "a", "b"], higher_is_similar=False)
    assert all_tied["ap"] == pytest.approx(1 / 3)  # one positive among three equally close pairs
    with pytest.raises(ValueError, match="at least 2"):
        same_different_ap(torch.zeros(1, 1), ["a"], higher_is_similar=True)
    with pytest.raises(ValueError, match="must be"):
        same_different_ap(torch.zeros(3, 2), ["a", "a", "b"], higher_is_similar=True)
    with pytest.raises(ValueError, match="NaN"):
        same_different_ap(torch.full((2, 2), float("nan")), ["a", "a"], higher_is_similar=True)
    with pytest.raises(ValueError, match="2 speakers for 3 tokens"):
        same_different_ap(torch.zeros(3, 3), ["a", "a", "b"], ["x", "y"], higher_is_similar=True)


def test_cosine_frame_cost_matches_the_plain_dynamic_programme():
    torch.manual_seed(1)
    seqs = [torch.randn(int(n), 4, dtype=torch.float64) for n in torch.randint(1, 7, (5,))]
    d = dtw_distance_matrix(seqs, normalize=False, metric="cosine", max_cells=40)
    for i in range(5):
        for j in range(i + 1, 5):
            a = seqs[i] / seqs[i].norm(dim=1, keepdim=True)
            b = seqs[j] / seqs[j].norm(dim=1, keepdim=True)
            assert d[i, j].item() == pytest.approx(dtw((1 - a @ b.T).numpy()))
    with pytest.raises(ValueError, match="metric"):
        dtw_distance_matrix(seqs, metric="manhattan")


def test_deltas_cmvn_and_downsampling_shapes():
    seqs = mfcc_sequences([torch.randn(800), torch.randn(1600), torch.randn(1200)], 8000, deltas=True)
    assert [tuple(s.shape) for s in seqs] == [(11, 39), (21, 39), (16, 39)]
    per_utt = cmvn(seqs)
    assert all(torch.allclose(s.mean(0), torch.zeros(39), atol=1e-4) for s in per_utt)
    assert torch.allclose(per_utt[1].std(0, correction=0), torch.ones(39), atol=1e-3)
    per_spk = cmvn(seqs, ["x", "y", "x"])
    frames_x = torch.cat([per_spk[0], per_spk[2]])
    assert torch.allclose(frames_x.mean(0), torch.zeros(39), atol=1e-4)
    assert torch.allclose(per_spk[1], per_utt[1])  # a speaker with one segment: the same as per segment
    v = downsampled(seqs, 10)
    assert v.shape == (3, 390)
    frames = v.view(3, 10, 39)
    assert torch.allclose(frames[1, 0], seqs[1][0]) and torch.allclose(frames[1, -1], seqs[1][-1])
    assert torch.allclose(downsampled([torch.ones(1, 2)], 4), torch.ones(1, 8))  # one frame: repeated


def _glide(f0, f1, seconds, level, rng, rate=8000):
    t = np.arange(int(seconds * rate))
    freq = np.linspace(f0, f1, t.size)
    wav = level * np.sin(2 * np.pi * np.cumsum(freq) / rate) * np.hanning(t.size)
    return torch.from_numpy((wav + 0.003 * rng.standard_normal(t.size)).astype(np.float32))


def test_same_different_baselines_separate_a_toy_set_perfectly():
    rng = np.random.default_rng(0)
    glides = {"up": (300, 1500), "down": (1500, 300), "flat": (800, 900)}
    wavs, labels, speakers = [], [], []
    for speaker, level in (("x", 0.2), ("y", 0.6)):
        for word, (f0, f1) in glides.items():
            for _ in range(2):
                wavs.append(_glide(f0, f1, rng.uniform(0.25, 0.4), level, rng))
                labels.append(word)
                speakers.append(speaker)
    feats = mfcc_sequences(wavs, 8000, deltas=True)
    for groups in (speakers, None):
        normed = cmvn(feats, groups)
        dist = dtw_distance_matrix([f.double() for f in normed], metric="cosine")
        r = same_different_ap(dist, labels, speakers, higher_is_similar=False)
        assert r["ap"] == 1.0 and r["ap_cross_speaker"] == 1.0 and r["positive_pairs"] == 6 * 3
        sim = cosine_similarity_matrix(downsampled(normed, 10))
        assert same_different_ap(sim, labels, speakers, higher_is_similar=True)["ap"] == 1.0
