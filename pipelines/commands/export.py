"""``rnnlab export``: a CTC checkpoint as a standalone waveform -> log-probabilities model (TorchScript, ONNX).

Usage: rnnlab export --ckpt CKPT --out DIR [--formats torchscript onnx] [--opset N] [--onnx-exporter legacy|dynamo]

The exported graph is the eval-mode model (no SpecAugment, speed perturbation or dropout) with the log-mel
frontend inside, so it takes raw waveforms at the model's sample rate. The STFT is computed as a strided
``conv1d`` with the windowed DFT basis over the reflect-padded signal, which TorchScript, every ONNX exporter
and every runtime support. On real speech the exported log-probabilities differ from PyTorch's by float32
rounding only (measured: up to 4e-5, as much as the float32 PyTorch model differs from a float64 evaluation).

ONNX is written by ``torch.onnx.export(dynamo=False)``, which maps ``nn.LSTM``/``nn.GRU`` to ONNX
``LSTM``/``GRU`` with dynamic batch and time axes. ``dynamo=True`` (``--onnx-exporter dynamo``, needs the
``onnxscript`` package) fails for these models with torch 2.11: ``torch.export`` unrolls the recurrence over
time, which cannot keep the time axis dynamic (``GuardOnDataDependentSymNode`` inside ``nn.LSTM``; a bare
``nn.LSTM`` exports, but with its time axis fixed to the example's length). Every export is checked against
the PyTorch model on several lengths before it is kept.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modules.frontend import normalize_utterances
from pipelines.commands._common import ArgumentParser, fail, first_line, quiet

FORMATS = ("torchscript", "onnx")
DEFAULT_OPSET = 17
INPUT_NAMES = ["waveforms", "lengths"]
OUTPUT_NAMES = ["log_probs", "output_lengths"]
FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
# What an export writes into its --out directory (the formats asked for, then the files that describe them).
OUTPUTS = (*FILES.values(), "tokenizer.json", "export.json", "README.md")
# Largest |exported - PyTorch| accepted on valid frames when an export checks itself (float32 rounding is ~1e-6).
CHECK_TOLERANCE = 1e-3


class ExportableCTC(nn.Module):
    """The eval-mode CTC acoustic model in ops that trace and export with dynamic batch and time axes.

    Same numbers as :class:`modules.ctc.CTCAcousticModel` in eval mode: reflect-padded STFT (a strided
    ``conv1d`` with the windowed DFT basis), power, mel filterbank, log, the frontend's normalisation over
    valid frames, frame stacking without data-dependent branches, then the model's own encoder and head.

    Shape:
        - waveforms ``(B, S)`` float32 (zero-padded, ``S >= n_fft // 2 + 1``), lengths ``(B,)`` int64 samples
        - log_probs ``(B, T, V)`` float32, output_lengths ``(B,)`` int64 frames (rows are zero past their length
          before the log-softmax, so only the first ``output_lengths[b]`` frames are meaningful)
    """

    def __init__(self, acoustic_model: nn.Module) -> None:
        super().__init__()
        frontend = acoustic_model.frontend
        encoder = copy.deepcopy(acoustic_model.encoder).eval()
        if encoder.implementation != "fused" or encoder.pyramid_layers:
            raise ValueError("export supports fused encoders without pyramid layers")
        if frontend.normalize not in ("utterance", "global", "none"):
            raise ValueError(f"export does not know the frontend normalisation {frontend.normalize!r}")
        encoder.length_handling = "reverse"  # same numbers as "packed", in plain tensor ops
        self.encoder = encoder
        self.head = copy.deepcopy(acoustic_model.head).eval()
        spec = frontend.melspec.spectrogram
        self.n_fft = int(spec.n_fft)
        self.hop_length = int(frontend.hop_length)
        self.stack_frames = int(frontend.stack_frames)
        self.normalize = frontend.normalize
        if self.normalize == "global":
            self.register_buffer("feat_mean", frontend.feat_mean.detach().clone().float(), persistent=False)
            self.register_buffer("feat_std", (frontend.feat_var.detach().float() + 1e-5).sqrt(), persistent=False)
        self.sample_rate = int(frontend.sample_rate)
        window = spec.window.detach().double()
        # torch.stft centres a window shorter than n_fft inside n_fft zeros.
        left = (self.n_fft - window.numel()) // 2
        full = torch.zeros(self.n_fft, dtype=torch.float64)
        full[left:left + window.numel()] = window
        bins = self.n_fft // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64),
                                          torch.arange(self.n_fft, dtype=torch.float64)) / self.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * full  # (2 * bins, n_fft): real, imaginary
        self.register_buffer("dft_basis", basis.float().unsqueeze(1), persistent=False)
        self.register_buffer("mel_fb", frontend.melspec.mel_scale.fb.detach().clone().float(), persistent=False)
        self.eval()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.n_fft // 2
        x = F.pad(waveforms.float().unsqueeze(1), (half, half), mode="reflect")  # (B, 1, S + n_fft)
        spec = F.conv1d(x, self.dft_basis, stride=self.hop_length)  # (B, 2 * bins, T)
        bins = half + 1
        power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
        feats = torch.matmul(power.transpose(1, 2), self.mel_fb).clamp_min(1e-10).log()  # (B, T, n_mels)
        steps = feats.size(1)
        frame_lengths = torch.clamp(torch.div(lengths, self.hop_length, rounding_mode="floor") + 1, max=steps)
        mask = (torch.arange(steps, device=feats.device)[None, :] < frame_lengths[:, None]).unsqueeze(-1)
        if self.normalize == "utterance":
            feats = normalize_utterances(feats, mask, frame_lengths)
        elif self.normalize == "global":
            feats = (feats - self.feat_mean) / self.feat_std
        feats = feats * mask
        k = self.stack_frames
        if k > 1:
            # Zero-pad to a multiple of k, then concatenate each group of k frames.
            stacked = (steps + k - 1) // k  # traced as a size expression, not a constant
            feats = F.pad(feats, (0, 0, 0, k - 1))[:, : stacked * k]
            feats = feats.reshape(feats.size(0), -1, k * feats.size(2))
            frame_lengths = torch.div(frame_lengths + k - 1, k, rounding_mode="floor")
        enc, enc_lengths = self.encoder(feats, frame_lengths)
        return self.head(enc), enc_lengths


# -- checks ------------------------------------------------------------------------------------------------------


def check_inputs(sample_rate: int, n_fft: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic speech-like test batches: single rows of several lengths and a padded batch of two."""
    gen = torch.Generator().manual_seed(seed)

    def signal(n: int) -> torch.Tensor:
        t = torch.arange(n) / sample_rate
        tones = sum(torch.sin(2 * math.pi * f * t * (1 + 0.1 * torch.sin(2 * math.pi * 3 * t)))
                    for f in (180.0, 730.0, 2300.0))
        return 0.1 * tones * (0.6 + 0.4 * torch.sin(2 * math.pi * 2 * t)) + 0.01 * torch.randn(n, generator=gen)

    out = []
    for seconds in (0.3, 1.0, 2.7):
        n = max(int(seconds * sample_rate), n_fft // 2 + 1)
        out.append((signal(n)[None], torch.tensor([n])))
    long, short = int(1.3 * sample_rate), int(0.55 * sample_rate)
    batch = torch.zeros(2, long)
    batch[0], batch[1, :short] = signal(long), signal(short)
    out.append((batch, torch.tensor([long, short])))
    return out


def max_valid_diff(ref: torch.Tensor, ref_lengths: torch.Tensor, out, out_lengths) -> float:
    """Largest absolute difference over each row's valid frames; raises if the output lengths differ."""
    out, out_lengths = torch.as_tensor(out), torch.as_tensor(out_lengths)
    if not torch.equal(ref_lengths.cpu().long(), out_lengths.cpu().long()):
        raise ValueError(f"output lengths differ: {ref_lengths.tolist()} vs {out_lengths.tolist()}")
    return max(float((ref[b, :n] - out[b, :n]).abs().max()) if n else 0.0
               for b, n in enumerate(ref_lengths.tolist()))


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lp, ol = session.run(OUTPUT_NAMES, {"waveforms": waveforms.float().numpy(), "lengths": lengths.long().numpy()})
    return torch.from_numpy(lp), torch.from_numpy(ol)


# -- exporters ---------------------------------------------------------------------------------------------------


def export_torchscript(module: ExportableCTC, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    """Traces ``module`` on ``example`` (sizes are traced, so batch and time stay dynamic) and saves it."""
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, str(path))


def _onnx_dims(path: Path) -> dict[str, list]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


def export_onnx(module: ExportableCTC, example: tuple[torch.Tensor, torch.Tensor], path: Path, *,
                opset: int = DEFAULT_OPSET, exporter: str = "legacy") -> dict:
    """Writes ``module`` as ONNX with dynamic batch and time axes; returns ``{"exporter", "opset"}``.

    ``exporter``: ``legacy`` (``torch.onnx.export(dynamo=False)``) or ``dynamo`` (``dynamo=True``; raises
    ``ValueError`` when it fails or fixes the batch or time axis).
    """
    if exporter == "dynamo":
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise ValueError("--onnx-exporter dynamo needs the onnxscript package (pip install onnxscript)")
        opset = max(opset, 18)  # the lowest opset the dynamo exporter writes
        try:
            batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples", min=module.n_fft)
            with torch.no_grad(), quiet():
                torch.onnx.export(module, example, str(path), dynamo=True, opset_version=opset,
                                  input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, external_data=False,
                                  dynamic_shapes=({0: batch, 1: samples}, {0: batch}), verbose=False)
            dims = _onnx_dims(path)
            fixed = [f"{name}[{i}]" for name in ("waveforms", "log_probs") for i in (0, 1)
                     if not isinstance(dims[name][i], str)]
            if fixed:
                raise ValueError(f"the graph has fixed sizes for {', '.join(fixed)}")
        except Exception as e:  # noqa: BLE001 - reported as one line
            path.unlink(missing_ok=True)
            raise ValueError(f"ONNX export with dynamo=True failed ({first_line(e)}); "
                             f"use --onnx-exporter legacy") from None
        return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset}
    if exporter != "legacy":
        raise ValueError(f"unknown ONNX exporter {exporter!r} (expected legacy|dynamo)")
    axes = {"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"}, "output_lengths": {0: "batch"}}
    with torch.no_grad(), quiet():
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, dynamic_axes=axes, do_constant_folding=True)
    return {"exporter": "torch.onnx.export(dynamo=False)", "opset": opset}


