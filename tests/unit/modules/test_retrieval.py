"""Retrieval metrics on cases worked by hand, DTW against a hand-worked example and the plain DP, MFCC shapes."""

import numpy as np
import pytest
import torch

from modules.retrieval import (
    cosine_similarity_matrix,
    dtw,
    dtw_distance_matrix,
    mean_pooled,
    mfcc_sequences,
    retrieval_scores,
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
