"""CTC forced alignment of a known transcript, merged into characters and words with frame boundaries and scores.

:func:`align_words` runs :func:`torchaudio.functional.forced_align` (the Viterbi path of the transcript through
the CTC lattice) and merges the path into one span per character, then one span per word: a word runs from the
first frame of its first character to the last frame of its last character (blank frames inside the word
included, the blanks and separator frames around it not), which is the convention of torchaudio's alignment
tutorials. CTC tends to emit a character at the start of its sound and the blank over the rest of it, so
``tail`` extends each word's end into the blank frames after its last character (up to ``tail`` frames, never
past the next emitted token). Times stay in frames here; the caller knows the frame hop.

Shape legend: ``T`` frames, ``V`` output symbols (blank included), ``L`` target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


class AlignmentError(ValueError):
    """A transcript that cannot be aligned to its frames; ``str()`` is one line saying why."""


@dataclass(frozen=True)
class Span:
    """One aligned unit (a character or a word): frames ``[start, end)``, the mean log-probability of the path
    over them (``score``, <= 0; closer to 0 is a more confident alignment) and, for a word, the longest run of
    frames between two of its characters (``gap``: a long one is a pause inside the word, or audio that does not
    say what the transcript says)."""

    text: str
    start: int
    end: int
    score: float
    gap: int = 0

    @property
    def frames(self) -> int:
        return self.end - self.start


def min_frames(ids: Sequence[int]) -> int:
    """Fewest frames a CTC path of ``ids`` needs: one per token plus a blank between two equal neighbours."""
    ids = list(ids)
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:], strict=False) if a == b)


def transcript_ids(words: Sequence[str], tokens: Sequence[str], separator: str | None = " ") -> tuple[list[int],
                                                                                                       list[int]]:
    """Target ids of ``words`` joined by ``separator`` and, per target, the index of its word (-1: separator).

    ``separator`` None (or a symbol the model lacks) joins the words with nothing between them.

    Raises:
        AlignmentError: a character that is not one of ``tokens``.
    """
    stoi = {s: i for i, s in enumerate(tokens)}
    sep = stoi.get(separator) if separator else None
    ids: list[int] = []
    owner: list[int] = []
    for w, word in enumerate(words):
        if w and sep is not None:
            ids.append(sep)
            owner.append(-1)
        for c in word:
            if c not in stoi:
                missing = "".join(sorted({ch for ch in "".join(words) if ch not in stoi}))
                raise AlignmentError(f"characters outside the model's vocabulary: {missing!r}")
            ids.append(stoi[c])
            owner.append(w)
    return ids, owner


def token_spans(path: Sequence[int], *, blank: int = 0) -> list[tuple[int, int, int]]:
    """``(token, start, end)`` of each emitted token of a CTC path (repeats merged, blanks dropped)."""
    out: list[tuple[int, int, int]] = []
    prev = blank
    for t, tok in enumerate(path):
        if tok != blank and tok == prev:
            out[-1] = (tok, out[-1][1], t + 1)
        elif tok != blank:
            out.append((tok, t, t + 1))
        prev = tok
    return out


def align_words(log_probs: torch.Tensor, text: str, tokens: Sequence[str], *, blank: int = 0,
                separator: str | None = " ", tail: int = 0) -> tuple[list[Span], list[Span]]:
    """Forced alignment of ``text`` (words separated by spaces) to ``log_probs`` ``(T, V)``.

    Args:
        log_probs: ``(T, V)`` log-probabilities of one utterance (its valid frames only).
        text: The transcript, already normalised to the model's symbols; words split on whitespace.
        tokens: The output symbols in id order (``tokens[blank]`` is the blank).
        blank: The blank id.
        separator: The symbol between words (the model's space), or None when it has none.
        tail: Blank frames after a word's last character that still belong to the word (at most; the next
            emitted token or the end of the frames stops it earlier).

    Returns:
        ``(words, characters)``: one :class:`Span` per word and per character, in order.

    Raises:
        AlignmentError: an empty transcript, a character the model lacks, or fewer frames than the transcript
            needs (``L`` plus one per repeated neighbour).
    """
    from torchaudio.functional import forced_align

    words = text.split()
    if not words:
        raise AlignmentError("empty transcript")
    ids, owner = transcript_ids(words, tokens, separator)
    frames, need = int(log_probs.size(0)), min_frames(ids)
    if frames < need:
        raise AlignmentError(f"transcript needs at least {need} frames, the audio gives {frames}")
    lp = log_probs.detach().float().cpu().unsqueeze(0)  # (1, T, V)
    path, scores = forced_align(lp, torch.tensor([ids], dtype=torch.int32), blank=blank)
    path_list, frame_scores = path[0].tolist(), scores[0]  # (T,) ids and their log-probs
    spans = token_spans(path_list, blank=blank)
    assert [s[0] for s in spans] == ids, "forced_align returned a path of another transcript"
    chars = [Span(tokens[tok], s, e, float(frame_scores[s:e].mean())) for tok, s, e in spans]
    out = []
    for w, word in enumerate(words):
        first, last = owner.index(w), len(owner) - 1 - owner[::-1].index(w)  # the word's first/last targets
        start, end = chars[first].start, chars[last].end
        limit = chars[last + 1].start if last + 1 < len(chars) else frames  # the next emitted token
        end = min(end + max(tail, 0), limit)
        gap = max((chars[j + 1].start - chars[j].end for j in range(first, last)), default=0)
        out.append(Span(word, start, end, float(frame_scores[start:end].mean()), gap))
    return out, chars
