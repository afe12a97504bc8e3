"""Streaming greedy transcription with a unidirectional recurrent CTC model.

:class:`StreamingTranscriber` takes audio in chunks of any size and carries, between chunks, everything the
offline model would see at once: the STFT overlap (the reflect padding of the first and last half window and
the samples of frames not yet complete), the frame-stacking remainder and the state of every recurrent layer.

Normalisation decides what can be exact before the end of the audio:

- ``normalize="none"`` (no statistics across frames): each frame's features are final as soon as its samples
  have arrived, so the log-probabilities and text produced chunk by chunk equal the offline ones.
- ``normalize="utterance"`` (the CTC recognizer's default): every frame is normalised
  with the mean and variance of the *whole* utterance, which no causal system knows before the end. Partial
  hypotheses then use the statistics of the frames seen so far (provisional, they may change); :meth:`finish`
  normalises the kept log-mel frames with the utterance statistics and runs the recurrent stack once more,
  so the final log-probabilities and text equal the offline ones.

"Offline" means the model run on the utterance alone (batch size 1): in a padded batch the last frames of a
shorter row see zero padding instead of the reflected signal.

Pure torch: the model is duck-typed (``.model`` a :class:`modules.ctc.CTCAcousticModel`, ``.tokenizer``), so
this works on a CTC LightningModule loaded from a checkpoint without importing Lightning here; reading audio
files is the caller's job (``rnnlab transcribe --stream``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from modules.ctc_decoding import greedy_decode
from modules.frontend import normalize_utterances
from modules.transducer import greedy_search


class StreamingTranscriber:
    """Incremental greedy CTC decoding of one utterance with a unidirectional CTC model.

    Args:
        model: A CTC speech recognizer (``pipelines.ctc.CTCSpeechRecognizer``, or anything with ``.model`` a
            :class:`modules.ctc.CTCAcousticModel` and ``.tokenizer``) whose encoder is unidirectional, fused
            and without pyramid layers.

    Use :meth:`accept` for each chunk of mono samples at the model's sample rate, then :meth:`finish`;
    :meth:`reset` starts a new utterance.

    Raises:
        ValueError: a bidirectional encoder or a frontend/encoder configuration streaming does not support.
    """

    def __init__(self, model) -> None:
        acoustic = model.model
        fe, enc = acoustic.frontend, acoustic.encoder
        if enc.bidirectional:
            raise ValueError("streaming needs a unidirectional model (encoder.bidirectional=false); this one is bidirectional")
        if enc.implementation != "fused" or enc.pyramid_layers:
            raise ValueError("streaming supports fused encoders without pyramid layers")
        spec = fe.melspec.spectrogram
        if (spec.pad, spec.normalized, spec.center, spec.pad_mode, spec.power) != (0, False, True, "reflect", 2.0):
            raise ValueError("streaming supports the log-mel frontend's default STFT settings only")
        if fe.normalize not in ("utterance", "global", "none"):
            raise ValueError(f"streaming does not know the frontend normalisation {fe.normalize!r}")
        self.model = model.eval()
        self.frontend, self.encoder, self.head = fe, enc, acoustic.head
        self.tokenizer = model.tokenizer
        self.sample_rate = int(fe.sample_rate)
        self.n_fft, self.hop = int(spec.n_fft), int(spec.hop_length)
        self.win_length = int(spec.win_length)
        self.half = self.n_fft // 2
        self.stack = int(fe.stack_frames)
        self.device = next(acoustic.parameters()).device
        self.reset()

    @property
    def exact_partials(self) -> bool:
        """Whether text and log-probabilities produced before :meth:`finish` are already the offline ones."""
        return self.frontend.normalize in ("none", "global")

    @property
    def min_samples(self) -> int:
        """Fewest samples an utterance needs (the reflect padding of half a window at each end)."""
        return self.half + 1

    def reset(self) -> None:
        """Forgets the current utterance."""
        self._received = 0
        self._pending: list[Tensor] = []  # samples before the left reflect padding can be built
        self._buf: Tensor | None = None  # padded signal from the next frame's first sample on
        self._tail = torch.zeros(0, device=self.device)  # last half + 1 samples (for the right padding)
        self._next_frame = 0
        self._logmel: list[Tensor] = []  # (n, n_mels) log-mel frames, kept for utterance normalisation
        self._sum = self._sumsq = None  # running statistics (float64) for provisional normalisation
        self._count = 0
        self._stack_rest = torch.zeros(0, self.frontend.n_mels, device=self.device)
        self._state: list = [None] * self.encoder.num_layers
        self._log_probs: list[Tensor] = []
        self._ids: list[int] = []
        self._prev = -1
        self._text = ""
        self._finished = False

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The hypothesis so far (final after :meth:`finish`)."""
        return self._text

    @property
    def log_probs(self) -> Tensor:
        """``(frames, vocab)`` log-probabilities produced so far (after :meth:`finish`: the offline ones)."""
        if not self._log_probs:
            return torch.zeros(0, len(self.tokenizer), device=self.device)
        return torch.cat(self._log_probs)

    @torch.no_grad()
    def accept(self, chunk) -> str:
        """Feeds mono samples; returns the text this chunk appended to the hypothesis."""
        if self._finished:
            raise RuntimeError("finish() was called: reset() before the next utterance")
        x = torch.as_tensor(chunk, dtype=torch.float32, device=self.device)
        if x.dim() > 1:
            raise ValueError(f"accept() takes mono samples (1-D), got shape {tuple(x.shape)}")
        x = x.reshape(-1)
        if not x.numel():
            return ""
        self._received += x.numel()
        self._tail = torch.cat([self._tail, x])[-(self.half + 1):]
        if self._buf is None:
            self._pending.append(x)
            if self._received <= self.half:
                return ""
            x = torch.cat(self._pending)
            self._pending = []
            self._buf = torch.cat([x[1:self.half + 1].flip(0), x])  # left reflect padding, as torch.stft
        else:
            self._buf = torch.cat([self._buf, x])
        frames = self._frames(self._buf, (self._buf.numel() - self.n_fft) // self.hop + 1)
        return self._consume(frames, final=False)

    @torch.no_grad()
    def finish(self) -> str:
        """Ends the utterance; returns the final text (the offline greedy transcript)."""
        if self._finished:
            return self._text
        if self._received < self.min_samples:
            raise ValueError(f"audio too short to transcribe: {self._received} samples "
                             f"(the model needs at least {self.min_samples})")
        right = self._tail[:-1].flip(0)[: self.half]  # right reflect padding: x[S-2], ..., x[S-1-half]
        buf = torch.cat([self._buf, right])
        total = self._received // self.hop + 1  # frames of the utterance (center=True)
        frames = self._frames(buf, total - self._next_frame)
        self._finished = True
        if self.frontend.normalize == "utterance":
            self._logmel.append(frames)
            self._final_pass(torch.cat(self._logmel))
        else:
            self._consume(frames, final=True)
        return self._text

    # -- frontend ---------------------------------------------------------------------------------------------
    def _frames(self, buf: Tensor, count: int) -> Tensor:
        """Log-mel frames for the next ``count`` frames of the padded signal ``buf``; drops their samples."""
        fe = self.frontend
        if count <= 0:
            return torch.zeros(0, fe.n_mels, device=self.device)
        span = buf[: (count - 1) * self.hop + self.n_fft]
        spec = torch.stft(span, self.n_fft, hop_length=self.hop, win_length=self.win_length,
                          window=fe.melspec.spectrogram.window, center=False, normalized=False, onesided=True,
                          return_complex=True)
        power = spec.abs().pow(2.0)  # (freq, count), as torchaudio's Spectrogram
        mel = torch.matmul(power.transpose(-1, -2), fe.melspec.mel_scale.fb)  # (count, n_mels), as MelScale
        self._buf = buf[count * self.hop:]
        self._next_frame += count
        return mel.clamp_min(1e-10).log()

    def _consume(self, logmel: Tensor, *, final: bool) -> str:
        """Normalises, stacks and encodes new log-mel frames; returns the text they appended."""
        if self.frontend.normalize == "utterance":
            self._logmel.append(logmel)
            feats = self._running_normalise(logmel)
        elif self.frontend.normalize == "global":
            fe = self.frontend
            feats = (logmel - fe.feat_mean) / (fe.feat_var + 1e-5).sqrt()
        else:
            feats = logmel
        return self._encode(self._stack_frames(feats, final=final))

    def _running_normalise(self, logmel: Tensor) -> Tensor:
        """Provisional normalisation of each frame with the mean/variance of the frames up to it."""
        if not logmel.size(0):
            return logmel
        x = logmel.double()
        n = self._count + torch.arange(1, x.size(0) + 1, device=x.device, dtype=torch.float64)[:, None]
        csum = x.cumsum(0) + (self._sum if self._sum is not None else 0.0)
        csq = (x * x).cumsum(0) + (self._sumsq if self._sumsq is not None else 0.0)
        self._sum, self._sumsq, self._count = csum[-1], csq[-1], self._count + x.size(0)
        mean = csum / n
        var = (csq / n - mean * mean).clamp_min(0.0)
        return ((x - mean) / (var + 1e-5).sqrt()).to(logmel.dtype)

    def _stack_frames(self, feats: Tensor, *, final: bool) -> Tensor:
        """Groups of ``stack_frames`` consecutive frames, concatenated; the remainder waits (zero-padded at the end)."""
        k = self.stack
        feats = torch.cat([self._stack_rest, feats])
        if final and feats.size(0) % k:
            feats = torch.cat([feats, feats.new_zeros(k - feats.size(0) % k, feats.size(1))])
        whole = feats.size(0) - feats.size(0) % k
        self._stack_rest = feats[whole:]
        return feats[:whole].reshape(-1, k * feats.size(1))

    # -- encoder, head, decoding ------------------------------------------------------------------------------
    def _encode(self, feats: Tensor) -> str:
        if not feats.size(0):
            return ""
        h = feats[None]  # (1, n, F)
        with _short_sequence_kernels(h):
            for i, layer in enumerate(self.encoder.layers):
                h, self._state[i] = layer[0](h, self._state[i])
                h = self.encoder.dropout(h) if i < self.encoder.num_layers - 1 else h
        if self.encoder.projection is not None:
            h = self.encoder.projection(h)
        return self._emit(h)

    def _emit(self, enc: Tensor) -> str:
        """Decodes new encoder frames ``(1, n, D)``; returns the text they appended."""
        lp = self.head(enc)[0]  # (n, V)
        self._log_probs.append(lp)
        return self._extend(lp)

    def _extend(self, lp: Tensor) -> str:
        """Greedy CTC over new frames, continuing the previous frame's token; returns the appended text."""
        blank = self.tokenizer.blank
        for token in lp.argmax(-1).tolist():
            if token != self._prev and token != blank:
                self._ids.append(token)
            self._prev = token
        return self._set_text()

    def _set_text(self) -> str:
        """Updates :attr:`text` from the token ids; returns what it appended (all of it if it changed earlier)."""
        text = self.tokenizer.decode(self._ids)
        new = text[len(self._text):] if text.startswith(self._text) else text
        self._text = text
        return new

    def decode_final(self, decoder=None) -> str:
        """The final text after :meth:`finish`: greedy, or ``decoder`` (the model's ``make_decoder``) over the
        utterance's log-probabilities."""
        if decoder is None:
            return self._text
        lp = self.log_probs
        return self.tokenizer.decode(decoder.decode(lp[None].float().cpu(), torch.tensor([lp.size(0)]))[0])

    def _final_pass(self, logmel: Tensor) -> None:
        """Offline normalisation with the utterance statistics, then the whole stack once (exact final result)."""
        feats = logmel[None]  # (1, T, F): every frame valid
        feats = normalize_utterances(feats, torch.ones_like(feats[..., :1]),
                                     torch.tensor([feats.size(1)], device=feats.device))
        k = self.stack
        if feats.size(1) % k:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, k - feats.size(1) % k))
        feats = feats.reshape(1, -1, k * feats.size(2))
        enc, lengths = self.encoder(feats, torch.tensor([feats.size(1)], device=self.device))
        self._emit_final(enc, lengths)

    def _emit_final(self, enc: Tensor, lengths: Tensor) -> None:
        """Decodes the whole utterance's encoder frames ``(1, T, D)`` again (the exact final pass)."""
        lp = self.head(enc)[0]
        self._log_probs = [lp]
        ids = greedy_decode(lp[None], lengths, blank=self.tokenizer.blank)[0]
        self._ids, self._prev = ids, int(lp[-1].argmax()) if lp.size(0) else -1
        self._text = self.tokenizer.decode(ids)


