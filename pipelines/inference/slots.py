"""Slot filling over recognised speech: transcripts -> slot-tagger words -> tags and intent."""

from __future__ import annotations

from collections.abc import Sequence


def tag_transcripts(slot_model, transcripts: Sequence[str]) -> list[dict]:
    """Tags transcripts with a slot model: one ``{"transcript", "words", "tags", "intent"}`` per transcript.

    A model trained on spoken form (``data.spoken_form``) gets the recogniser's words as they are; any other
    gets :func:`data.spoken.slot_words` (``saint`` -> ``st.``). An empty transcript (nothing recognised) gets no
    words, no tags and intent ``None``.
    """
    from data.spoken import plain_words, slot_words

    as_words = (lambda t: plain_words(t).split()) if getattr(slot_model, "spoken_form", False) else slot_words
    words = [as_words(t) for t in transcripts]
    tagged = iter(slot_model.tag_sentences([" ".join(w) for w in words if w]) if any(words) else [])
    out = []
    for text, w in zip(transcripts, words, strict=True):
        res = next(tagged) if w else {"words": [], "tags": [], "intent": None}
        out.append({"transcript": text, "words": res["words"], "tags": res["tags"], "intent": res["intent"]})
    return out
