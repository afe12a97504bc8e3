"""Forced alignment with a character CTC model: the words of a known transcript, with their times in seconds.

:class:`WordAligner` wraps a loaded CTC speech model (a shipped one such as ``english``, or a checkpoint):
:meth:`~WordAligner.emissions` runs the model over waveforms in length-sorted batches and
:meth:`~WordAligner.align` aligns one transcript to one utterance's log-probabilities
(:func:`modules.ctc_alignment.align_words`). A frame is ``hop_length * stack_frames`` samples of audio
(times ``2 ** pyramid_layers`` for a pyramidal encoder): frame ``t`` starts at ``t * hop / sample_rate`` s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.ctc_alignment import AlignmentError, align_words
from pipelines.inference.errors import InferenceError

__all__ = ["AlignedWord", "AlignmentError", "WordAligner"]


@dataclass(frozen=True)
class AlignedWord:
    """One aligned word: ``start``/``end`` in seconds, samples ``[start_sample, end_sample)`` of the utterance at
    the model's rate, ``score`` the mean log-probability per frame of the alignment path over the word and
    ``gap`` the longest time (s) between two of its characters."""

    word: str
    start: float
    end: float
    start_sample: int
    end_sample: int
    score: float
    gap: float = 0.0

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def letters(self) -> int:
        return sum(c.isalpha() for c in self.word)


class WordAligner:
    """Aligns transcripts to audio with a character CTC model (``english`` or any CTC checkpoint).

    Args:
        model: A loaded :class:`pipelines.ctc.CTCSpeechRecognizer` (a transducer's auxiliary CTC head too) with
            a character tokenizer.

    Raises:
        InferenceError: another kind of model, or one whose symbols are not characters.
    """

    def __init__(self, model) -> None:
        from data.text import CharTokenizer
        from pipelines.ctc import CTCSpeechRecognizer

        if not isinstance(model, CTCSpeechRecognizer):
            raise InferenceError(f"forced alignment needs a CTC speech model, not a {type(model).__name__}")
        if not isinstance(model.tokenizer, CharTokenizer):
            raise InferenceError(f"forced alignment needs a character CTC model; this one's symbols are "
                                 f"{type(model.tokenizer).__name__} pieces")
        self.model = model
        self.tokens = list(model.tokenizer.tokens)
        self.blank = int(model.tokenizer.blank)
        self.separator = " " if " " in self.tokens else None
        fe = model.model.frontend
        self.sample_rate = int(fe.sample_rate)
        self.hop = int(fe.hop_length * fe.stack_frames * 2 ** int(getattr(model.model.encoder, "pyramid_layers", 0)))

    @property
    def frame_seconds(self) -> float:
        return self.hop / self.sample_rate

    def normalise(self, text: str) -> str:
        """The transcript as the model's training data normalised it (``asr_chars``: lower-case a-z, apostrophe
        and space; digits spelled, hyphens split words, other punctuation dropped)."""
        from data.text import normalize_text

        return normalize_text(text, "asr_chars")

    def unknown_chars(self, text: str) -> str:
        """The characters of ``text`` (other than spaces) the model has no symbol for, sorted."""
        return "".join(sorted({c for c in text if c not in self.tokens and not c.isspace()}))

    @torch.no_grad()
    def emissions(self, waveforms: list[torch.Tensor], batch_size: int = 8) -> list[torch.Tensor]:
        """``(T_i, V)`` log-probabilities (valid frames only, on the CPU) of each mono waveform at
        :attr:`sample_rate`, in input order."""
        from pipelines.base import batched_waveforms

        self.model.eval()
        device = next(self.model.parameters()).device
        out: dict[int, torch.Tensor] = {}
        for idx, batch, lengths in batched_waveforms(waveforms, batch_size, device):
            log_probs, frames = self.model(batch, lengths)  # (B, T, V), (B,)
            for b, i in enumerate(idx):
                out[i] = log_probs[b, : int(frames[b])].float().cpu()
        return [out[i] for i in range(len(waveforms))]

    def tail_frames(self, seconds: float) -> int:
        """``seconds`` of word tail in whole frames (rounded)."""
        return max(0, round(seconds / self.frame_seconds))

    def align(self, log_probs: torch.Tensor, text: str, num_samples: int | None = None,
              tail: float = 0.0) -> list[AlignedWord]:
        """The words of ``text`` (normalised, space-separated) aligned to ``log_probs`` ``(T, V)``.

        ``num_samples`` (the utterance's length) keeps the last word's end inside the audio. ``tail`` (seconds,
        rounded to whole frames) extends each word's end into the blank frames after its last character, never
        past the next emitted symbol (:func:`modules.ctc_alignment.align_words`).

        Raises:
            AlignmentError: an empty transcript, a character the model lacks, or too few frames for it.
        """
        words, _ = align_words(log_probs, text, self.tokens, blank=self.blank, separator=self.separator,
                               tail=self.tail_frames(tail))
        out = []
        for w in words:
            start, end = w.start * self.hop, w.end * self.hop
            if num_samples is not None:
                start, end = min(start, num_samples), min(end, num_samples)
            out.append(AlignedWord(w.text, start / self.sample_rate, end / self.sample_rate, start, end, w.score,
                                   w.gap * self.frame_seconds))
        return out
