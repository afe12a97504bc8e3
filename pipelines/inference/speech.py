"""Decoding helpers for speech models: a beam decoder (optional word LM) and a chunked streamer."""

from __future__ import annotations

from pathlib import Path

from pipelines.inference.errors import InferenceError


def make_decoder(model, *, beam: int = 1, lm: str | None = None, lm_weight: float = 0.5, word_bonus: float = 0.0):
    """``model.make_decoder`` (None for greedy CTC), or :class:`InferenceError` for a missing LM or bad option."""
    if lm and not Path(lm).is_file():
        raise InferenceError(f"language model not found: {lm}")
    try:
        return model.make_decoder(beam_size=beam, lm_path=lm, lm_weight=lm_weight, word_bonus=word_bonus)
    except ValueError as e:
        raise InferenceError(str(e)) from None


def make_streamer(model, name: str = "the model", option: str = "streaming"):
    """A streaming transcriber (:mod:`modules.streaming`) for a unidirectional CTC or transducer ``model``.

    Raises:
        InferenceError: not a CTC or transducer model, or one that cannot stream (bidirectional, ...).
    """
    from modules.streaming import StreamingTranscriber, StreamingTransducer
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.transducer import TransducerSpeechRecognizer

    if not isinstance(model, CTCSpeechRecognizer):
        raise InferenceError(f"{option} needs a CTC or transducer checkpoint; {name} is a {type(model).__name__} "
                             "checkpoint")
    cls = StreamingTransducer if isinstance(model, TransducerSpeechRecognizer) else StreamingTranscriber
    try:
        return cls(model)
    except ValueError as e:
        raise InferenceError(f"{option}: {e}") from None
