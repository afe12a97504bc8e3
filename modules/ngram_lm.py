"""Word-level back-off n-gram language model: ARPA read/write and Kneser-Ney estimation from transcripts."""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["BOS", "EOS", "UNK", "NGramLM", "train_ngram"]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"

_LN10 = math.log(10.0)
_DEFAULT_UNK_FLOOR = math.log(1e-10)
_ARPA_BOS_LOG10 = -99.0  # conventional log10 prob for <s>, which is never predicted


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


def _arpa_lines(path: str | os.PathLike):
    """Yields ``(line number, line)`` of an ARPA file; a file that is not (gzipped) UTF-8 text is a ``ValueError``."""
    name, lineno = os.fspath(path), 0
    try:
        with _open_text(path, "r") as fh:
            for lineno, raw in enumerate(fh, start=1):
                yield lineno, raw
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not an ARPA text file (line {lineno + 1} is not UTF-8 text)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{name}: not an ARPA text file (bad gzip data: {e})") from None


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

        for lineno, raw in _arpa_lines(path):
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
            raise fail("no \\data\\ header found (not an ARPA file?)")
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
