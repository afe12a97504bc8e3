"""Evaluation metrics: conlleval chunk F1 for slots, sentence exact match, WER/CER for ASR, PER for G2P."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import torch
from torchaudio.functional import edit_distance
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.text import char_error_rate, word_error_rate
from torchmetrics.text import CharErrorRate, WordErrorRate

from modules.retrieval import cosine_similarity_matrix, retrieval_scores, same_different_ap

__all__ = [
    "ErrorRates",
    "PhonemeErrorRates",
    "SentenceExactMatch",
    "SlotF1",
    "SlotScore",
    "bio_chunks",
    "slot_report",
    "wer_cer",
]

Chunk = tuple[str, int, int]

# ---------------------------------------------------------------------------------------------------------
# conlleval chunking
# ---------------------------------------------------------------------------------------------------------


def _split_tag(label: str) -> tuple[str, str]:
    """Split a tag into ``(prefix, type)`` the way conlleval.pl does.

    conlleval matches ``/^([^-]*)-(.*)$/``: everything before the first hyphen is the prefix and the rest
    (hyphens included) is the type. A tag without a hyphen (``"O"``, or a bare label such as ``"PER"``) is
    its own prefix with the empty type.

    Args:
        label: A tag such as ``"B-fromloc.city_name"``, ``"O"`` or ``"PER"``.

    Returns:
        The prefix and the type (``""`` when the tag has no hyphen).
    """
    prefix, sep, type_ = label.partition("-")
    return (prefix, type_) if sep else (label, "")


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk ends between the previous and the current token (conlleval ``endOfChunk``).

    Args:
        prev_tag: Prefix of the previous tag (``"O"`` before the first token).
        tag: Prefix of the current tag (``"O"`` after the last token).
        prev_type: Type of the previous tag.
        type_: Type of the current tag.

    Returns:
        True when a chunk that was open at the previous token is closed before the current one.
    """
    # conlleval.pl: B/I followed by B or O, E followed by E, I or O, and "[" / "]" (one-token chunks).
    # IOBES extension (as in the Python ports of conlleval): E and S always close their chunk, and
    # B/I followed by S close theirs.
    if prev_tag in ("E", "S", "[", "]"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    # A type change closes any chunk; "O" and "." are outside tags and never close anything.
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk starts at the current token (conlleval ``startOfChunk``).

    Args:
        prev_tag: Prefix of the previous tag (``"O"`` before the first token).
        tag: Prefix of the current tag.
        prev_type: Type of the previous tag.
        type_: Type of the current tag.

    Returns:
        True when the current token opens a new chunk.
    """
    # conlleval.pl: B after B, I or O; I or E after O or E; "[" / "]". B (and the IOBES S) always start:
    # conlleval.pl itself would let "E-X B-X" continue one chunk, which no IOBES reader intends.
    if tag in ("B", "S", "[", "]"):
        return True
    if tag in ("I", "E") and prev_tag in ("O", "E", "S"):
        return True
    # A type change starts a chunk at any tag except the outside tags "O" and ".".
    return tag not in ("O", ".") and prev_type != type_


def bio_chunks(tags: Sequence[str]) -> set[Chunk]:
    """Extract the chunks of one tag sequence exactly as conlleval.pl does.

    The sequence is read as conlleval reads one sentence: the token before the first one and the token
    after the last one count as ``"O"``. Rules (``X``, ``Y`` are types):

    * ``B-X`` (and the IOBES single ``S-X``) always starts a chunk.
    * ``I-X`` (or ``E-X``) continues the open chunk of type ``X``; after ``O``, ``E-``, ``S-`` or a chunk of
      another type it starts a new one, so ``O I-X`` and ``B-Y I-X`` both open an ``X`` chunk.
    * A chunk ends before ``O``, before ``B-``/``S-``, after ``E-``/``S-``, at a type change, and at the end
      of the sentence.
    * The prefix is everything before the first hyphen, the type everything after it
      (``"B-fromloc.city_name"`` -> ``("B", "fromloc.city_name")``).
    * A tag without a hyphen is its own prefix with the empty type, as in conlleval.pl without ``-r``:
      ``"O"`` (and ``"."``) is outside; untyped ``B``/``I``/``E``/``S`` tags give chunks of type ``""``
      by the same rules; a bare label such as ``"PER"`` only opens a chunk (of type ``""``)
      where the type changes, i.e. right after a typed chunk, and never after ``O``. Label bare tags as
      ``B-PER`` (conlleval's ``-r``) if each should be a one-token chunk.

    For IOB1/IOB2 (``B``/``I``/``O``) and IOE (``I``/``E``/``O``) tags, typed or untyped, comparing the chunk
    sets of gold and predicted tags gives exactly conlleval.pl's counts of gold, guessed and correct chunks.
    conlleval.pl has no ``S-`` rules and lets ``E-X B-X`` run on as one chunk; for IOBES this follows the
    extension of the Python ports of conlleval (``S-`` is a one-token chunk, ``B-`` always starts).

    Args:
        tags: The tags of one sentence, e.g. ``["B-PER", "I-PER", "O", "B-LOC"]``.

    Returns:
        The chunks as ``(type, start, end)`` with ``end`` exclusive, so ``tags[start:end]`` is the chunk;
        e.g. ``{("PER", 0, 2), ("LOC", 3, 4)}`` for the example above.

    Raises:
        TypeError: If ``tags`` is a single string rather than a sequence of tags.
    """
    if isinstance(tags, str):
        raise TypeError(f"expected a sequence of tags, got the string {tags!r}")
    chunks: set[Chunk] = set()
    prev_tag, prev_type = "O", ""
    open_start: int | None = None
    open_type = ""
    for i, label in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(label)
        if open_start is not None and _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.add((open_type, open_start, i))
            open_start = None
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            if open_start is not None:
                # Only for ill-formed mixes (a bare-label chunk survives "O"; "[-X" right after "B-X"),
                # where conlleval.pl leaves the open chunk unterminated: the new start closes it.
                chunks.add((open_type, open_start, i))
            open_start, open_type = i, type_
        prev_tag, prev_type = tag, type_
    if open_start is not None:  # a bare-label chunk that nothing closed: it ends with the sentence
        chunks.add((open_type, open_start, len(tags)))
    return chunks


def _check_batch(preds: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> None:
    """Validate a batch of predicted and gold tag sequences.

    Args:
        preds: Predicted tag sequences, one per sentence.
        targets: Gold tag sequences, one per sentence.

    Raises:
        TypeError: If a batch or a sentence is a plain string (a single sentence passed as a batch).
        ValueError: If the batches differ in number of sentences, or a sentence differs in length.
    """
    if isinstance(preds, str) or isinstance(targets, str):
        raise TypeError("expected batches of tag sequences (list[list[str]]), got a string")
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predicted sentences but {len(targets)} gold sentences")
    for i, (pred, gold) in enumerate(zip(preds, targets, strict=True)):
        if isinstance(pred, str) or isinstance(gold, str):
            raise TypeError(
                f"sentence {i} is a string, not a sequence of tags: pass a batch (list[list[str]]), "
                "not one sentence"
            )
        if len(pred) != len(gold):
            raise ValueError(f"sentence {i}: {len(pred)} predicted tags but {len(gold)} gold tags")


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from chunk counts, 0 where a denominator is 0.

    Args:
        correct: Number of correctly predicted chunks.
        predicted: Number of predicted chunks.
        gold: Number of gold chunks.

    Returns:
        ``(precision, recall, f1)`` as fractions in ``[0, 1]``.
    """
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * correct / (predicted + gold) if predicted + gold else 0.0  # == 2PR/(P+R), 0 when P+R == 0
    return precision, recall, f1


# ---------------------------------------------------------------------------------------------------------
# slot filling
# ---------------------------------------------------------------------------------------------------------


class SlotF1(Metric):
    """Chunk-level precision, recall and F1 for slot filling / NER, as defined by conlleval.

    Chunks are extracted with :func:`bio_chunks`; a predicted chunk is correct only if its type and both
    boundaries equal those of a gold chunk. The states are three sum-reduced counters, so the result under
    DDP (or after :meth:`merge_state`) is the corpus-level score, not a mean of per-process scores.

    ``compute`` returns a dict, so log it with ``self.log_dict(metric.compute())`` at epoch end (or call
    ``compute`` yourself) rather than passing the metric object to ``self.log``.

    Example:
        >>> metric = SlotF1()
        >>> metric.update([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}
        {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    predicted: torch.Tensor
    gold: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        """Create the metric.

        Args:
            **kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
        """
        super().__init__(**kwargs)
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> None:
        """Add a batch of sentences.

        Args:
            preds: Predicted tag sequences, one per sentence.
            targets: Gold tag sequences, aligned with ``preds``.

        Raises:
            TypeError: If a sentence is a plain string.
            ValueError: If the number of sentences differs, or a sentence's predicted and gold lengths
                differ (the message names the sentence index within the batch).
        """
        _check_batch(preds, targets)
        correct = predicted = gold = 0
        for pred, target in zip(preds, targets, strict=True):
            pred_chunks, gold_chunks = bio_chunks(pred), bio_chunks(target)
            correct += len(pred_chunks & gold_chunks)
            predicted += len(pred_chunks)
            gold += len(gold_chunks)
        self.correct += correct
        self.predicted += predicted
        self.gold += gold

    def compute(self) -> dict[str, torch.Tensor]:
        """Precision, recall and F1 over everything seen since the last reset.

        Returns:
            ``{"precision", "recall", "f1"}`` as float scalar tensors in ``[0, 1]``; each is 0 where its
            denominator is 0 (no predicted chunks, no gold chunks, neither).
        """
        correct = self.correct.double()
        precision = correct / self.predicted.clamp(min=1)
        recall = correct / self.gold.clamp(min=1)
        f1 = 2 * correct / (self.predicted + self.gold).clamp(min=1)
        return {
            "precision": precision.float(),
            "recall": recall.float(),
            "f1": f1.float(),
        }


class SlotScore(NamedTuple):
    """Per-type scores of :func:`slot_report`."""

    precision: float
    recall: float
    f1: float
    support: int
    """Number of gold chunks of this type."""


def slot_report(preds: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> dict[str, SlotScore]:
    """Per-type conlleval breakdown, for reports (not a metric; nothing is accumulated).

    Args:
        preds: Predicted tag sequences, one per sentence.
        targets: Gold tag sequences, aligned with ``preds``.

    Returns:
        For every type found in the gold or the predicted tags, sorted by type name, its
        ``SlotScore(precision, recall, f1, support)``: fractions in ``[0, 1]`` (0 where a denominator is 0)
        and the number of gold chunks of the type. Types predicted but absent from the gold have support 0.

    Raises:
        TypeError: If a sentence is a plain string.
        ValueError: If the batches are misaligned (see :meth:`SlotF1.update`).
    """
    _check_batch(preds, targets)
    correct: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    for pred, target in zip(preds, targets, strict=True):
        pred_chunks, gold_chunks = bio_chunks(pred), bio_chunks(target)
        correct.update(chunk[0] for chunk in pred_chunks & gold_chunks)
        predicted.update(chunk[0] for chunk in pred_chunks)
        gold.update(chunk[0] for chunk in gold_chunks)
    return {
        type_: SlotScore(*_prf(correct[type_], predicted[type_], gold[type_]), support=gold[type_])
        for type_ in sorted(predicted.keys() | gold.keys())
    }


class SentenceExactMatch(Metric):
    """Fraction of sentences whose whole tag sequence and intent are both right.

    States are sum-reduced counters (``correct``, ``total``), so DDP gives the corpus-level fraction.

    Example:
        >>> metric = SentenceExactMatch()
        >>> metric.update([["B-X", "O"], ["O"]], [["B-X", "O"], ["O"]], ["a", "b"], ["a", "c"])
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        """Create the metric.

        Args:
            **kwargs: Passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        tag_preds: Sequence[Sequence[str]],
        tag_targets: Sequence[Sequence[str]],
        intent_preds: Sequence[Hashable] | torch.Tensor,
        intent_targets: Sequence[Hashable] | torch.Tensor,
    ) -> None:
        """Add a batch of sentences.

        Args:
            tag_preds: Predicted tag sequences, one per sentence.
            tag_targets: Gold tag sequences, aligned with ``tag_preds``.
            intent_preds: Predicted intent per sentence (labels or ids; a 1-D tensor is accepted).
            intent_targets: Gold intent per sentence, of the same kind as ``intent_preds``.

        Raises:
            TypeError: If a sentence is a plain string.
            ValueError: If the four arguments do not hold the same number of sentences, or a sentence's
                predicted and gold tag lengths differ (the message names the sentence index).
        """
        _check_batch(tag_preds, tag_targets)
        if isinstance(intent_preds, torch.Tensor):
            intent_preds = intent_preds.tolist()
        if isinstance(intent_targets, torch.Tensor):
            intent_targets = intent_targets.tolist()
        n = len(tag_preds)
        if len(intent_preds) != n or len(intent_targets) != n:
            raise ValueError(
                f"got {n} tag sequences but {len(intent_preds)} predicted and {len(intent_targets)} "
                "gold intents"
            )
        self.correct += sum(
            list(tp) == list(tt) and ip == it
            for tp, tt, ip, it in zip(tag_preds, tag_targets, intent_preds, intent_targets, strict=True)
        )
        self.total += n

    def compute(self) -> torch.Tensor:
        """Exact-match fraction.

        Returns:
            A float scalar tensor in ``[0, 1]``; 0 when no sentence was seen.
        """
        return (self.correct.double() / self.total.clamp(min=1)).float()


# ---------------------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------------------


class ErrorRates(MetricCollection):
    """WER and CER together: torchmetrics' ``WordErrorRate`` and ``CharErrorRate`` in one collection.

    ``update(hyps, refs)`` feeds both; ``compute()`` returns ``{"wer": ..., "cer": ...}`` (keys with the
    optional prefix/postfix), ready for ``self.log_dict``. Compute groups are disabled: WER and CER have
    identically named states, and a first batch where they coincide (e.g. ``"a"`` vs ``"a"``) would make
    torchmetrics merge them and report the WER as the CER from then on.
    """

    def __init__(self, prefix: str | None = None, postfix: str | None = None) -> None:
        """Create the collection.

        Args:
            prefix: Prepended to the keys, e.g. ``"val/"``.
            postfix: Appended to the keys.
        """
        super().__init__(
            {"wer": WordErrorRate(), "cer": CharErrorRate()},
            prefix=prefix,
            postfix=postfix,
            compute_groups=False,
        )


def wer_cer(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Corpus-level word and character error rates, for scripts.

    Errors are summed over all sentences and divided by the total reference length (words for WER,
    characters including spaces for CER), as torchmetrics computes them.

    Args:
        hyps: Hypothesis transcripts.
        refs: Reference transcripts, aligned with ``hyps``.

    Returns:
        ``{"wer": float, "cer": float}`` (fractions; they can exceed 1 with many insertions).

    Raises:
        TypeError: If ``hyps`` or ``refs`` is a single string.
        ValueError: If the lists differ in length, or the references hold no words at all.
    """
    if isinstance(hyps, str) or isinstance(refs, str):
        raise TypeError("expected lists of transcripts, got a string")
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if not any(ref.split() for ref in refs):
        raise ValueError("the references contain no words; WER/CER are undefined")
    return {
        "wer": float(word_error_rate(list(hyps), list(refs))),
        "cer": float(char_error_rate(list(hyps), list(refs))),
    }


class PhonemeErrorRates(Metric):
    """Phoneme and word error rates of G2P predictions against one or more reference pronunciations.

    Each prediction is scored against its closest reference (fewest edits); the word counts as correct when
    that distance is 0. States are sums, so the result is exact across DDP ranks.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("edits", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("phonemes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("wrong", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("words", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: list[str], references: list[list[str]]) -> None:
        if len(preds) != len(references):
            raise ValueError(f"got {len(preds)} predictions but {len(references)} reference lists")
        for pred, refs in zip(preds, references, strict=True):
            if not refs:
                raise ValueError(f"no reference pronunciation for prediction {pred!r}")
            hyp = pred.split()
            dist, ref = min((edit_distance(r.split(), hyp), r.split()) for r in refs)
            self.edits += dist
            self.phonemes += len(ref)
            self.wrong += int(dist > 0)
            self.words += 1

    def compute(self) -> dict[str, torch.Tensor]:
        return {"per": self.edits.float() / self.phonemes.clamp_min(1), "wer": self.wrong.float() / self.words.clamp_min(1)}


def log_retrieval(module: Any, stage: str, emb: torch.Tensor, labels: Sequence[int], ks: Sequence[int]) -> None:
    """Logs ``<stage>/ap`` (same-different AP over all pairs), ``<stage>/map`` and ``<stage>/p_at_<k>`` of a
    LightningModule's validation embeddings ``(N, E)``, cosine similarity. Labels below 0 (words training never
    saw) are left out; with fewer than two labels nothing is logged. Each rank scores the segments it saw: under
    DDP the logged values are the means over ranks."""
    known = [i for i, lab in enumerate(labels) if lab >= 0]
    emb, labels = emb[known], [labels[i] for i in known]
    if len(set(labels)) < 2 or len(labels) < 2:
        return
    sim = cosine_similarity_matrix(emb)
    scores = retrieval_scores(sim, labels, ks=ks)
    ap = same_different_ap(sim, labels, higher_is_similar=True)["ap"]
    module.log(f"{stage}/ap", 0.0 if ap != ap else ap, prog_bar=True, sync_dist=True)
    module.log(f"{stage}/map", scores["map"], prog_bar=True, sync_dist=True)
    for k in ks:
        module.log(f"{stage}/p_at_{k}", scores[f"p@{k}"], sync_dist=True)
