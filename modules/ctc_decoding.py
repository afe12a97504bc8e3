"""CTC decoding: greedy, prefix beam search with an optional word n-gram LM, and ARPA n-gram models."""

from __future__ import annotations

import gzip
import heapq
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "CTCBeamDecoder",
    "NGramLM",
    "greedy_decode",
    "prefix_beam_search",
    "tokens_to_text",
    "train_ngram",
]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
SP_SPACE = "\u2581"  # SentencePiece word-start marker "▁"

_LN10 = math.log(10.0)
_NEG_INF = float("-inf")
_DEFAULT_UNK_FLOOR = math.log(1e-10)
_ARPA_BOS_LOG10 = -99.0  # conventional log10 prob for <s>, which is never predicted


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
# Word n-gram language model
# --------------------------------------------------------------------------------------------------


def _open_text(path: str | os.PathLike, mode: str) -> io.TextIOBase:
    """Opens a text file for reading/writing, transparently (de)compressing gzip."""
    path = os.fspath(path)
    if "r" in mode:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


class NGramLM:
    """Word-level back-off n-gram language model (ARPA semantics), scored in natural log.

    ``score(w, h)`` returns ``log P(w | h)`` using standard ARPA back-off: the longest stored
    n-gram ``h' + (w,)`` (``h'`` a suffix of ``h``) is used, and the back-off weights of every
    longer context that was skipped are added.

    Unknown words: a word that is not in the unigram vocabulary is scored as ``<unk>`` if the
    model has a ``<unk>`` unigram; otherwise ``score`` returns ``unk_floor`` (default
    ``log(1e-10)``) without back-off. Unknown words inside the context are mapped to ``<unk>``
    (if present), which normally makes the lookup back off to shorter contexts.

    Sentence boundaries: callers put ``"<s>"`` at the start of the context for the first word
    of a sentence and score ``"</s>"`` to close it (see :meth:`score_sentence`).

    Args:
        probs: Natural-log probabilities keyed by n-gram tuples (lengths 1..order).
        backoffs: Natural-log back-off weights keyed by context tuples (missing means 0).
        unk_floor: Log-probability returned for unknown words when there is no ``<unk>``.
    """

    def __init__(
        self,
        probs: Mapping[tuple[str, ...], float],
        backoffs: Mapping[tuple[str, ...], float] | None = None,
        *,
        unk_floor: float = _DEFAULT_UNK_FLOOR,
    ) -> None:
        if not probs:
            raise ValueError("NGramLM needs at least one n-gram")
        self._probs: dict[tuple[str, ...], float] = dict(probs)
        self._backoffs: dict[tuple[str, ...], float] = dict(backoffs or {})
        self.order: int = max(len(k) for k in self._probs)
        self.vocab: frozenset[str] = frozenset(k[0] for k in self._probs if len(k) == 1)
        self.has_unk: bool = UNK in self.vocab
        self.unk_floor = float(unk_floor)
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}

    def __repr__(self) -> str:
        counts = Counter(len(k) for k in self._probs)
        sizes = ", ".join(f"{n}-grams={counts[n]}" for n in sorted(counts))
        return f"NGramLM(order={self.order}, {sizes})"

    @property
    def ngram_probs(self) -> dict[tuple[str, ...], float]:
        """Stored natural-log n-gram probabilities (read-only view by convention)."""
        return self._probs

    @property
    def ngram_backoffs(self) -> dict[tuple[str, ...], float]:
        """Stored natural-log back-off weights (read-only view by convention)."""
        return self._backoffs

    def score(self, word: str, context: tuple[str, ...] = ()) -> float:
        """Natural-log probability of ``word`` following ``context``.

        Args:
            word: The predicted word (``"</s>"`` for end of sentence).
            context: Preceding words, oldest first; only the last ``order - 1`` are used.

        Returns:
            ``log P(word | context)``.
        """
        n_ctx = self.order - 1
        context = tuple(context[max(len(context) - n_ctx, 0) :]) if n_ctx > 0 else ()
        key = (word, context)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = self._score_uncached(word, context)
        if len(self._cache) > 1_000_000:
            self._cache.clear()
        self._cache[key] = value
        return value

    def _score_uncached(self, word: str, context: tuple[str, ...]) -> float:
        vocab = self.vocab
        if word not in vocab:
            if not self.has_unk:
                return self.unk_floor
            word = UNK
        if self.has_unk:
            context = tuple(w if w in vocab else UNK for w in context)
        probs, backoffs = self._probs, self._backoffs
        acc = 0.0
        for i in range(len(context) + 1):
            hist = context[i:]
            p = probs.get(hist + (word,))
            if p is not None:
                return acc + p
            acc += backoffs.get(hist, 0.0)
        return self.unk_floor  # unreachable: the unigram always exists at this point

    def score_sentence(self, sentence: str | Sequence[str], *, bos: bool = True, eos: bool = True) -> float:
        """Natural-log probability of a whole sentence.

        Args:
            sentence: Whitespace-separated string or a sequence of words.
            bos: Condition the first word on ``<s>``.
            eos: Add the probability of ``</s>`` after the last word.

        Returns:
            Sum of word log-probabilities.
        """
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        context: tuple[str, ...] = (BOS,) if bos else ()
        total = 0.0
        for w in [*words, EOS] if eos else words:
            total += self.score(w, context)
            context = context + (w,)
        return total

    # ---------------------------------------------------------------------------------- ARPA I/O

    @classmethod
    def from_arpa(cls, path: str | os.PathLike, *, unk_floor: float = _DEFAULT_UNK_FLOOR) -> NGramLM:
        """Reads an ARPA file (plain text or gzip, detected from the content).

        Args:
            path: Path to the ARPA file.
            unk_floor: See class docstring.

        Returns:
            The loaded model (log10 values converted to natural log).

        Raises:
            ValueError: ``"<path>:<line>: <problem>"`` for malformed files.
        """
        name = os.fspath(path)
        declared: dict[int, int] = {}
        found: Counter[int] = Counter()
        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        state = "preamble"  # preamble -> data -> ngrams(n) -> end
        n = 0
        lineno = 0

        def fail(msg: str, line: int | None = None) -> ValueError:
            return ValueError(f"{name}:{lineno if line is None else line}: {msg}")

        def check_section_count(line: int) -> None:
            if state == "ngrams" and found[n] != declared[n]:
                raise fail(
                    f"\\data\\ declares ngram {n}={declared[n]} but the section has {found[n]} entries", line
                )

        with _open_text(path, "r") as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                if state == "preamble":
                    if line == "\\data\\":
                        state = "data"
                    continue  # free text before \data\ is allowed
                if state == "end":
                    continue  # anything after \end\ is ignored
                if line == "\\end\\":
                    if state == "data":
                        raise fail("\\end\\ before any n-gram section")
                    check_section_count(lineno)
                    missing = sorted(set(declared) - set(found))
                    if missing:
                        raise fail(f"missing \\{missing[0]}-grams: section")
                    state = "end"
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    try:
                        new_n = int(line[1 : -len("-grams:")])
                    except ValueError:
                        raise fail(f"bad section header {line[:60]!r}") from None
                    if new_n not in declared:
                        raise fail(f"section \\{new_n}-grams: not declared in \\data\\")
                    check_section_count(lineno)
                    state, n = "ngrams", new_n
                    found[n] += 0
                    continue
                if state == "data":
                    if not line.startswith("ngram "):
                        raise fail(f"expected 'ngram N=count' in \\data\\, got {line[:60]!r}")
                    spec = line[len("ngram ") :].replace(" ", "")
                    try:
                        order_s, count_s = spec.split("=")
                        order, count = int(order_s), int(count_s)
                    except ValueError:
                        raise fail(f"bad count line {line[:60]!r}") from None
                    if order < 1 or count < 0:
                        raise fail(f"bad count line {line[:60]!r}")
                    declared[order] = count
                    continue
                # state == "ngrams": "logprob w1 .. wn [backoff]"
                fields = line.split()
                if len(fields) not in (n + 1, n + 2):
                    raise fail(
                        f"expected {n + 1} or {n + 2} fields in a {n}-gram entry, got {len(fields)}: {line[:60]!r}"
                    )
                try:
                    logp = float(fields[0])
                    bo = float(fields[n + 1]) if len(fields) == n + 2 else None
                except ValueError:
                    raise fail(f"non-numeric probability or back-off in {line[:60]!r}") from None
                if logp > 1e-6 or math.isnan(logp):
                    raise fail(f"log10 probability must be <= 0, got {fields[0]}")
                gram = tuple(fields[1 : n + 1])
                probs[gram] = logp * _LN10
                if bo is not None:
                    backoffs[gram] = bo * _LN10
                found[n] += 1
        if state == "preamble":
            raise fail("no \\data\\ header found")
        if state != "end":
            raise fail("missing \\end\\ marker (truncated file?)")
        if not probs:
            raise fail("no n-grams")
        return cls(probs, backoffs, unk_floor=unk_floor)

    def to_arpa(self, path: str | os.PathLike) -> None:
        """Writes the model as an ARPA file (gzip-compressed when ``path`` ends with ``.gz``).

        Args:
            path: Destination path.
        """
        by_order: dict[int, list[tuple[str, ...]]] = defaultdict(list)
        for gram in self._probs:
            by_order[len(gram)].append(gram)
        with _open_text(path, "w") as fh:
            fh.write("\\data\\\n")
            for n in range(1, self.order + 1):
                fh.write(f"ngram {n}={len(by_order[n])}\n")
            for n in range(1, self.order + 1):
                fh.write(f"\n\\{n}-grams:\n")
                for gram in sorted(by_order[n]):
                    line = f"{self._probs[gram] / _LN10:.12g}\t{' '.join(gram)}"
                    bo = self._backoffs.get(gram)
                    if bo is not None and n < self.order:
                        line += f"\t{bo / _LN10:.12g}"
                    fh.write(line + "\n")
            fh.write("\n\\end\\\n")


