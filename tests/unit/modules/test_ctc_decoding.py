"""Tests for modules.ctc_decoding: greedy and prefix beam CTC decoding, with and without a word LM."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from modules.ctc_decoding import CTCBeamDecoder, greedy_decode, prefix_beam_search, tokens_to_text
from modules.ngram_lm import train_ngram

# ---------------------------------------------------------------------------------------- helpers


def frames(spec: list[dict[str, float] | str], tokens: list[str]) -> torch.Tensor:
    """(T, V) log-probs; each frame gives probs for some tokens (a str means prob 0.99), rest spread evenly."""
    rows = []
    for item in spec:
        given = {item: 0.99} if isinstance(item, str) else item
        rest = 1.0 - sum(given.values())
        others = len(tokens) - len(given)
        row = [given.get(t, rest / others if others else 0.0) for t in tokens]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).clamp_min(1e-30).log()


def one_hot_frames(ids: list[int], vocab: int, peak: float = 0.99) -> torch.Tensor:
    lp = torch.full((len(ids), vocab), (1.0 - peak) / (vocab - 1), dtype=torch.float64)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = peak
    return lp.log()


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out = []
    prev = None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Exact labelling probabilities by enumerating all V**T alignments."""
    probs = log_probs.exp().tolist()
    time, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=time):
        p = math.prod(probs[t][c] for t, c in enumerate(path))
        label = collapse(path, blank)
        totals[label] = totals.get(label, 0.0) + p
    return totals


