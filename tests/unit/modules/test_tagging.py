"""Sequence-tagging blocks: the CRF against brute-force enumeration, BIO constraints, windows, char CNN."""

import itertools

import pytest
import torch

from modules import tagging
from modules.tagging import LinearChainCRF


def _path_score(crf: LinearChainCRF, emissions: torch.Tensor, path: list[int]) -> torch.Tensor:
    trans, start = crf._scores()
    s = start[path[0]] + emissions[0, path[0]]
    for a, b in itertools.pairwise(path):
        s = s + trans[a, b]
    for t, y in enumerate(path[1:], 1):
        s = s + emissions[t, y]
    return s + crf.end[path[-1]]


def _random_crf(k: int, seed: int, allowed=None, start=None) -> LinearChainCRF:
    torch.manual_seed(seed)
    crf = LinearChainCRF(k, allowed, start)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def test_crf_nll_equals_brute_force_over_every_path():
    k, lengths = 3, torch.tensor([4, 2, 1])
    crf = _random_crf(k, 0)
    emissions = torch.randn(3, 4, k)
    tags = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 0], [1, 0, 0, 0]])
    nll = crf.nll(emissions, tags, lengths)
    for b in range(3):
        n = int(lengths[b])
        scores = torch.stack([_path_score(crf, emissions[b], list(p)) for p in itertools.product(range(k), repeat=n)])
        expected = torch.logsumexp(scores, 0) - _path_score(crf, emissions[b], tags[b, :n].tolist())
        assert nll[b].item() == pytest.approx(expected.item(), abs=1e-4)


def test_viterbi_finds_the_best_path_by_enumeration():
    k, lengths = 4, torch.tensor([5, 3])
    crf = _random_crf(k, 1)
    emissions = torch.randn(2, 5, k)
    paths = crf.decode(emissions, lengths)
    for b, path in enumerate(paths):
        n = int(lengths[b])
        assert len(path) == n
        best = max(itertools.product(range(k), repeat=n), key=lambda p: _path_score(crf, emissions[b], list(p)).item())
        assert path == list(best)


def test_bio_mask_forbids_i_after_o_and_at_the_start():
    tags = ["O", "B-city", "I-city", "B-day", "I-day"]
    allowed, start = tagging.bio_transition_mask(tags)
    assert start.tolist() == [True, True, False, True, False]
    assert allowed[tags.index("B-city"), tags.index("I-city")] and allowed[tags.index("I-city"), tags.index("I-city")]
    assert not allowed[tags.index("O"), tags.index("I-city")]
    assert not allowed[tags.index("B-day"), tags.index("I-city")]
    assert allowed[tags.index("I-day"), tags.index("O")] and allowed[tags.index("O"), tags.index("B-day")]


def test_constrained_viterbi_never_outputs_an_impossible_bio_sequence():
    tags = ["O", "B-city", "I-city", "B-day", "I-day"]
    allowed, start = tagging.bio_transition_mask(tags)
    crf = LinearChainCRF(len(tags), allowed, start)
    emissions = torch.zeros(1, 3, len(tags))
    emissions[0, :, tags.index("I-city")] = 5.0  # the softmax argmax would be I-city I-city I-city
    path = [tags[i] for i in crf.decode(emissions, torch.tensor([3]))[0]]
    assert path == ["B-city", "I-city", "I-city"]


def test_crf_learns_a_transition_the_emissions_cannot_tell():
    """Tag 1 always follows tag 0; emissions are uninformative after step 0, so only transitions can learn it."""
    torch.manual_seed(0)
    crf = LinearChainCRF(2)
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    emissions = torch.zeros(8, 4, 2)
    emissions[:, 0, 0] = 3.0
    tags = torch.tensor([[0, 1, 0, 1]] * 8)
    for _ in range(100):
        opt.zero_grad()
        crf.nll(emissions, tags, torch.full((8,), 4)).mean().backward()
        opt.step()
    assert crf.decode(emissions[:1], torch.tensor([4])) == [[0, 1, 0, 1]]


def test_context_window_concatenates_neighbours_and_never_reads_padding():
    x = torch.arange(1, 7, dtype=torch.float).reshape(1, 6, 1).repeat(2, 1, 1)
    out = tagging.context_window(x, torch.tensor([6, 3]), 1)
    assert out.shape == (2, 6, 3)
    assert out[0, 0].tolist() == [0.0, 1.0, 2.0] and out[0, 5].tolist() == [5.0, 6.0, 0.0]
    assert out[1, 2].tolist() == [2.0, 3.0, 0.0]  # step 3 lies past the row's length: zero, not 4
    assert tagging.context_window(x, torch.tensor([6, 3]), 0) is x


def test_char_cnn_ignores_character_padding():
    torch.manual_seed(0)
    cnn = tagging.CharCNN(10, char_dim=4, channels=6)
    short = torch.tensor([[[3, 4, 5]]])
    padded = torch.tensor([[[3, 4, 5, 0, 0, 0]]])
    assert torch.allclose(cnn(short), cnn(padded))
    assert cnn(padded).shape == (1, 1, 6)


def test_attention_blocks_ignore_padded_steps():
    torch.manual_seed(0)
    d = 6
    h = torch.randn(1, 5, d)
    h_other = h.clone()
    h_other[:, 3:] = 100.0  # padding content must not change anything
    lengths = torch.tensor([3])
    slot, intent, gate = tagging.SlotAttention(d), tagging.IntentAttention(d), tagging.SlotGate(d)
    c1, a1 = slot(h, lengths)
    c2, _ = slot(h_other, lengths)
    assert torch.allclose(c1[:, :3], c2[:, :3]) and torch.allclose(a1[0, :, 3:], torch.zeros(5, 2))
    assert torch.allclose(intent(h, lengths), intent(h_other, lengths))
    assert gate(h, c1, intent(h, lengths)).shape == (1, 5, d)
