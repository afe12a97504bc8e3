"""CTC decoding: greedy and prefix beam search, with optional word n-gram shallow fusion (:mod:`modules.ngram_lm`)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from modules.ngram_lm import BOS, EOS, NGramLM

__all__ = [
    "CTCBeamDecoder",
    "WordScorer",
    "greedy_decode",
    "prefix_beam_search",
    "tokens_to_text",
]

SP_SPACE = "\u2581"  # SentencePiece word-start marker "▁"

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _logaddexp(a: float, b: float) -> float:
    """Numerically stable ``log(exp(a) + exp(b))`` for python floats (handles ``-inf``)."""
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def tokens_to_text(ids: Iterable[int] | Tensor, tokens: Sequence[str]) -> str:
    """Turns token ids into text.

    Tokens are concatenated, the SentencePiece marker ``"▁"`` becomes a space, runs of
    whitespace collapse to a single space and the result is stripped.

    Args:
        ids: Token ids (list or 1-D tensor); blanks are expected to be removed already.
        tokens: Mapping from id to token string.

    Returns:
        The decoded text, e.g. ``"the cat"``.
    """
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    text = "".join(tokens[int(i)] for i in ids).replace(SP_SPACE, " ")
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Greedy decoding
# --------------------------------------------------------------------------------------------------


def greedy_decode(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding for a batch.

    Takes the per-frame argmax, merges repeated tokens and drops blanks; frames at or beyond
    ``lengths[b]`` are ignored. Vectorised over batch and time.

    Args:
        log_probs: ``(B, T, V)`` per-frame (log-)probabilities; only the argmax matters.
        lengths: ``(B,)`` number of valid frames per utterance; ``None`` means all ``T``.
        blank: Id of the CTC blank token.

    Returns:
        One list of token ids per utterance.

    Raises:
        ValueError: If ``log_probs`` is not 3-D or ``lengths`` has the wrong shape.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"greedy_decode expects log_probs of shape (B, T, V), got {tuple(log_probs.shape)}")
    batch, time, _ = log_probs.shape
    pred = log_probs.argmax(dim=-1)  # (B, T)
    frames = torch.arange(time, device=pred.device)
    if lengths is None:
        valid = torch.ones_like(pred, dtype=torch.bool)
    else:
        lengths = torch.as_tensor(lengths, device=pred.device)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        valid = frames.unsqueeze(0) < lengths.unsqueeze(1)
    changed = torch.ones_like(valid)
    changed[:, 1:] = pred[:, 1:] != pred[:, :-1]
    keep = valid & changed & (pred != blank)
    counts = keep.sum(dim=1).tolist()
    values = pred[keep].tolist()  # row-major, so utterances are contiguous
    out: list[list[int]] = []
    start = 0
    for n in counts:
        out.append(values[start : start + n])
        start += n
    return out


# --------------------------------------------------------------------------------------------------
# Prefix beam search
# --------------------------------------------------------------------------------------------------


def _frame_candidates(
    lp: Tensor, threshold: float | None, keep_top_k: int
) -> tuple[list[list[float]], list[list[int]], list[list[bool]]]:
    """Per-frame log-probs, kept token ids (most probable first) and kept flags, as python lists."""
    time, vocab = lp.shape
    if threshold is None:
        keep = torch.ones(time, vocab, dtype=torch.bool)
    else:
        keep = lp >= threshold
        if time > 0:
            k = max(1, min(keep_top_k, vocab))
            keep.scatter_(1, lp.topk(k, dim=-1).indices, True)
    order = lp.argsort(dim=-1, descending=True, stable=True)
    kept_sorted = keep.gather(1, order)
    counts = kept_sorted.sum(dim=1).tolist()
    flat = order[kept_sorted].tolist()  # row-major: each frame's kept ids, best first
    cands: list[list[int]] = []
    start = 0
    for c in counts:
        cands.append(flat[start : start + c])
        start += c
    return lp.tolist(), cands, keep.tolist()


def _word_prefixes(lm) -> frozenset[str] | None:
    """Every prefix of every word the LM knows (cached on the LM), or None when it has no vocabulary."""
    cached = getattr(lm, "_rnnlab_prefixes", None)
    if cached is None:
        vocab = getattr(lm, "vocab", None)
        if not vocab:
            return None
        cached = frozenset(w[:i] for w in vocab for i in range(1, len(w) + 1))
        try:
            lm._rnnlab_prefixes = cached
        except AttributeError:  # an LM object that takes no attributes: build the set per decoder
            pass
    return cached


class WordScorer:
    """Tracks word-level LM state along a token prefix: (lm score, context, partial word); shared by the CTC
    prefix beam search and the transducer beam search.

    A partial word that stops being the prefix of any word the LM knows is charged its unknown-word score at
    once, not when the word ends: the total of a finished hypothesis is the same, but a prefix that runs words
    together (never emitting a space, so never paying for its words) no longer outranks the spaced ones until
    the beam has lost them.
    """

    __slots__ = ("lm", "lm_weight", "word_bonus", "n_ctx", "boundary", "text", "prefixes")

    def __init__(self, tokens: Sequence[str], lm: NGramLM | None, lm_weight: float, word_bonus: float):
        self.lm = lm
        self.lm_weight = lm_weight
        self.word_bonus = word_bonus
        self.n_ctx = max(int(getattr(lm, "order", 1)) - 1, 0) if lm is not None else 0
        self.boundary = [t == " " or t.startswith(SP_SPACE) for t in tokens]
        self.text = [t[1:] if b else t for t, b in zip(tokens, self.boundary, strict=True)]
        self.prefixes = _word_prefixes(lm) if lm is not None else None

    def _charged(self, word: str) -> bool:
        """Whether ``word``'s unknown-word score was already paid while it was being spelled."""
        return self.prefixes is not None and word not in self.prefixes

    def _complete(self, score: float, ctx: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        if not word:
            return score, ctx
        if self.lm is not None:
            if not self._charged(word):
                score += self.lm_weight * self.lm.score(word, ctx)
            ctx = (ctx + (word,))[max(len(ctx) + 1 - self.n_ctx, 0) :] if self.n_ctx > 0 else ()
        return score + self.word_bonus, ctx

    def initial(self) -> tuple[float, tuple[str, ...], str]:
        return 0.0, ((BOS,) if self.n_ctx > 0 else ()), ""

    def extend(
        self, state: tuple[float, tuple[str, ...], str], token: int
    ) -> tuple[float, tuple[str, ...], str]:
        score, ctx, partial = state
        if self.boundary[token]:
            score, ctx = self._complete(score, ctx, partial)
            partial = ""
            word = self.text[token]
        else:
            word = partial + self.text[token]
        if word and self._charged(word) and not (partial and self._charged(partial)):
            score += self.lm_weight * self.lm.score(word, ctx)  # left the LM's words: the unknown-word score, now
        return score, ctx, word

    def final(self, state: tuple[float, tuple[str, ...], str]) -> float:
        score, ctx, partial = state
        score, ctx = self._complete(score, ctx, partial)
        if self.lm is not None:
            score += self.lm_weight * self.lm.score(EOS, ctx)
        return score


def prefix_beam_search(
    log_probs: Tensor,
    *,
    tokens: Sequence[str],
    blank: int = 0,
    beam_size: int = 8,
    lm: NGramLM | None = None,
    lm_weight: float = 0.5,
    word_bonus: float = 0.0,
    token_prune_threshold: float | None = -10.0,
    keep_top_k: int = 2,
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search in log space with optional word-level n-gram shallow fusion.

    For every prefix the search keeps the log-probability of all alignments ending in blank
    (``p_b``) and in its last token (``p_nb``); a repeated token only extends the prefix after
    a blank, otherwise it merges into the last token. Beams are ranked by
    ``logaddexp(p_b, p_nb) + word score``.

    Word boundaries: a token equal to ``" "`` (character models) or starting with ``"▁"``
    (SentencePiece) starts a new word. When a non-empty word is completed (at the next
    boundary token, or at the end of the utterance for the last word) the score gains
    ``lm_weight * lm.score(word, context) + word_bonus``; at the end ``lm_weight *
    lm.score("</s>", context)`` is added too (no bonus). The context starts with ``<s>``.
    ``word_bonus`` applies even without an LM. Without LM and bonus the returned scores are
    the exact CTC log-probabilities of the labellings (up to beam and token pruning).

    Prefixes are stored in a trie (int node ids), and per frame a new prefix is only created
    if its best possible score can still beat a lower bound on the beam's cut-off, which
    gives the same n-best as the plain algorithm at a fraction of the cost.

    Args:
        log_probs: ``(T, V)`` per-frame log-probabilities (log-softmax output).
        tokens: ``V`` token strings; ``tokens[blank]`` is ignored for text.
        blank: Id of the CTC blank.
        beam_size: Number of prefixes kept after every frame, and size of the n-best list.
        lm: Optional word n-gram model (anything with ``order`` and ``score(word, context)``
            returning log-probabilities <= 0, which the search's exact pruning bound relies on).
        lm_weight: Weight of the LM log-probability.
        word_bonus: Score added per completed word (counters the LM's short-output bias).
        token_prune_threshold: Per frame, skip tokens whose log-prob is below this; ``None``
            disables pruning.
        keep_top_k: Tokens always kept per frame (the most probable), whatever the threshold.

    Returns:
        Up to ``beam_size`` ``(token ids, total score)`` pairs, best first.

    Raises:
        ValueError: On shape mismatches or invalid arguments.
    """
    if log_probs.dim() != 2:
        raise ValueError(
            f"prefix_beam_search expects log_probs of shape (T, V), got {tuple(log_probs.shape)}"
        )
    vocab_size = log_probs.shape[1]
    if len(tokens) != vocab_size:
        raise ValueError(f"len(tokens)={len(tokens)} does not match vocabulary size V={vocab_size}")
    if not 0 <= blank < vocab_size:
        raise ValueError(f"blank={blank} out of range for V={vocab_size}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")

    lp_rows, cand_rows, allowed_rows = _frame_candidates(
        log_probs.detach().to("cpu", torch.float64), token_prune_threshold, keep_top_k
    )
    use_words = lm is not None or word_bonus != 0.0
    scorer = WordScorer(tokens, lm, lm_weight, word_bonus) if use_words else None
    # An extension can raise the word score by at most `max_gain` (LM log-probs are <= 0);
    # with a negative LM weight there is no such bound and the exact-bound pruning is off.
    max_gain = max(word_bonus, 0.0) if lm_weight >= 0.0 or lm is None else math.inf

    # Prefixes live in a trie; node 0 is the empty prefix. Per node: parent, last token,
    # word-level state (score, LM context, partial word) and its score.
    parent: list[int] = [-1]
    last_tok: list[int] = [-1]
    states: list[tuple[float, tuple[str, ...], str]] = [scorer.initial()] if scorer else [(0.0, (), "")]
    wsc: list[float] = [0.0]
    children: dict[int, int] = {}  # node * V + token -> child node

    neg_inf = _NEG_INF
    lse = _logaddexp
    beam: dict[int, list[float]] = {0: [0.0, neg_inf]}  # node -> [p_b, p_nb]
    for lp, cands, allowed in zip(lp_rows, cand_rows, allowed_rows, strict=True):
        nxt: dict[int, list[float]] = {}
        p_blank = lp[blank] if allowed[blank] else None
        totals = {node: lse(pb, pnb) for node, (pb, pnb) in beam.items()}
        # 1) the prefix stays: blank frame, or repeat of its last token
        for node, (_, p_nb) in beam.items():
            stay_b = totals[node] + p_blank if p_blank is not None else neg_inf
            c = last_tok[node]
            stay_nb = p_nb + lp[c] if c >= 0 and allowed[c] else neg_inf
            if stay_b != neg_inf or stay_nb != neg_inf:
                nxt[node] = [stay_b, stay_nb]
        # 2) prefixes in the beam that extend another prefix in the beam
        for node in beam:
            par = parent[node]
            if par in beam:
                c = last_tok[node]
                if allowed[c]:
                    ext = (beam[par][0] if c == last_tok[par] else totals[par]) + lp[c]
                    if ext == neg_inf:
                        continue
                    entry = nxt.get(node)
                    if entry is None:
                        nxt[node] = [neg_inf, ext]
                    else:
                        entry[1] = lse(entry[1], ext)
        # Scores of the entries so far only grow, so the beam_size-th best of them bounds the
        # final cut-off from below: new extensions that cannot beat it are skipped (exact).
        if len(nxt) >= beam_size:
            floor = heapq.nlargest(beam_size, (lse(*v) + wsc[n] for n, v in nxt.items()))[-1] - max_gain
        else:
            floor = neg_inf
        # 3) new prefixes (children not in the beam); cands are sorted best first
        for node, p_tot in totals.items():
            limit = floor - p_tot - wsc[node]
            if lp[cands[0]] < limit:
                continue
            last = last_tok[node]
            base = node * vocab_size
            for c in cands:
                p = lp[c]
                if p < limit:
                    break
                if c == blank:
                    continue
                ext = (beam[node][0] if c == last else p_tot) + p
                if ext == neg_inf:
                    continue
                child = children.get(base + c)
                if child is None:
                    child = len(parent)
                    children[base + c] = child
                    parent.append(node)
                    last_tok.append(c)
                    if scorer is not None:
                        st = scorer.extend(states[node], c)
                        states.append(st)
                        wsc.append(st[0])
                    else:
                        wsc.append(0.0)
                elif child in beam:
                    continue  # handled in step 2
                nxt[child] = [neg_inf, ext]
        if len(nxt) > beam_size:
            keys = heapq.nlargest(beam_size, nxt, key=lambda k: lse(*nxt[k]) + wsc[k])
            beam = {k: nxt[k] for k in keys}
        else:
            beam = nxt

    results: list[tuple[list[int], float]] = []
    for node, (p_b, p_nb) in beam.items():
        score = lse(p_b, p_nb)
        if scorer is not None:
            score += scorer.final(states[node])
        ids: list[int] = []
        n = node
        while n > 0:
            ids.append(last_tok[n])
            n = parent[n]
        ids.reverse()
        results.append((ids, score))
    results.sort(key=lambda r: r[1], reverse=True)
    return results


class CTCBeamDecoder:
    """Batched CTC prefix beam search decoder holding tokens, beam size, LM and weights.

    Args:
        tokens: Token strings, indexed by id.
        blank: Id of the CTC blank.
        beam_size: Beam width (and n-best size).
        lm: Optional word n-gram LM.
        lm_weight: LM weight.
        word_bonus: Per-word score bonus.
        token_prune_threshold: Per-frame token log-prob threshold (``None`` disables).
        keep_top_k: Tokens always kept per frame.
    """

    def __init__(
        self,
        *,
        tokens: Sequence[str],
        blank: int = 0,
        beam_size: int = 8,
        lm: NGramLM | None = None,
        lm_weight: float = 0.5,
        word_bonus: float = 0.0,
        token_prune_threshold: float | None = -10.0,
        keep_top_k: int = 2,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 0 <= blank < len(tokens):
            raise ValueError(f"blank={blank} out of range for {len(tokens)} tokens")
        self.tokens = list(tokens)
        self.blank = blank
        self.beam_size = beam_size
        self.lm = lm
        self.lm_weight = lm_weight
        self.word_bonus = word_bonus
        self.token_prune_threshold = token_prune_threshold
        self.keep_top_k = keep_top_k

    def __repr__(self) -> str:
        return (
            f"CTCBeamDecoder(V={len(self.tokens)}, beam_size={self.beam_size}, lm={self.lm!r}, "
            f"lm_weight={self.lm_weight}, word_bonus={self.word_bonus})"
        )

    def decode_nbest(
        self, log_probs: Tensor, lengths: Tensor | None = None
    ) -> list[list[tuple[list[int], float]]]:
        """N-best lists for a batch.

        Args:
            log_probs: ``(B, T, V)`` log-probabilities.
            lengths: ``(B,)`` valid frames per utterance (``None`` means all).

        Returns:
            Per utterance, the ``(ids, score)`` list from :func:`prefix_beam_search`.
        """
        if log_probs.dim() != 3:
            raise ValueError(f"decode expects log_probs of shape (B, T, V), got {tuple(log_probs.shape)}")
        batch, time, _ = log_probs.shape
        lens = (
            [time] * batch
            if lengths is None
            else [min(int(n), time) for n in torch.as_tensor(lengths).tolist()]
        )
        if len(lens) != batch:
            raise ValueError(f"lengths must have {batch} entries, got {len(lens)}")
        lp = log_probs.detach().to("cpu", torch.float64)
        return [
            prefix_beam_search(
                lp[b, : lens[b]],
                tokens=self.tokens,
                blank=self.blank,
                beam_size=self.beam_size,
                lm=self.lm,
                lm_weight=self.lm_weight,
                word_bonus=self.word_bonus,
                token_prune_threshold=self.token_prune_threshold,
                keep_top_k=self.keep_top_k,
            )
            for b in range(batch)
        ]

    def decode(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[list[int]]:
        """Best token-id sequence per utterance.

        Args:
            log_probs: ``(B, T, V)`` log-probabilities.
            lengths: ``(B,)`` valid frames per utterance (``None`` means all).

        Returns:
            One list of token ids per utterance.
        """
        return [nbest[0][0] if nbest else [] for nbest in self.decode_nbest(log_probs, lengths)]

    def decode_text(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
        """Best transcript per utterance, via :func:`tokens_to_text`."""
        return [tokens_to_text(ids, self.tokens) for ids in self.decode(log_probs, lengths)]