# -- the command -------------------------------------------------------------------------------------------------


def tokenizer_spec(tokenizer) -> dict:
    """The vocabulary as plain data, with the decoding rule, for decoding without rnnlab."""
    spec = {
        "kind": tokenizer.kind,
        "blank": int(tokenizer.blank),
        "tokens": list(tokenizer.tokens),
        "greedy_decoding": "per frame argmax over the first output_lengths[b] frames; merge consecutive repeats; "
                           "drop the blank id; concatenate the tokens",
    }
    if tokenizer.kind == "sentencepiece":
        spec["word_start"] = "\u2581"
        spec["greedy_decoding"] += "; replace '\u2581' by a space; collapse runs of spaces; strip"
    spec["rnnlab_tokenizer"] = tokenizer.to_dict()
    return spec


def _readme(meta: dict, tokenizer_kind: str) -> str:
    files = "\n".join(f"- `{f}`" for f in [*meta["files"].values(), "tokenizer.json", "export.json"])
    join = 'text = "".join(tok["tokens"][i] for i in ids)'
    if tokenizer_kind == "sentencepiece":
        join += '\ntext = " ".join(text.replace("\u2581", " ").split())'
    meta = {**meta, "join": join + "\nprint(text)"}
    return f"""# Exported CTC speech recogniser

Exported by `rnnlab export` from `{meta['checkpoint']}`.

{files}

Input: mono float32 audio at **{meta['sample_rate']} Hz** in [-1, 1]. The model computes its own log-mel features.

| name | type | shape | meaning |
|---|---|---|---|
| `waveforms` | float32 | `[batch, samples]` | zero-padded waveforms (at least {meta['min_samples']} samples) |
| `lengths` | int64 | `[batch]` | valid samples per row |
| `log_probs` | float32 | `[batch, frames, {meta['vocab_size']}]` | per-frame log-probabilities over `tokenizer.json` tokens |
| `output_lengths` | int64 | `[batch]` | valid frames per row ({meta['frame_rate']:g} frames per second) |

Greedy decoding: for each row take the argmax of the first `output_lengths[b]` frames, merge consecutive
repeats, drop the blank (id {meta['blank']}) and concatenate the tokens (see `tokenizer.json`).

```python
import json, numpy as np, onnxruntime as ort, soundfile as sf
tok = json.load(open("tokenizer.json"))
sess = ort.InferenceSession("model.onnx")
wav, sr = sf.read("audio.wav", dtype="float32")  # mono, {meta['sample_rate']} Hz
lp, n = sess.run(None, {{"waveforms": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)}})
best = lp[0, : n[0]].argmax(-1)
ids = [int(i) for j, i in enumerate(best) if i != tok["blank"] and (j == 0 or i != best[j - 1])]
{meta['join']}
```

TorchScript: `m = torch.jit.load("model.ts"); log_probs, output_lengths = m(waveforms, lengths)`.
"""


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *, formats: tuple[str, ...] = FORMATS,
                      opset: int = DEFAULT_OPSET, onnx_exporter: str = "legacy") -> dict:
    """Exports a CTC checkpoint to ``out_dir``; returns what ``export.json`` records.

    Raises:
        FileNotFoundError: no checkpoint at ``ckpt``.
        ValueError: not a CTC checkpoint, an unsupported model, or an export that does not match PyTorch.
    """
    from pipelines.base import load_module
    from pipelines.ctc import CTCSpeechRecognizer

    model = load_module(ckpt, map_location="cpu")
    if not isinstance(model, CTCSpeechRecognizer):
        raise ValueError(f"{ckpt} is a {type(model).__name__} checkpoint; export needs a CTC speech recogniser "
                         f"(pipelines.ctc.CTCSpeechRecognizer)")
    model.eval()
    module = ExportableCTC(model.model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = check_inputs(module.sample_rate, module.n_fft)
    with torch.no_grad():
        refs = [model(w, n) for w, n in cases]
    example = cases[-1]
    meta = {
        "format": 1,
        "checkpoint": str(ckpt),
        "model": "CTC speech recogniser: waveform -> log-mel -> recurrent encoder -> per-frame log-probabilities",
        "sample_rate": module.sample_rate,
        "frame_rate": model.model.frontend.frame_rate,
        "samples_per_frame": module.hop_length * module.stack_frames,
        "min_samples": module.n_fft // 2 + 1,
        "vocab_size": len(model.tokenizer),
        "blank": int(model.tokenizer.blank),
        "bidirectional": bool(model.hparams.bidirectional),
        "inputs": [
            {"name": "waveforms", "dtype": "float32", "shape": ["batch", "samples"],
             "meaning": f"zero-padded mono audio at {module.sample_rate} Hz"},
            {"name": "lengths", "dtype": "int64", "shape": ["batch"], "meaning": "valid samples per row"}],
        "outputs": [
            {"name": "log_probs", "dtype": "float32", "shape": ["batch", "frames", len(model.tokenizer)],
             "meaning": "per-frame log-probabilities over tokenizer.json tokens"},
            {"name": "output_lengths", "dtype": "int64", "shape": ["batch"], "meaning": "valid frames per row"}],
        "files": {},
        "max_abs_diff_vs_pytorch": {},
        "torch_version": torch.__version__,
    }
    # Files are written to a scratch directory inside `out` and moved in only when every format checked out.
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        for fmt in formats:
            path = Path(tmp) / FILES[fmt]
            if fmt == "torchscript":
                export_torchscript(module, example, path)
                loaded = torch.jit.load(str(path))
                with torch.no_grad():
                    outs = [loaded(w, n) for w, n in cases]
            else:
                meta["onnx"] = export_onnx(module, example, path, opset=opset, exporter=onnx_exporter)
                session = onnx_session(path)
                outs = [run_onnx(session, w, n) for w, n in cases]
            diff = max(max_valid_diff(r[0], r[1], *o) for r, o in zip(refs, outs, strict=True))
            if not diff <= CHECK_TOLERANCE:
                raise ValueError(f"the {fmt} export differs from the PyTorch model by {diff:.2e} "
                                 f"(limit {CHECK_TOLERANCE})")
            meta["files"][fmt] = path.name
            meta["max_abs_diff_vs_pytorch"][fmt] = diff
        (Path(tmp) / "tokenizer.json").write_text(
            json.dumps(tokenizer_spec(model.tokenizer), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (Path(tmp) / "export.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        (Path(tmp) / "README.md").write_text(_readme(meta, model.tokenizer.kind), encoding="utf-8")
        for f in Path(tmp).iterdir():
            os.replace(f, out / f.name)
    return meta


def main(argv: list[str]) -> int:
    ap = ArgumentParser(prog="rnnlab export",
                        description="Export a CTC checkpoint as a waveform -> log-probabilities model.")
    ap.add_argument("--ckpt", required=True, help="checkpoint of a CTC run")
    ap.add_argument("--out", required=True,
                    help="output directory (created if needed; files of the same names in it are replaced)")
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    ap.add_argument("--onnx-exporter", choices=["legacy", "dynamo"], default="legacy",
                    help="torch.onnx.export with dynamo=False (default) or dynamo=True (needs onnxscript; fails "
                         "for recurrent models with torch 2.11)")
    args = ap.parse_args(argv)
    formats = tuple(dict.fromkeys(args.formats))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        # --out names a directory; an existing file there is never replaced (it may be the user's work).
        fail("export", f"--out {args.out} is an existing file; export writes a directory ({', '.join(OUTPUTS)}): "
                       f"give a new or existing directory")
    try:
        meta = export_checkpoint(args.ckpt, args.out, formats=formats, opset=args.opset,
                                 onnx_exporter=args.onnx_exporter)
    except (FileNotFoundError, ValueError) as e:
        fail("export", str(e))
    except OSError as e:
        fail("export", f"cannot write to {args.out}: {e.strerror or e}")
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in meta["max_abs_diff_vs_pytorch"].items())
    how = f" (ONNX: {meta['onnx']['exporter']}, opset {meta['onnx']['opset']})" if "onnx" in meta else ""
    print(f"[rnnlab] exported {', '.join(meta['files'].values())} to {args.out}; max |diff| vs PyTorch: {diffs}{how}",
          file=sys.stderr)
    return 0


# -- benchmark ---------------------------------------------------------------------------------------------------


def bench_export(ckpt: str | Path, files: list[str | Path], *, out_dir: str | Path | None = None,
                 onnx_exporter: str = "legacy", warmup: int = 1, repeats: int = 3) -> dict:
    """Exports ``ckpt`` and times batch-1 greedy transcription of ``files`` with PyTorch eager, TorchScript and
    onnxruntime, each on one thread.

    Each backend transcribes every file ``repeats`` times, passes interleaved across backends (after ``warmup``
    runs on the first file); the fastest pass counts, in wall-clock and in process CPU time (the latter is
    steadier when other jobs share the core). Returns ``{"checkpoint", "files", "audio_s", "threads",
    "seconds", "rtf", "cpu_seconds", "rtf_cpu"`` (per backend; RTF = processing seconds / audio seconds)
    ``, "max_abs_diff_vs_pytorch", "same_text_as_pytorch", "onnx"}``.
    """
    from data.audio import AudioRef, load_audio
    from pipelines.base import load_module

    if not files:
        raise ValueError("bench_export needs at least one audio file")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            if out_dir is None:
                out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnlab-export-"))
            meta = export_checkpoint(ckpt, out_dir, onnx_exporter=onnx_exporter)
            model = load_module(ckpt, map_location="cpu").eval()
            scripted = torch.jit.load(str(Path(out_dir) / FILES["torchscript"]))
            session = onnx_session(Path(out_dir) / FILES["onnx"], threads=1)
            inputs = [(w[None], torch.tensor([w.numel()]))
                      for w in (load_audio(AudioRef(path=str(f)), model.hparams.sample_rate) for f in files)]
            backends = {"pytorch": model, "torchscript": scripted,
                        "onnxruntime": lambda w, n: run_onnx(session, w, n)}
            seconds = dict.fromkeys(backends, math.inf)
            cpu_seconds = dict.fromkeys(backends, math.inf)
            outputs: dict[str, list] = {}
            with torch.no_grad():
                for fn in backends.values():
                    for _ in range(warmup):
                        fn(*inputs[0])
                for _ in range(max(repeats, 1)):  # passes interleaved, so load changes hit every backend alike
                    for name, fn in backends.items():
                        results, t0, c0 = [], time.perf_counter(), time.process_time()
                        for w, n in inputs:
                            lp, ol = fn(w, n)
                            results.append((lp, ol, model.decode_greedy(lp, ol)[0]))
                        seconds[name] = min(seconds[name], time.perf_counter() - t0)
                        cpu_seconds[name] = min(cpu_seconds[name], time.process_time() - c0)
                        outputs[name] = results
            ref = outputs["pytorch"]
            audio_s = sum(int(n) for _, n in inputs) / model.hparams.sample_rate
            others = [k for k in backends if k != "pytorch"]
            return {
                "checkpoint": str(ckpt),
                "files": len(inputs),
                "audio_s": audio_s,
                "threads": 1,
                "seconds": seconds,
                "rtf": {k: v / audio_s for k, v in seconds.items()},
                "cpu_seconds": cpu_seconds,
                "rtf_cpu": {k: v / audio_s for k, v in cpu_seconds.items()},
                "max_abs_diff_vs_pytorch": {k: max(max_valid_diff(r[0], r[1], o[0], o[1])
                                                   for r, o in zip(ref, outputs[k], strict=True)) for k in others},
                "same_text_as_pytorch": {k: all(r[2] == o[2] for r, o in zip(ref, outputs[k], strict=True))
                                         for k in others},
                "onnx": meta.get("onnx"),
            }
    finally:
        torch.set_num_threads(threads)
