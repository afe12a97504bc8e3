"""What a WebSocket stream runs: a chunked resampler and one session per mode (streaming text, keywords, buffered).

Every class here is synchronous and holds the state of one connection; the app calls them from its thread pool,
one call at a time per connection. A session takes mono float32 samples at its ``sample_rate`` and answers with
protocol messages (dicts): ``partial`` and ``keyword`` while audio arrives, then ``final`` from :meth:`finish`.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

from pipelines.inference import make_streamer
from pipelines.inference.keywords import KeywordSpotter, model_sample_rate


class StreamResampler:
    """Resamples a stream chunk by chunk to the same samples as resampling the whole signal at once.

    torchaudio's sinc resampler maps each period of ``orig / gcd`` input samples to ``new / gcd`` output samples
    and reads at most its kernel's half-width (``width``) of input on each side. So whole periods are emitted
    once ``width`` samples after them have arrived, with ``width`` samples of history before them; :meth:`flush`
    emits the rest as the last part of the whole signal (zeros after the end, as torchaudio pads).
    """

    def __init__(self, orig: int, new: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> None:
        g = math.gcd(int(orig), int(new))
        self.orig, self.new = int(orig) // g, int(new) // g
        width = math.ceil(lowpass_filter_width * self.orig / (rolloff * min(self.orig, self.new)))
        self.context = self.orig * math.ceil((width + 1) / self.orig)  # whole periods covering the kernel
        self._buf = torch.zeros(0)
        self._history = 0  # leading samples of _buf already emitted (kept as left context)

    @property
    def identity(self) -> bool:
        return self.orig == self.new

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return AF.resample(x, self.orig, self.new)

    def accept(self, x: torch.Tensor) -> torch.Tensor:
        """The output samples the input so far determines exactly."""
        x = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
        if self.identity:
            return x
        self._buf = torch.cat([self._buf, x])
        ready = (self._buf.numel() - self._history - self.context) // self.orig * self.orig
        if ready <= 0:
            return torch.zeros(0)
        y = self._resample(self._buf[: self._history + ready + self.context])
        start = self._history * self.new // self.orig
        out = y[start: start + ready * self.new // self.orig]
        emitted = self._history + ready
        keep = min(self.context, emitted)
        self._buf = self._buf[emitted - keep:]
        self._history = keep
        return out

    def flush(self) -> torch.Tensor:
        """The remaining output samples (call once, at the end of the stream)."""
        if self.identity or self._buf.numel() <= self._history:
            return torch.zeros(0)
        y = self._resample(self._buf)
        out = y[self._history * self.new // self.orig:]
        self._buf, self._history = torch.zeros(0), 0
        return out


class Session:
    """One stream's recogniser: :meth:`accept` samples at :attr:`sample_rate`, then :meth:`finish` once."""

    sample_rate: int

    def accept(self, samples: torch.Tensor) -> list[dict]:
        raise NotImplementedError

    def finish(self) -> list[dict]:
        raise NotImplementedError


class TranscriptSession(Session):
    """Streaming greedy CTC (:class:`modules.streaming.StreamingTranscriber`): a ``partial`` per changed text.

    The ``final`` text is :meth:`StreamingTranscriber.finish`'s, the offline greedy transcript of the audio.
    """

    def __init__(self, model, name: str = "the model") -> None:
        self.streamer = make_streamer(model, name)
        self.sample_rate = self.streamer.sample_rate
        self._shown = ""

    def accept(self, samples: torch.Tensor) -> list[dict]:
        self.streamer.accept(samples)
        if self.streamer.text == self._shown:
            return []
        self._shown = self.streamer.text
        return [{"type": "partial", "text": self._shown}]

    def finish(self) -> list[dict]:
        return [{"type": "final", "text": self.streamer.finish()}]


class BufferedSession(Session):
    """A speech model that cannot stream: the audio is kept and transcribed once, at the end (no partials)."""

    def __init__(self, model) -> None:
        self.model = model
        self.sample_rate = model_sample_rate(model)
        self._chunks: list[torch.Tensor] = []

    def accept(self, samples: torch.Tensor) -> list[dict]:
        self._chunks.append(torch.as_tensor(samples, dtype=torch.float32).reshape(-1))
        return []

    def finish(self) -> list[dict]:
        wav = torch.cat(self._chunks) if self._chunks else torch.zeros(0)
        if wav.numel() < self.sample_rate // 20:
            raise ValueError(f"audio too short to transcribe: {wav.numel() / self.sample_rate:.3f} s")
        return [{"type": "final", "text": self.model.transcribe_waveforms([wav])[0]}]


class KeywordSession(Session):
    """Sliding-window keyword spotting: a ``keyword`` message per detection; ``final`` lists them all."""

    def __init__(self, model, **spotter_options) -> None:
        self.spotter = KeywordSpotter(model, **spotter_options)
        self.sample_rate = self.spotter.sample_rate
        self._found: list[dict] = []

    def _messages(self, detections) -> list[dict]:
        out = [{"type": "keyword", **d.to_dict()} for d in detections]
        self._found += out
        return out

    def accept(self, samples: torch.Tensor) -> list[dict]:
        return self._messages(self.spotter.accept(samples))

    def finish(self) -> list[dict]:
        out = self._messages(self.spotter.flush())
        detections = [{k: m[k] for k in ("label", "score", "time")} for m in self._found]
        return [*out, {"type": "final", "text": " ".join(d["label"] for d in detections), "detections": detections}]


def is_classifier(model) -> bool:
    return hasattr(model, "labels") and hasattr(model, "classify_waveforms")


def can_stream(model) -> bool:
    """Whether :class:`TranscriptSession` accepts ``model`` (a unidirectional fused CTC model)."""
    from pipelines.inference import InferenceError

    try:
        make_streamer(model)
    except InferenceError:
        return False
    return True


def session_kind(model) -> str:
    """``keywords`` (a classifier: sliding window), ``stream`` (streaming CTC) or ``buffered`` (text at the end)."""
    if is_classifier(model):
        return "keywords"
    return "stream" if can_stream(model) else "buffered"


def make_session(model, kind: str, name: str = "the model") -> Session:
    """A new session of ``kind`` (:func:`session_kind`) over ``model``."""
    if kind == "keywords":
        return KeywordSession(model)
    if kind == "stream":
        return TranscriptSession(model, name)
    return BufferedSession(model)
