"""Attention, the speller's loss, greedy/beam decoding and the CTC prefix scorer."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from modules.attention import ATTENTION_KINDS, build_attention
from modules.seq2seq import (
    CTCPrefixScorer,
    Speller,
    SpellerState,
    attention_loss,
    beam_search,
    beam_search_batch,
    decoder_targets,
    greedy_decode,
)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_attention_weights_sum_to_one_on_valid_frames_and_zero_on_padding(kind):
    torch.manual_seed(0)
    att = build_attention(kind, query_size=8, memory_size=8, attention_size=6)
    memory = torch.randn(3, 7, 8)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    keys = att.prepare(memory).detach()
    prev = None
    for _ in range(3):  # several steps: the location-aware kind feeds back its previous weights
        with torch.no_grad():
            context, weights = att(torch.randn(3, 8), memory, keys, mask, prev)
        assert weights.shape == (3, 7) and context.shape == (3, 8)
        assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-6)
        assert (weights[~mask] == 0).all()
        assert float(weights[2, 0]) == pytest.approx(1.0)
        # The context is the weighted sum of valid memory frames only.
        assert torch.allclose(context[1], (weights[1, :4, None] * memory[1, :4]).sum(0), atol=1e-6)
        prev = weights


def test_bad_attention_settings():
    with pytest.raises(ValueError, match="attention must be one of"):
        build_attention("cosine", query_size=4, memory_size=4)
    with pytest.raises(ValueError, match="dot attention needs"):
        build_attention("dot", query_size=4, memory_size=6)


def test_decoder_targets_append_eos_and_ignore_padding():
    out = decoder_targets(torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1]), eos=9)
    assert out.tolist() == [[1, 2, 3, 9], [4, 9, -100, -100]]


def test_teacher_forced_loss_matches_a_hand_computed_case():
    # One target token (1) then <eos> (2). Step 0 logits uniform over 3 classes: -log(1/3).
    # Step 1 logits (0, 0, ln 2): p(eos) = 2/4: -log(1/2).
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]]])
    targets, lengths = torch.tensor([[1]]), torch.tensor([1])
    loss = attention_loss(logits, targets, lengths, eos=2)
    assert float(loss) == pytest.approx((math.log(3) + math.log(2)) / 2, rel=1e-6)
    # Label smoothing 0.1: 0.9 * nll + 0.1 * mean over classes of -log p.
    smooth0 = math.log(3)
    smooth1 = -(math.log(0.25) * 2 + math.log(0.5)) / 3
    expected = (0.9 * math.log(3) + 0.1 * smooth0 + 0.9 * math.log(2) + 0.1 * smooth1) / 2
    assert float(attention_loss(logits, targets, lengths, eos=2, label_smoothing=0.1)) == pytest.approx(expected)
    # A suppressed class (logit -inf) gets no smoothing mass and the loss stays finite, also when padding's
    # placeholder target is that class (a batch with a shorter second row).
    logits[..., 0] = float("-inf")
    assert math.isfinite(float(attention_loss(logits, targets, lengths, eos=2, label_smoothing=0.1)))
    batch_logits = torch.cat([logits, torch.zeros(1, 2, 3)]).clone()
    batch_logits[..., 0] = float("-inf")
    loss = attention_loss(batch_logits, torch.tensor([[1], [1]]), torch.tensor([1, 0]), eos=2)
    assert math.isfinite(float(loss))


def _speller(seed=0, **kw):
    torch.manual_seed(seed)
    return Speller(vocab_size=6, memory_size=10, embed_size=8, hidden_size=12, attention_size=8, dropout=0.0,
                   **kw).eval()


def test_teacher_forcing_shapes_and_scheduled_sampling():
    sp = _speller(attention="location")
    memory, lengths = torch.randn(2, 9, 10), torch.tensor([9, 5])
    targets, tl = torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1])
    logits, weights = sp(memory, lengths, targets, tl)
    assert logits.shape == (2, 4, 7) and weights.shape == (2, 4, 9)
    assert (weights[1, :, 5:] == 0).all()
    # With sampling probability 1 every fed token after the first is the model's own argmax: the same as
    # greedy decoding's first steps.
    own, _ = sp(memory, lengths, targets, tl, sampling_prob=1.0)
    ids, _ = greedy_decode(sp, memory, lengths, max_ratio=1.0, max_extra=0)
    first = own.argmax(-1)[0].tolist()
    assert ids[0][:2] == first[:2] or first[0] == sp.eos


def test_suppressed_ids_are_never_predicted():
    sp = _speller(suppress=(0,))
    ids, _ = greedy_decode(sp, torch.randn(4, 6, 10), torch.tensor([6, 6, 3, 2]))
    assert all(0 not in x for x in ids)


@pytest.mark.parametrize("kind", ["additive", "location", "general"])
def test_beam_one_equals_greedy(kind):
    sp = _speller(seed=3, attention=kind)
    memory, lengths = torch.randn(3, 8, 10), torch.tensor([8, 5, 2])
    greedy, weights = greedy_decode(sp, memory, lengths)
    beam = beam_search_batch(sp, memory, lengths, beam_size=1)
    assert beam == greedy
    assert [w.shape[1] for w in weights] == [8, 5, 2]
    assert all(w.shape[0] in (len(g), len(g) + 1) for w, g in zip(weights, greedy, strict=True))


def test_batch_beam_search_keeps_input_order_for_very_different_lengths():
    sp = _speller(seed=4)
    memory, lengths = torch.randn(3, 12, 10), torch.tensor([2, 12, 5])
    batch = beam_search_batch(sp, memory, lengths, beam_size=4)
    single = [beam_search(sp, memory[i], int(lengths[i]), beam_size=4) for i in range(3)]
    assert batch == single and len(batch) == 3


class _NeverEnds(Speller):
    """A speller whose <eos> probability is ~0: decoding must stop at the length limit."""

    def step(self, prev, state, memory, keys, mask):
        logits, state = super().step(prev, state, memory, keys, mask)
        return logits.index_fill(1, torch.tensor([self.eos]), -1e4), state


def test_decoders_stop_at_the_input_derived_length_limit():
    torch.manual_seed(0)
    sp = _NeverEnds(vocab_size=4, memory_size=6, embed_size=4, hidden_size=6, dropout=0.0).eval()
    memory, lengths = torch.randn(2, 10, 6), torch.tensor([10, 3])
    ids, _ = greedy_decode(sp, memory, lengths, max_ratio=1.5, max_extra=2)
    assert [len(x) for x in ids] == [17, 7]
    beam = beam_search_batch(sp, memory, lengths, beam_size=3, max_ratio=1.5, max_extra=2)
    assert [len(x) for x in beam] == [17, 7]


class _TableSpeller:
    """Fixed next-token distributions by previous token: lets a test construct a ranking by hand."""

    def __init__(self, table: dict[int, list[float]], eos: int) -> None:
        self.table, self.eos = table, eos
        self.attention = type("A", (), {"prepare": staticmethod(lambda m: m)})()

    def initial_state(self, memory):
        return SpellerState([], memory.new_zeros(memory.size(0), 1), None)

    def step(self, prev, state, memory, keys, mask):
        logits = torch.tensor([self.table[int(p)] for p in prev]).log()
        return logits, SpellerState([], memory.new_zeros(len(prev), 1), None)


def test_joint_ctc_scoring_changes_the_ranking():
    # ids: 0 blank, 1 "a", 2 "b"; <eos> = 3. Attention prefers "a" (0.6 vs 0.4), then ends.
    eos = 3
    table = {eos: [1e-9, 0.6, 0.4, 1e-9], 1: [1e-9, 1e-9, 1e-9, 1.0], 2: [1e-9, 1e-9, 1e-9, 1.0]}
    sp = _TableSpeller(table, eos)
    # CTC is sure the utterance is "b".
    ctc = torch.tensor([[0.05, 0.05, 0.9], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]).log()
    memory = torch.zeros(3, 1)
    assert beam_search(sp, memory, 3, beam_size=2, max_ratio=1, max_extra=0) == [1]
    assert beam_search(sp, memory, 3, beam_size=2, ctc_log_probs=ctc, ctc_weight=0.5, max_ratio=1,
                       max_extra=0) == [2]


def _brute_force_prefix_prob(log_probs, prefix, blank=0):
    t, v = log_probs.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        collapsed = [k for k, _ in itertools.groupby(path) if k != blank]
        if collapsed[: len(prefix)] == list(prefix):
            total += math.exp(sum(float(log_probs[i, k]) for i, k in enumerate(path)))
    return total


def test_ctc_prefix_scores_match_brute_force_and_ctc_loss():
    torch.manual_seed(0)
    lp = torch.randn(5, 3).log_softmax(-1)
    scorer = CTCPrefixScorer(lp, blank=0, eos=3)
    state = scorer.initial()
    prefix: list[int] = []
    for c in [1, 1, 2]:
        psi, r_n, r_b = scorer.extend(state, prefix[-1] if prefix else None, [1, 2, 3])
        for j, cand in enumerate([1, 2]):
            expected = _brute_force_prefix_prob(lp, prefix + [cand])
            assert math.exp(float(psi[j])) == pytest.approx(expected, rel=1e-5)
        # The <eos> score of the current prefix is the probability of exactly that sequence.
        if prefix:
            full = -F.ctc_loss(lp[:, None], torch.tensor([prefix]), torch.tensor([5]), torch.tensor([len(prefix)]),
                               reduction="sum")
            assert float(psi[2]) == pytest.approx(float(full), abs=1e-5)
        j = [1, 2, 3].index(c)
        state = (r_n[:, j], r_b[:, j], float(psi[j]))
        prefix.append(c)


@pytest.mark.parametrize("stack,pyramid", [(1, 3), (2, 1), (3, 2)])
def test_listener_time_reduction_lengths(stack, pyramid):
    from data.text import CharTokenizer
    from pipelines.seq2seq import LASRecognizer

    model = LASRecognizer(vocab=CharTokenizer().to_dict(), frontend={"n_mels": 16, "stack_frames": stack},
                          encoder={"hidden_size": 8, "num_layers": pyramid + 1, "pyramid_layers": pyramid},
                          speller_hidden=8, attention_size=4, embed_size=4, ctc_weight=0.3).eval()
    lengths = torch.tensor([16000, 7777, 1600])
    memory, out_len = model.encode({"waveforms": torch.randn(3, 16000), "lengths": lengths})
    frames = lengths // 160 + 1
    expected = -(-frames // stack)  # ceil after frame stacking
    for _ in range(pyramid):
        expected = -(-expected // 2)  # each pyramid layer halves time, rounding up
    assert out_len.tolist() == expected.tolist()
    assert memory.shape[1] == int(expected.max()) and model.time_reduction == stack * 2 ** pyramid
    assert (memory[2, int(expected[2]):] == 0).all()


def test_beam_search_does_not_stop_at_early_low_scoring_endings():
    # ids 1 "a", 2 "b", 3 "c"; <eos> = 4. After one step two hypotheses have ended ("b" and "a"), but the
    # live "a c" ends next step with a better length-normalised score: the search must not stop at "b".
    eos = 4
    table = {eos: [1e-9, 0.5, 0.45, 1e-9, 0.05], 1: [1e-9, 1e-9, 1e-9, 0.6, 0.4],
             2: [1e-9, 1e-9, 1e-9, 0.1, 0.9], 3: [1e-9, 1e-9, 1e-9, 0.05, 0.95]}
    sp = _TableSpeller(table, eos)
    memory = torch.zeros(4, 1)
    norm = {seq: _table_score(table, eos, seq) / (len(seq) + 1) for seq in [(2,), (1, 3)]}
    assert norm[(1, 3)] > norm[(2,)]
    assert beam_search(sp, memory, 4, beam_size=2, length_penalty=1.0, max_ratio=1, max_extra=0) == [1, 3]


def _table_score(table, eos, seq):
    prev, total = eos, 0.0
    for tok in (*seq, eos):
        total += math.log(table[prev][tok])
        prev = tok
    return total


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_finds_the_best_sequence_by_brute_force(seed):
    # Without length normalisation a wide beam is exact: compare with every sequence up to the length limit.
    g = torch.Generator().manual_seed(seed)
    eos, limit = 3, 4
    table = {p: torch.softmax(2 * torch.randn(4, generator=g), 0).tolist() for p in range(4)}
    for p, row in table.items():
        row[0] = 1e-12  # id 0 (blank) never chosen
        table[p] = [x / sum(row) for x in row]
    sp = _TableSpeller(table, eos)
    seqs = [s for n in range(limit + 1) for s in itertools.product([1, 2], repeat=n)]
    best = max(seqs, key=lambda s: _table_score(table, eos, s))
    got = beam_search(sp, torch.zeros(limit, 1), limit, beam_size=32, length_penalty=0.0, max_ratio=1, max_extra=0)
    assert tuple(got) == best
