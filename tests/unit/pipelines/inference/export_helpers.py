"""For the export tests (library and command): speech-like audio, check batches, tiny CTC and transducer models,
and the exported graphs as runners."""

from __future__ import annotations

import math

import torch

from data.text import CharTokenizer
from modules.transducer import greedy_search
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.inference.export_graphs import (
    TRANSDUCER_GRAPHS,
    greedy_with_graphs,
    onnx_runner,
    onnx_session,
    torch_runner,
)
from pipelines.transducer import TransducerSpeechRecognizer

RATE = 16000
TOL = 1e-4


def speechlike(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    voiced = sum(torch.sin(2 * math.pi * f * t + seed) / (i + 1) for i, f in enumerate((150.0, 900.0, 2500.0)))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.1 * t + seed)
    return 0.2 * voiced * envelope + 0.02 * torch.randn(n, generator=gen)


def batch(*wavs):
    lengths = torch.tensor([w.numel() for w in wavs])
    out = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        out[i, : w.numel()] = w
    return out, lengths


CASES = [batch(speechlike(0.3, 1)), batch(speechlike(1.0, 2)), batch(speechlike(2.7, 3)),
         batch(speechlike(1.0, 4), speechlike(0.37, 5))]


def tiny_ctc() -> CTCSpeechRecognizer:
    """A tiny 2x BiLSTM CTC model with dropout and SpecAugment on (training only)."""
    torch.manual_seed(0)
    return CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=2, hidden_size=32,
                               num_layers=2, dropout=0.3, spec_augment=True, speed_perturb=[0.9, 1.0, 1.1])


def reference(model, waveforms, lengths):
    with torch.no_grad():
        return model(waveforms, lengths)


TRANSDUCER_FILES = {"torchscript": {"encoder": "encoder.ts", "predictor": "predictor.ts", "joiner": "joiner.ts"},
                    "onnx": {"encoder": "encoder.onnx", "predictor": "predictor.onnx", "joiner": "joiner.onnx"}}


def tiny_transducer(**kw) -> TransducerSpeechRecognizer:
    torch.manual_seed(0)
    args = dict(vocab=CharTokenizer().to_dict(), n_mels=20, stack_frames=2, hidden_size=16, num_layers=2,
                dropout=0.0, spec_augment=False, pred_embed_size=8, pred_hidden_size=12, joiner_size=10,
                pred_dropout=0.0)
    args.update(kw)
    return TransducerSpeechRecognizer(**args)


def graph_runners(out, backend: str) -> dict:
    if backend == "onnxruntime":
        return {g: onnx_runner(onnx_session(out / f"{g}.onnx"), spec) for g, spec in TRANSDUCER_GRAPHS.items()}
    return {g: torch_runner(torch.jit.load(str(out / f"{g}.ts"))) for g in TRANSDUCER_GRAPHS}


def greedy_exported(runners: dict, meta: dict, waveforms, lengths) -> list[list[int]]:
    return greedy_with_graphs(runners["encoder"], runners["predictor"], runners["joiner"], waveforms.numpy(),
                              lengths.numpy(), blank=meta["blank"], max_symbols=meta["max_symbols"],
                              layers=meta["predictor"]["layers"], hidden_size=meta["predictor"]["hidden_size"])


def greedy_reference(model, waveforms, lengths) -> list[list[int]]:
    with torch.no_grad():
        enc, enc_lengths = model.model.encode(waveforms, lengths)
    return greedy_search(model.model, enc, enc_lengths, max_symbols=model.hparams.max_symbols)