class RecordingLM:
    """Duck-typed LM recording every (word, context) it is asked about."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def score(self, word: str, context: tuple[str, ...]) -> float:
        self.calls.append((word, tuple(context)))
        return -1.0


# ----------------------------------------------------------------------------------------- greedy


def test_greedy_collapses_repeats_and_drops_blanks():
    # blank=0, a=1, b=2: "a a" split by a blank -> "aa"; "bb" -> "b"; "b - - b" -> "bb"
    ids = [1, 1, 0, 1, 2, 2, 0, 0, 2]
    out = greedy_decode(one_hot_frames(ids, 3).unsqueeze(0), torch.tensor([len(ids)]))
    assert out == [[1, 1, 2, 2]]


def test_greedy_honours_lengths_in_batch():
    a = [1, 0, 2, 2, 1]
    b = [2, 2, 0, 0, 1]
    lp = torch.stack([one_hot_frames(a, 3), one_hot_frames(b, 3)])
    assert greedy_decode(lp, torch.tensor([5, 5])) == [[1, 2, 1], [2, 1]]
    assert greedy_decode(lp, torch.tensor([3, 2])) == [[1, 2], [2]]
    assert greedy_decode(lp, torch.tensor([0, 1])) == [[], [2]]
    assert greedy_decode(lp, None) == [[1, 2, 1], [2, 1]]


def test_greedy_other_blank_and_bad_shape():
    ids = [3, 3, 1, 3]
    assert greedy_decode(one_hot_frames(ids, 4).unsqueeze(0), torch.tensor([4]), blank=3) == [[1]]
    with pytest.raises(ValueError):
        greedy_decode(torch.zeros(4, 3))


# ------------------------------------------------------------------------------------ beam search


@pytest.mark.parametrize("seed", range(5))
def test_beam_equals_greedy_on_peaked_distributions(seed):
    gen = torch.Generator().manual_seed(seed)
    vocab, time = 6, 60
    ids = torch.randint(0, vocab, (time,), generator=gen).tolist()
    lp = one_hot_frames(ids, vocab)
    tokens = ["<blank>"] + [chr(ord("a") + i) for i in range(vocab - 1)]
    best_ids, score = prefix_beam_search(lp, tokens=tokens, beam_size=8)[0]
    assert best_ids == greedy_decode(lp.unsqueeze(0), torch.tensor([time]))[0]
    assert score <= 0.0


@pytest.mark.parametrize("time,seed", [(4, 0), (4, 1), (5, 2), (5, 3), (5, 4), (4, 5)])
def test_beam_matches_brute_force(time, seed):
    gen = torch.Generator().manual_seed(seed)
    lp = torch.log_softmax(torch.randn(time, 3, generator=gen, dtype=torch.float64) * 1.5, dim=-1)
    exact = brute_force(lp)
    assert math.isclose(sum(exact.values()), 1.0, rel_tol=1e-9)
    best_label, best_p = max(exact.items(), key=lambda kv: kv[1])
    nbest = prefix_beam_search(lp, tokens=["<b>", "x", "y"], beam_size=100, token_prune_threshold=None)
    assert tuple(nbest[0][0]) == best_label
    assert nbest[0][1] == pytest.approx(math.log(best_p), abs=1e-6)
    # the whole n-best list carries exact labelling probabilities, sorted
    for ids, score in nbest:
        assert score == pytest.approx(math.log(exact[tuple(ids)]), abs=1e-6)
    scores = [s for _, s in nbest]
    assert scores == sorted(scores, reverse=True)
    assert len(nbest) == len(exact)  # beam large enough to hold every labelling


def reference_beam_search(lp, tokens, beam_size, lm=None, lm_weight=0.0, word_bonus=0.0, blank=0):
    """Textbook tuple-keyed prefix beam search (no pruning tricks), word scores recomputed from scratch.

    While ranking, a partial word that is no prefix of any LM word already counts its unknown-word score (the
    final score of a finished labelling is the same either way).
    """
    prefixes = {w[:i] for w in lm.vocab for i in range(1, len(w) + 1)} if lm else set()

    def lse(a, b):
        return max(a, b) + math.log1p(math.exp(-abs(a - b))) if max(a, b) > -math.inf else -math.inf

    def word_score(prefix, final):
        words, partial = [], ""
        for i in prefix:
            t = tokens[i]
            if t == " " or t.startswith("\u2581"):
                if partial:
                    words.append(partial)
                partial = t[1:]
            else:
                partial += t
        if final and partial:
            words.append(partial)
        total = 0.0
        for k, w in enumerate(words):
            total += word_bonus + (lm_weight * lm.score(w, ("<s>", *words[:k])) if lm else 0.0)
        if not final and lm and partial and partial not in prefixes:
            total += lm_weight * lm.score(partial, ("<s>", *words))
        if final and lm:
            total += lm_weight * lm.score("</s>", ("<s>", *words))
        return total

    probs = lp.tolist()
    beam = {(): (0.0, -math.inf)}
    for row in probs:
        nxt = {}
        for prefix, (pb, pnb) in beam.items():
            for c, p in enumerate(row):
                if c == blank:
                    b, n = nxt.get(prefix, (-math.inf, -math.inf))
                    nxt[prefix] = (lse(b, lse(pb, pnb) + p), n)
                    continue
                new = prefix + (c,)
                if prefix and prefix[-1] == c:
                    b, n = nxt.get(prefix, (-math.inf, -math.inf))
                    nxt[prefix] = (b, lse(n, pnb + p))
                    ext = pb + p
                else:
                    ext = lse(pb, pnb) + p
                b, n = nxt.get(new, (-math.inf, -math.inf))
                nxt[new] = (b, lse(n, ext))
        ranked = sorted(nxt.items(), key=lambda kv: lse(*kv[1]) + word_score(kv[0], False), reverse=True)
        beam = dict(ranked[:beam_size])
    out = [(list(k), lse(*v) + word_score(k, True)) for k, v in beam.items()]
    return sorted(out, key=lambda r: r[1], reverse=True)


@pytest.mark.parametrize(
    "beam_size,use_lm,word_bonus", [(1, False, 0.0), (3, False, 0.0), (6, True, 0.0), (4, True, 0.7)]
)
def test_beam_matches_textbook_reference(beam_size, use_lm, word_bonus):
    # the trie + exact-bound pruning must give the same n-best as the plain algorithm
    tokens = ["<blank>", " ", "a", "b", "c", "d"]
    lm = train_ngram(["ab cd", "a b", "cab dab", "bad"], order=2) if use_lm else None
    gen = torch.Generator().manual_seed(beam_size)
    for _ in range(3):
        lp = torch.log_softmax(torch.randn(25, len(tokens), generator=gen, dtype=torch.float64) * 2.0, dim=-1)
        got = prefix_beam_search(
            lp,
            tokens=tokens,
            beam_size=beam_size,
            lm=lm,
            lm_weight=0.8,
            word_bonus=word_bonus,
            token_prune_threshold=None,
        )
        want = reference_beam_search(lp, tokens, beam_size, lm, 0.8, word_bonus)
        assert [ids for ids, _ in got] == [ids for ids, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-9)


def test_words_run_together_pay_for_leaving_the_vocabulary_at_once():
    # "a b a b" spoken; between words a space is a little less likely than a blank. Scoring words only when
    # they end let glued prefixes ("abab": no word finished, nothing paid) push the spaced one out of a 2-wide
    # beam, each space costing it a word's LM score, before the glued words were charged at the very end.
    tokens = ["<blank>", " ", "a", "b"]
    lm = train_ngram(["a b", "b a", "a a b"], order=1)
    letter = {"a": [0.05, 0.05, 0.85, 0.05], "b": [0.05, 0.05, 0.05, 0.85]}
    gap = [0.5, 0.45, 0.03, 0.02]
    frames = [letter["a"], gap, letter["b"], gap, letter["a"], gap, letter["b"]]
    lp = torch.tensor(frames, dtype=torch.float64).log()
    best = prefix_beam_search(lp, tokens=tokens, beam_size=2, lm=lm, lm_weight=1.0, token_prune_threshold=None)
    assert "".join(tokens[i] for i in best[0][0]) == "a b a b"
    # Final scores are unchanged by charging early: equal to the acoustic score plus the LM of the labelling.
    want = reference_beam_search(lp, tokens, 8, lm, 1.0)
    exact = {tuple(ids): sc for ids, sc in want}
    assert best[0][1] == pytest.approx(exact[tuple(best[0][0])], abs=1e-9)


def test_beam_finds_better_labelling_than_best_path():
    # two frames, p(blank)=0.6, p(a)=0.4: best path "--" (0.36) -> "", but "a" has 0.16+0.24+0.24=0.64
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64).log()
    assert greedy_decode(lp.unsqueeze(0), torch.tensor([2])) == [[]]
    nbest = prefix_beam_search(lp, tokens=["<b>", "a"], beam_size=4)
    assert nbest[0][0] == [1]
    assert nbest[0][1] == pytest.approx(math.log(0.64), abs=1e-9)
    assert nbest[1] == ([], pytest.approx(math.log(0.36), abs=1e-9))


def test_beam_repeated_token_needs_blank():
    tokens = ["<b>", "a"]
    lp = frames(["a", "a", "a"], tokens)
    assert prefix_beam_search(lp, tokens=tokens)[0][0] == [1]
    lp = frames(["a", "<b>", "a"], tokens)
    assert prefix_beam_search(lp, tokens=tokens)[0][0] == [1, 1]


def test_beam_validation_and_empty_input():
    tokens = ["<b>", "a"]
    with pytest.raises(ValueError):
        prefix_beam_search(torch.zeros(3, 3), tokens=tokens)
    with pytest.raises(ValueError):
        prefix_beam_search(torch.zeros(1, 3, 2), tokens=tokens)
    with pytest.raises(ValueError):
        prefix_beam_search(torch.zeros(3, 2), tokens=tokens, beam_size=0)
    assert prefix_beam_search(torch.zeros(0, 2), tokens=tokens) == [([], 0.0)]


def test_token_pruning_keeps_top_tokens():
    # every token is below the threshold: the top-k ones must still be explored
    vocab = 40
    lp = torch.log_softmax(torch.randn(20, vocab, generator=torch.Generator().manual_seed(0)), dim=-1)
    tokens = ["<b>"] + [f"t{i}" for i in range(1, vocab)]
    only_argmax = prefix_beam_search(lp, tokens=tokens, token_prune_threshold=0.0, keep_top_k=1)
    assert len(only_argmax) == 1  # a single path survives
    assert only_argmax[0][0] == greedy_decode(lp.unsqueeze(0), None)[0]
    top2 = prefix_beam_search(lp, tokens=tokens, token_prune_threshold=0.0, keep_top_k=2)
    assert len(top2) == 8


def test_realistic_size_runs_and_is_sorted():
    gen = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(300, 30, generator=gen) * 3.0, dim=-1)
    tokens = ["<blank>", " "] + [chr(ord("a") + i) for i in range(28)]
    nbest = prefix_beam_search(lp, tokens=tokens, beam_size=8)
    assert 1 <= len(nbest) <= 8
    scores = [s for _, s in nbest]
    assert scores == sorted(scores, reverse=True)
    assert all(0 not in ids for ids, _ in nbest)


# ------------------------------------------------------------------------------------ word scoring

CHARS = ["<blank>", " ", "a", "c", "e", "h", "k", "t", "s", "b"]


def test_lm_picks_in_vocabulary_spelling():
    # "the cat" vs "the kat": acoustics slightly prefer k
    spec = ["t", "h", "e", " ", {"k": 0.55, "c": 0.44}, "a", "t"]
    lp = frames(spec, CHARS)
    no_lm = prefix_beam_search(lp, tokens=CHARS, beam_size=8)
    assert tokens_to_text(no_lm[0][0], CHARS) == "the kat"
    lm = train_ngram(["the cat sat", "the cat ate", "a cat", "the hat"], order=2)
    with_lm = prefix_beam_search(lp, tokens=CHARS, beam_size=8, lm=lm, lm_weight=1.0)
    assert tokens_to_text(with_lm[0][0], CHARS) == "the cat"
    # total score = acoustic log-prob of the labelling + lm_weight * LM log-prob of the sentence
    acoustic = dict((tokens_to_text(ids, CHARS), s) for ids, s in no_lm)["the cat"]
    assert with_lm[0][1] == pytest.approx(acoustic + lm.score_sentence("the cat"), abs=1e-9)


def test_word_bonus_increases_word_count():
    tokens = ["<blank>", " ", "a", "b"]
    lp = frames(["a", {"<blank>": 0.6, " ": 0.39}, "b"], tokens)
    plain = prefix_beam_search(lp, tokens=tokens)
    assert tokens_to_text(plain[0][0], tokens) == "ab"
    bonus = prefix_beam_search(lp, tokens=tokens, word_bonus=1.0)
    assert tokens_to_text(bonus[0][0], tokens) == "a b"
    # bonus is part of the score: 2 words * 1.0 on top of the acoustic log-prob
    assert bonus[0][1] == pytest.approx(plain[1][1] + 2.0, abs=1e-9)


def test_char_word_boundaries_and_context():
    tokens = ["<blank>", " ", "a", "b", "c"]
    lm = RecordingLM(order=2)
    lp = frames([" ", "a", "b", " ", "<blank>", " ", "c", " "], tokens)
    best = prefix_beam_search(
        lp,
        tokens=tokens,
        beam_size=1,
        lm=lm,
        keep_top_k=1,
        token_prune_threshold=0.0,
        lm_weight=0.5,
        word_bonus=0.25,
    )
    assert lm.calls == [("ab", ("<s>",)), ("c", ("ab",)), ("</s>", ("c",))]
    acoustic = sum(lp[t].max().item() for t in range(lp.shape[0]))
    assert best[0][1] == pytest.approx(acoustic + 3 * 0.5 * -1.0 + 2 * 0.25, abs=1e-9)


def test_sentencepiece_word_boundaries():
    tokens = ["<blank>", "\u2581the", "\u2581c", "at", "\u2581", "s"]
    lm = RecordingLM(order=3)
    lp = frames(["\u2581the", "\u2581c", "at", "s", "\u2581", "at"], tokens)
    best = prefix_beam_search(lp, tokens=tokens, beam_size=1, lm=lm, keep_top_k=1, token_prune_threshold=0.0)
    assert tokens_to_text(best[0][0], tokens) == "the cats at"
    assert lm.calls == [
        ("the", ("<s>",)),
        ("cats", ("<s>", "the")),
        ("at", ("the", "cats")),
        ("</s>", ("cats", "at")),
    ]


def test_decoder_batch_api_honours_lengths():
    tokens = ["<blank>", " ", "a", "b"]
    u1 = frames(["a", "<blank>", "b", " ", "a"], tokens)
    u2 = frames(["b", "b", "a", "<blank>", "<blank>"], tokens)
    batch = torch.stack([u1, u2])
    dec = CTCBeamDecoder(tokens=tokens, beam_size=4)
    assert dec.decode(batch, torch.tensor([5, 3])) == [[2, 3, 1, 2], [3, 2]]
    assert dec.decode(batch, torch.tensor([3, 1])) == [[2, 3], [3]]
    assert dec.decode_text(batch, torch.tensor([5, 5])) == ["ab a", "ba"]
    nbest = dec.decode_nbest(batch, torch.tensor([5, 5]))
    assert len(nbest) == 2 and len(nbest[0]) <= 4
    with pytest.raises(TypeError):
        CTCBeamDecoder(tokens)  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- text


def test_tokens_to_text():
    chars = ["<blank>", " ", "h", "i", "t", "o"]
    assert tokens_to_text([1, 2, 3, 1, 1, 4, 5, 1], chars) == "hi to"
    sp = ["<blank>", "\u2581he", "llo", "\u2581", "wor", "ld", "\u2581!"]
    assert tokens_to_text([1, 2, 3, 4, 5, 6], sp) == "hello world !"
    assert tokens_to_text(torch.tensor([1, 2]), sp) == "hello"
    assert tokens_to_text([], sp) == ""
