"""For the server tests: tiny models (random CTC, a tone keyword classifier, a fake one, slots, G2P), audio, a live server."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from data.g2p import G2PVocab
from data.slots import collate_slots
from data.text import CharTokenizer, Vocabulary
from pipelines.classifier import UtteranceClassifier
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.seq2seq import G2PModel
from pipelines.serve import Limits
from pipelines.slot_filling import SlotFillingModule
from tests.fixtures.slot_corpus import _example

RATE = 16000
# Small limits, so that each one can be hit cheaply.
LIMITS = Limits(max_upload_bytes=400 * 1024, max_audio_seconds=6.0, max_text_chars=80, max_streams=2,
                stream_idle_seconds=5.0, workers=2)
KEYWORD_LABELS = ["yes", "no", "unknown", "silence"]
TONES = {"yes": 500.0, "no": 2000.0}  # the "words" of the tone classifier


def speechlike(seconds: float, seed: int, rate: int = RATE) -> torch.Tensor:
    """A voiced-looking signal (three harmonics under a slow envelope, a little noise)."""
    gen = torch.Generator().manual_seed(seed)
    n = int(round(seconds * rate))
    t = torch.arange(n) / rate
    voiced = sum(torch.sin(2 * math.pi * f * t + seed) / (i + 1) for i, f in enumerate((140.0, 800.0, 2400.0)))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 2.3 * t + seed)
    return 0.2 * voiced * envelope + 0.02 * torch.randn(n, generator=gen)


def tiny_ctc(*, bidirectional: bool, seed: int = 0) -> CTCSpeechRecognizer:
    """Random weights; the output layer scaled up so that greedy decoding emits many different characters.

    The unidirectional one uses ``normalize=global`` (training-like statistics), so it streams exactly.
    """
    torch.manual_seed(seed)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=3, hidden_size=32,
                                num_layers=2, bidirectional=bidirectional, dropout=0.0,
                                normalize="utterance" if bidirectional else "global")
    fe = model.model.frontend
    if not bidirectional:
        fe.feat_mean.copy_(torch.linspace(-8.0, -2.0, 40))
        fe.feat_var.copy_(torch.linspace(2.0, 6.0, 40))
    with torch.no_grad():
        model.model.head.proj.weight.mul_(10.0)
    return model.eval()


class FakeKeywords(nn.Module):
    """A keyword "classifier" that always answers ``label`` with probability ``score`` (deterministic)."""

    def __init__(self, label: str = "yes", score: float = 0.99, labels=tuple(KEYWORD_LABELS)) -> None:
        super().__init__()
        self.labels = list(labels)
        self.sample_rate = RATE  # what a model's frontend expects (RnnlabModule.sample_rate)
        rest = (1.0 - score) / (len(self.labels) - 1)
        probs = torch.full((len(self.labels),), rest)
        probs[self.labels.index(label)] = score
        self.register_buffer("logits", probs.log())
        self.calls: list[int] = []  # the batch size of every forward call

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.calls.append(waveforms.size(0))
        return self.logits.expand(waveforms.size(0), -1).clone()

    def classify_waveforms(self, waveforms, batch_size: int = 32) -> list[str]:
        return [self.labels[int(self.logits.argmax())] for _ in waveforms]


def tone(label: str, seconds: float, rate: int = RATE) -> torch.Tensor:
    """A tone "word" (``yes`` 500 Hz, ``no`` 2 kHz) with smooth ends."""
    t = torch.arange(int(seconds * rate)) / rate
    ramp = torch.clamp(torch.minimum(t, seconds - t) / 0.03, 0.0, 1.0)
    return 0.3 * ramp * torch.sin(2 * math.pi * TONES[label] * t)


def quiet(seconds: float, rate: int = RATE, seed: int = 0) -> torch.Tensor:
    """Light background noise."""
    gen = torch.Generator().manual_seed(seed + 1000)
    return 0.003 * torch.randn(int(seconds * rate), generator=gen)


def scene(parts: list[tuple[str | None, float]], rate: int = RATE, seed: int = 0) -> torch.Tensor:
    """Background noise throughout, with a tone word for each ``(label, seconds)`` part (``None``: quiet)."""
    total = sum(seconds for _, seconds in parts)
    out = quiet(total, rate, seed)
    start = 0
    for label, seconds in parts:
        if label is not None:
            w = tone(label, seconds, rate)
            out[start: start + w.numel()] += w
        start += int(seconds * rate)
    return out


def _clip(label: str, rng: random.Random, rate: int) -> torch.Tensor:
    """One 1 s training clip: a tone somewhere in it, noise bursts (unknown) or quiet (silence)."""
    seed = rng.randrange(1 << 30)
    clip = quiet(1.0, rate, seed)
    if label in TONES:
        length = rng.uniform(0.3, 0.7)
        start = rng.uniform(0.0, 1.0 - length)
        w = tone(label, length, rate)
        clip[int(start * rate): int(start * rate) + w.numel()] += w
    elif label == "unknown":
        gen = torch.Generator().manual_seed(seed)
        length = rng.uniform(0.3, 0.7)
        start = int(rng.uniform(0.0, 1.0 - length) * rate)
        clip[start: start + int(length * rate)] += 0.2 * torch.randn(int(length * rate), generator=gen)
    return clip


def trained_keywords(steps: int = 60, seed: int = 0) -> UtteranceClassifier:
    """A tiny classifier that learns the tone "keywords" (a few seconds on a CPU)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = UtteranceClassifier(vocab={"labels": KEYWORD_LABELS}, sample_rate=RATE, n_mels=20, hidden_size=16,
                                num_layers=1, dropout=0.0, spec_augment=False, pooling="mean")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        labels = [KEYWORD_LABELS[i % 4] for i in range(16)]
        wavs = torch.stack([_clip(lab, rng, RATE) for lab in labels])
        target = torch.tensor([KEYWORD_LABELS.index(lab) for lab in labels])
        loss = F.cross_entropy(model(wavs, torch.full((16,), RATE)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def trained_slots(steps: int = 60, seed: int = 0) -> SlotFillingModule:
    """A tiny slot tagger trained on the generated flight corpus (``tests/fixtures/slot_corpus.py``)."""
    rng = random.Random(seed)
    rows = [_example(rng) for _ in range(40)]
    words = Vocabulary.build((w for r in rows for w in r["tokens"]), specials=("<pad>", "<unk>"), unk="<unk>")
    tags = sorted({t for r in rows for t in r["tags"]})
    intents = sorted({r["intent"] for r in rows})
    items = [{"id": i, "word_ids": words.encode(r["tokens"]), "tag_ids": [tags.index(t) for t in r["tags"]],
              "intent_id": intents.index(r["intent"]), "words": r["tokens"], "tags": r["tags"], "intent": r["intent"]}
             for i, r in enumerate(rows)]
    batch = collate_slots(items)
    torch.manual_seed(seed)
    model = SlotFillingModule(vocab={"words": words.to_dict(), "tags": tags, "intents": intents}, embedding_dim=16,
                              encoder={"hidden_size": 16}, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"], batch["words"])
        loss = (model.model.tag_loss(tag_logits, batch["tags"], batch["lengths"])
                + F.cross_entropy(intent_logits, batch["intent"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tiny_g2p(seed: int = 0) -> G2PModel:
    """Random weights over the letters a-z and a few ARPAbet phonemes."""
    torch.manual_seed(seed)
    vocab = G2PVocab(["<pad>", *"abcdefghijklmnopqrstuvwxyz'"], ["AA", "AE", "B", "K", "D", "IY", "T", "S"])
    return G2PModel(vocab=vocab.to_dict(), embed_size=8, encoder={"hidden_size": 16, "num_layers": 1},
                    speller_hidden=16, attention_size=8, dropout=0.0).eval()


def all_models() -> dict:
    """Every role: ``asr`` bidirectional CTC, ``stream`` unidirectional CTC, trained keywords and slots, G2P."""
    return {"asr": tiny_ctc(bidirectional=True), "stream": tiny_ctc(bidirectional=False, seed=1),
            "keywords": trained_keywords(), "slots": trained_slots(), "g2p": tiny_g2p()}


def wav_bytes(wav: torch.Tensor, rate: int = RATE, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    """``wav`` encoded as a file (16-bit WAV by default)."""
    buf = io.BytesIO()
    sf.write(buf, wav.numpy(), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def decoded(data: bytes, rate: int = RATE) -> torch.Tensor:
    """What the server reads from ``data``: the same reader, the same resampling."""
    from pipelines.inference import read_audio_bytes

    return read_audio_bytes(data, rate)


def pcm16(wav: torch.Tensor) -> bytes:
    """Little-endian int16 PCM, as the page's AudioWorklet sends it."""
    return (wav.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> torch.Tensor:
    """The float samples the server makes of :func:`pcm16` bytes."""
    return torch.from_numpy(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)


def live_server(app):
    """Serves ``app`` with uvicorn on a free loopback port in a thread; yields the port."""
    from pipelines.serve.threaded import serve_in_thread

    return serve_in_thread(app, backlog=16, start_timeout=20, ws="wsproto")
