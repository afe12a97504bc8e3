"""Keyword spotting on a stream: an utterance classifier applied to a sliding window of the latest audio."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Detection:
    """One keyword heard: its label, softmax probability and the end of its window (seconds from the start)."""

    label: str
    score: float
    time: float

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 4), "time": round(self.time, 3)}


def model_sample_rate(model) -> int:
    """The sample rate a classifier or speech model expects (its frontend's ``sample_rate``)."""
    return int(model.sample_rate)


class KeywordSpotter:
    """Classifies the last ``window_s`` seconds of a stream every ``hop_s`` seconds and reports keywords.

    A window's most probable label is reported when its probability reaches ``threshold``, it is not one of
    ``ignore`` (the catch-all classes), no keyword was reported in the last ``refractory_s`` seconds and (with
    ``rearm``) the label was not already above the threshold in the window before. One spoken word is seen by
    every window that overlaps it, up to ``window_s`` plus its length; the refractory time alone would report
    a word longer than ``refractory_s - window_s`` twice.

    Args:
        model: An utterance classifier: ``labels`` (class names), ``sample_rate`` and
            ``forward(waveforms (N, S), lengths (N,)) -> logits (N, C)``.
        window_s: Length of the classified window (the clip length the model was trained on).
        hop_s: Time between two windows.
        threshold: Smallest softmax probability that counts as a detection.
        refractory_s: Quiet time after a detection, during which no keyword is reported.
        ignore: Labels never reported.
        rearm: Report a label again only after a window in which it was not above the threshold.

    Feed mono samples at ``model_sample_rate(model)`` with :meth:`accept`; :meth:`flush` classifies what is left
    at the end; :meth:`reset` starts a new stream.

    Raises:
        ValueError: a window, hop, threshold or refractory time out of range.
    """

    def __init__(self, model, *, window_s: float = 1.0, hop_s: float = 0.25, threshold: float = 0.7,
                 refractory_s: float = 1.0, ignore: tuple[str, ...] = ("unknown", "silence"),
                 rearm: bool = True) -> None:
        if window_s <= 0 or hop_s <= 0:
            raise ValueError(f"window_s and hop_s must be positive, got {window_s:g} and {hop_s:g}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold:g}")
        if refractory_s < 0:
            raise ValueError(f"refractory_s must be >= 0, got {refractory_s:g}")
        self.model = model
        self.labels = list(model.labels)
        self.sample_rate = model_sample_rate(model)
        self.window = max(1, round(window_s * self.sample_rate))
        self.hop = max(1, round(hop_s * self.sample_rate))
        self.threshold = float(threshold)
        self.refractory_s = float(refractory_s)
        self.ignore = frozenset(ignore)
        self.rearm = bool(rearm)
        self.reset()

    def reset(self) -> None:
        """Forgets the stream."""
        self._audio = torch.zeros(0)
        self._offset = 0  # absolute index of self._audio[0]
        self._received = 0
        self._next_end = self.window  # absolute end (exclusive) of the next window to classify
        self._classified_to = 0  # end of the last classified window
        self._last_fire: float | None = None
        self._above: str | None = None  # the label above the threshold in the last window

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self._received / self.sample_rate

    def accept(self, samples) -> list[Detection]:
        """Feeds mono samples; returns the keywords of every window that became complete."""
        x = torch.as_tensor(samples, dtype=torch.float32).reshape(-1).cpu()
        if not x.numel():
            return []
        self._audio = torch.cat([self._audio, x])
        self._received += x.numel()
        ends = []
        while self._next_end <= self._received:
            ends.append(self._next_end)
            self._next_end += self.hop
        out = self._classify(ends, self.window) if ends else []
        keep_from = max(0, self._received - self.window)  # the next window, and flush(), need no earlier sample
        if keep_from > self._offset:
            self._audio = self._audio[keep_from - self._offset:]
            self._offset = keep_from
        return out

    def flush(self) -> list[Detection]:
        """Classifies the last window once more if audio arrived after it (or the whole stream, if shorter)."""
        if self._received <= self._classified_to or not self._received:
            return []
        return self._classify([self._received], min(self.window, self._received))

    def scores(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` softmax probabilities of ``windows (N, S)`` with valid ``lengths (N,)``."""
        device = _device_of(self.model)
        with torch.no_grad():
            logits = self.model.forward(windows.to(device), lengths.to(device))
        return torch.softmax(logits.float(), dim=-1).cpu()

    def _classify(self, ends: list[int], width: int) -> list[Detection]:
        rows = [self._audio[e - width - self._offset: e - self._offset] for e in ends]
        probs = self.scores(torch.stack(rows), torch.full((len(rows),), width, dtype=torch.long))
        self._classified_to = ends[-1]
        out = []
        for end, p in zip(ends, probs, strict=True):
            score, index = (float(v) for v in p.max(-1))
            label, time = self.labels[int(index)], end / self.sample_rate
            above = label if label not in self.ignore and score >= self.threshold else None
            held, self._above = above is not None and above == self._above, above
            if above is None or (self.rearm and held):
                continue
            if self._last_fire is not None and time - self._last_fire < self.refractory_s - 1e-9:
                continue
            self._last_fire = time
            out.append(Detection(label, score, time))
        return out


def classify_scores(model, waveform: torch.Tensor) -> dict[str, float]:
    """``{label: probability}`` of one whole clip (mono, at the model's sample rate)."""
    device = _device_of(model)
    with torch.no_grad():
        logits = model.forward(waveform.reshape(1, -1).to(device), torch.tensor([waveform.numel()], device=device))
    probs = torch.softmax(logits.float(), dim=-1)[0].cpu().tolist()
    return {label: float(p) for label, p in zip(model.labels, probs, strict=True)}


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