def train_ngram(
    sentences: Iterable[str | Sequence[str]],
    order: int = 3,
    *,
    discount: float | None = None,
    unk_floor: float = _DEFAULT_UNK_FLOOR,
) -> NGramLM:
    """Estimates an interpolated Kneser-Ney word n-gram model from transcripts.

    Each sentence is split on whitespace and padded as ``<s> w1 .. wn </s>``. Every order uses
    absolute discounting with a single discount ``D`` (estimated as ``n1 / (n1 + 2 n2)`` from
    the count-of-counts, clipped to ``[0.1, 0.9]``, unless ``discount`` is given); lower orders
    use continuation counts (raw counts for n-grams starting with ``<s>``), and the unigram
    level is interpolated with a uniform distribution, so ``<unk>`` gets a small non-zero
    probability. The interpolated model is stored in ARPA back-off form (probability of every
    seen n-gram already interpolated, back-off = interpolation weight), so for every context
    the probabilities over the vocabulary (all words, ``</s>`` and ``<unk>``; not ``<s>``)
    sum to one.

    Args:
        sentences: Training transcripts (strings or word lists). Normalise case beforehand.
        order: N-gram order (>= 1; 2 or 3 are typical).
        discount: Fixed discount in ``(0, 1)`` for all orders instead of the estimate.
        unk_floor: Passed to :class:`NGramLM`.

    Returns:
        The trained model.

    Raises:
        ValueError: For an empty corpus or invalid ``order``/``discount``.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if discount is not None and not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    n_sent = 0
    for sent in sentences:
        words = sent.split() if isinstance(sent, str) else list(sent)
        padded = [BOS, *words, EOS]
        n_sent += 1
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                gram = tuple(padded[i : i + n])
                if gram == (BOS,):
                    continue
                counts[n][gram] += 1
    if n_sent == 0:
        raise ValueError("train_ngram needs at least one sentence")

    # Adjusted counts: raw for the highest order and for n-grams starting with <s>,
    # continuation counts N1+(. g) otherwise.
    adjusted: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
    adjusted[order] = dict(counts[order])
    for n in range(order - 1, 0, -1):
        cont: Counter[tuple[str, ...]] = Counter(g[1:] for g in counts[n + 1])
        adjusted[n] = {g: (c if g[0] == BOS else cont[g]) for g, c in counts[n].items()}

    def estimate_discount(adj: dict[tuple[str, ...], int]) -> float:
        if discount is not None:
            return discount
        n1 = sum(1 for c in adj.values() if c == 1)
        n2 = sum(1 for c in adj.values() if c == 2)
        d = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5
        return min(max(d, 0.1), 0.9)

    probs: dict[tuple[str, ...], float] = {}
    backoffs: dict[tuple[str, ...], float] = {}

    # Unigrams, interpolated with uniform over the predictable vocabulary.
    vocab = {g[0] for g in adjusted[1]} | {EOS, UNK}
    vocab.discard(BOS)
    d1 = estimate_discount(adjusted[1])
    total = sum(adjusted[1].values())
    uniform_mass = d1 * len(adjusted[1]) / total / len(vocab)
    for w in vocab:
        c = adjusted[1].get((w,), 0)
        probs[(w,)] = math.log(max(c - d1, 0.0) / total + uniform_mass)
    probs[(BOS,)] = _ARPA_BOS_LOG10 * _LN10

    for n in range(2, order + 1):
        adj = adjusted[n]
        d = estimate_discount(adj)
        ctx_total: Counter[tuple[str, ...]] = Counter()
        ctx_types: Counter[tuple[str, ...]] = Counter()
        for g, c in adj.items():
            ctx_total[g[:-1]] += c
            ctx_types[g[:-1]] += 1
        gamma = {h: d * ctx_types[h] / ctx_total[h] for h in ctx_total}
        for h, g_h in gamma.items():
            backoffs[h] = math.log(g_h)
        for g, c in adj.items():
            h = g[:-1]
            lower = math.exp(probs[g[1:]])  # suffix n-gram is always seen at order n-1
            probs[g] = math.log((c - d) / ctx_total[h] + gamma[h] * lower)
    return NGramLM(probs, backoffs, unk_floor=unk_floor)


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


class _WordScorer:
    """Tracks word-level LM state along a token prefix: (lm score, context, partial word)."""

    __slots__ = ("lm", "lm_weight", "word_bonus", "n_ctx", "boundary", "text")

    def __init__(self, tokens: Sequence[str], lm: NGramLM | None, lm_weight: float, word_bonus: float):
        self.lm = lm
        self.lm_weight = lm_weight
        self.word_bonus = word_bonus
        self.n_ctx = max(int(getattr(lm, "order", 1)) - 1, 0) if lm is not None else 0
        self.boundary = [t == " " or t.startswith(SP_SPACE) for t in tokens]
        self.text = [t[1:] if b else t for t, b in zip(tokens, self.boundary, strict=True)]

    def _complete(self, score: float, ctx: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        if not word:
            return score, ctx
        if self.lm is not None:
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
            return score, ctx, self.text[token]
        return score, ctx, partial + self.text[token]

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
    scorer = _WordScorer(tokens, lm, lm_weight, word_bonus) if use_words else None
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