class StreamingTransducer(StreamingTranscriber):
    """Incremental greedy decoding of one utterance with a unidirectional RNN transducer
    (:class:`pipelines.transducer.TransducerSpeechRecognizer`): the prediction network's state and the tokens
    emitted so far carry across chunks, so with ``normalize`` ``global`` or ``none`` the text produced chunk by
    chunk equals the offline greedy transcript."""

    def reset(self) -> None:
        super().reset()
        self._enc: list[Tensor] = []
        self._search: dict = {}

    @property
    def log_probs(self) -> Tensor:  # the transducer has no per-frame distribution of its own
        raise AttributeError("a transducer has no per-frame log-probabilities; decode_final() rescores its frames")

    def _emit(self, enc: Tensor) -> str:
        self._enc.append(enc[0])
        self._ids = greedy_search(self.model.model, enc, torch.tensor([enc.size(1)]),
                                  max_symbols=self.model.hparams.max_symbols, state=self._search)[0]
        return self._set_text()

    def _emit_final(self, enc: Tensor, lengths: Tensor) -> None:
        self._enc, self._search, self._text = [], {}, ""
        self._emit(enc[:, : int(lengths[0])])

    def decode_final(self, decoder=None) -> str:
        if decoder is None or not self._enc:
            return self._text
        enc = torch.cat(self._enc)[None]
        return self.tokenizer.decode(decoder.decode(self.model.model, enc, torch.tensor([enc.size(1)]))[0])


# Below this many steps ATen's own LSTM/GRU kernel is faster on CPU than oneDNN's, whose every call costs
# ~2 ms of setup (measured for a 256-unit LSTM: 7 steps 0.7 vs 2.6 ms, 34 steps 2.5 vs 2.2 ms).
_ONEDNN_MIN_STEPS = 32


@contextlib.contextmanager
def _short_sequence_kernels(x: Tensor):
    """Turns oneDNN off for the recurrent kernels of a short CPU chunk (same results to float32 rounding)."""
    if x.device.type != "cpu" or x.size(1) >= _ONEDNN_MIN_STEPS or not torch.backends.mkldnn.enabled:
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True


def stream_file_chunks(wav: Tensor, chunk_samples: int):
    """Successive chunks of ``chunk_samples`` samples (the last may be shorter)."""
    step = max(int(chunk_samples), 1)
    for start in range(0, wav.numel(), step):
        yield wav[start:start + step]
