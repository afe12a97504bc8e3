"""A CTC or transducer checkpoint as standalone TorchScript and ONNX models (:func:`export_checkpoint`, what
``rnnlab export`` runs), and the timing of a CTC export's backends (:func:`bench_export`, what ``rnnlab bench``'s
``rtf`` section runs). The graphs, exporters and runners are :mod:`pipelines.inference.export_graphs`.

A CTC checkpoint (:class:`pipelines.ctc.CTCSpeechRecognizer`) becomes one graph, ``model.ts``/``model.onnx``:
waveforms -> per-frame log-probabilities. A transducer checkpoint
(:class:`pipelines.transducer.TransducerSpeechRecognizer`) becomes three graphs per format: ``encoder``
(waveforms -> projected encoder frames), ``predictor`` (one step of the prediction network: token and LSTM state
-> projected prediction and the next state) and ``joiner`` (one encoder frame and one prediction -> logits); the
greedy loop that drives them (:func:`greedy_with_graphs`, and the ``README.md`` written with the export, which
decodes with onnxruntime and numpy only) runs outside the graphs.

Every exported graph is the eval-mode model (no SpecAugment, speed perturbation or dropout); the log-mel
frontend is inside the CTC graph and the transducer's encoder graph, so they take raw waveforms at the model's
sample rate. The STFT is computed as a strided ``conv1d`` with the windowed DFT basis over the reflect-padded
signal, which TorchScript, every ONNX exporter and every runtime support. On real speech the exported
log-probabilities differ from PyTorch's by float32 rounding only (measured: up to 4e-5, as much as the float32
PyTorch model differs from a float64 evaluation).

ONNX is written by ``torch.onnx.export(dynamo=False)``, which maps ``nn.LSTM``/``nn.GRU`` to ONNX
``LSTM``/``GRU`` with dynamic batch and time axes. ``dynamo=True`` (``--onnx-exporter dynamo``, needs the
``onnxscript`` package) fails for these models with torch 2.11: ``torch.export`` unrolls the recurrence over
time, which cannot keep the time axis dynamic (``GuardOnDataDependentSymNode`` inside ``nn.LSTM``; a bare
``nn.LSTM`` exports, but with its time axis fixed to the example's length). Every export is checked against
the PyTorch model on several lengths before it is kept (a transducer's predictor and joiner on deterministic
random inputs, and its greedy decoding driven by the exported graphs must give the same tokens as
:func:`modules.transducer.greedy_search` on every check input).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from pipelines.inference.export_graphs import (
    CHECK_TOLERANCE,
    DEFAULT_OPSET,
    FILES,
    FORMATS,
    TRANSDUCER_FILES,
    TRANSDUCER_GRAPHS,
    ExportableCTC,
    ExportableJoiner,
    ExportablePredictor,
    ExportableTransducerEncoder,
    GraphSpec,
    Runner,
    check_inputs,
    export_onnx,
    export_torchscript,
    greedy_with_graphs,
    joiner_check_inputs,
    max_abs_diff,
    max_valid_diff,
    onnx_runner,
    onnx_session,
    predictor_check_inputs,
    run_onnx,
    torch_runner,
)

# -- export -----------------------------------------------------------------------------------------------------


def tokenizer_spec(tokenizer, decoding: str = "ctc") -> dict:
    """The vocabulary as plain data, with the decoding rule, for decoding without rnnlab.

    ``decoding``: ``ctc`` (per-frame argmax, merge repeats, drop blanks) or ``transducer`` (the greedy loop of
    the export's README.md).
    """
    if decoding == "ctc":
        rule = ("per frame argmax over the first output_lengths[b] frames; merge consecutive repeats; "
                "drop the blank id; concatenate the tokens")
    elif decoding == "transducer":
        rule = ("transducer greedy loop over the encoder, predictor and joiner graphs (see README.md); "
                "concatenate the emitted tokens (the blank id is never emitted)")
    else:
        raise ValueError(f"unknown decoding {decoding!r} (expected ctc|transducer)")
    spec = {
        "kind": tokenizer.kind,
        "blank": int(tokenizer.blank),
        "tokens": list(tokenizer.tokens),
        "greedy_decoding": rule,
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


# The greedy loop of a transducer export's README.md: onnxruntime and numpy (soundfile reads the audio).
# @RATE@ and @JOIN@ are filled in by _transducer_readme.
_TRANSDUCER_README_CODE = '''\
import json

import numpy as np
import onnxruntime as ort
import soundfile as sf

tok = json.load(open("tokenizer.json", encoding="utf-8"))
meta = json.load(open("export.json", encoding="utf-8"))
blank, max_symbols = meta["blank"], meta["max_symbols"]
layers, hidden = meta["predictor"]["layers"], meta["predictor"]["hidden_size"]
encoder, predictor, joiner = (ort.InferenceSession(f"{name}.onnx") for name in ("encoder", "predictor", "joiner"))


def predict(token, h, c):
    """One step of the prediction network: -> prediction (1, J), next h and c."""
    return predictor.run(None, {"tokens": np.array([token], dtype=np.int64), "h": h, "c": c})


wav, sr = sf.read("audio.wav", dtype="float32")
assert wav.ndim == 1 and sr == @RATE@, "mono audio at @RATE@ Hz"
enc, n = encoder.run(None, {"waveforms": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)})
zeros = np.zeros((layers, 1, hidden), dtype=np.float32)
pred, h, c = predict(meta["start_token"], zeros, zeros)  # start: the blank token and zero states
ids = []
for t in range(int(n[0])):  # frame-synchronous: at each frame emit tokens until blank wins
    for _ in range(max_symbols):
        logits = joiner.run(None, {"encoder_frame": enc[:, t], "prediction": pred})[0]
        k = int(logits[0].argmax())
        if k == blank:
            break  # next frame, same prediction
        ids.append(k)
        pred, h, c = predict(k, h, c)  # the prediction network reads emitted tokens only
@JOIN@
'''


def _transducer_readme(meta: dict, tokenizer_kind: str) -> str:
    files = "\n".join(f"- `{f}`" for fmt in meta["files"].values() for f in fmt.values())
    join = 'text = "".join(tok["tokens"][i] for i in ids)'
    if tokenizer_kind == "sentencepiece":
        join += '\ntext = " ".join(text.replace("\u2581", " ").split())'
    code = _TRANSDUCER_README_CODE.replace("@RATE@", str(meta["sample_rate"])).replace("@JOIN@", join + "\nprint(text)")
    pred, j, v = meta["predictor"], meta["joiner_size"], meta["vocab_size"]
    return f"""# Exported RNN transducer speech recogniser

Exported by `rnnlab export` from `{meta['checkpoint']}`.

{files}
- `tokenizer.json`
- `export.json`

Input: mono float32 audio at **{meta['sample_rate']} Hz** in [-1, 1]. The encoder computes its own log-mel
features. Three graphs (every `batch` axis is dynamic; `layers` = {pred['layers']}, `H` = {pred['hidden_size']}):

| graph | inputs | outputs |
|---|---|---|
| `encoder` | `waveforms` float32 `[batch, samples]` (zero-padded, at least {meta['min_samples']} samples), `lengths` int64 `[batch]` | `encoder_out` float32 `[batch, frames, {j}]`, `output_lengths` int64 `[batch]` ({meta['frame_rate']:g} frames per second; later frames are padding) |
| `predictor` | `tokens` int64 `[batch]`, `h` float32 `[layers, batch, H]`, `c` float32 `[layers, batch, H]` | `prediction` float32 `[batch, {j}]`, `h_out`, `c_out` (the next state) |
| `joiner` | `encoder_frame` float32 `[batch, {j}]`, `prediction` float32 `[batch, {j}]` | `logits` float32 `[batch, {v}]` over `tokenizer.json` tokens |

Greedy decoding, one utterance at a time: run the encoder once; start the predictor with the blank token (id
{meta['blank']}, `start_token` in `export.json`) and zero states. At each of the first `output_lengths[b]` frames,
join the frame with the current prediction and take the argmax: blank moves on to the next frame; any other
token is emitted and fed to the predictor (its output and state replace the current ones) and the same frame is
joined again, at most {meta['max_symbols']} tokens per frame (`max_symbols`). Concatenate the emitted tokens (see
`tokenizer.json`).

```python
{code}```

TorchScript: the same loop with `torch.jit.load("encoder.ts")` (and `predictor.ts`, `joiner.ts`):
`encoder_out, output_lengths = encoder(waveforms, lengths)`, `prediction, h, c = predictor(tokens, h, c)`,
`logits = joiner(encoder_frame, prediction)`.
"""


def _is_transducer(model) -> bool:
    from pipelines.transducer import TransducerSpeechRecognizer

    return isinstance(model, TransducerSpeechRecognizer)


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *, formats: tuple[str, ...] = FORMATS,
                      opset: int = DEFAULT_OPSET, onnx_exporter: str = "legacy") -> dict:
    """Exports a CTC or transducer checkpoint to ``out_dir``; returns what ``export.json`` records.

    Raises:
        FileNotFoundError: no checkpoint at ``ckpt``.
        ValueError: not a CTC or transducer checkpoint, an unsupported model, or an export that does not match
            PyTorch.
    """
    from pipelines.base import load_module
    from pipelines.ctc import CTCSpeechRecognizer

    model = load_module(ckpt, map_location="cpu")
    # A transducer is a CTCSpeechRecognizer too (its auxiliary CTC head): test for it first.
    if _is_transducer(model):
        return _export_transducer(model.eval(), ckpt, out_dir, formats=formats, opset=opset,
                                  onnx_exporter=onnx_exporter)
    if not isinstance(model, CTCSpeechRecognizer):
        raise ValueError(f"{ckpt} is a {type(model).__name__} checkpoint; export needs a CTC speech recogniser "
                         f"(pipelines.ctc.CTCSpeechRecognizer) or a transducer "
                         f"(pipelines.transducer.TransducerSpeechRecognizer)")
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
        "bidirectional": bool(model.model.encoder.bidirectional),
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
        _keep(Path(tmp), out, tokenizer_spec(model.tokenizer), meta, _readme(meta, model.tokenizer.kind))
    return meta


def _keep(tmp: Path, out: Path, tokenizer: dict, meta: dict, readme: str) -> None:
    """Writes the files that describe a checked export into ``tmp``, then moves everything into ``out``."""
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "export.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(readme, encoding="utf-8")
    for f in tmp.iterdir():
        os.replace(f, out / f.name)


def _io(graph: GraphSpec, shapes: dict[str, tuple[str, list, str]]) -> dict:
    """``{"inputs", "outputs"}`` of a graph for export.json: name, dtype, shape and meaning of each."""
    def entry(name: str) -> dict:
        dtype, shape, meaning = shapes[name]
        return {"name": name, "dtype": dtype, "shape": shape, "meaning": meaning}

    return {"inputs": [entry(n) for n in graph.inputs], "outputs": [entry(n) for n in graph.outputs]}


def _export_transducer(model, ckpt: str | Path, out_dir: str | Path, *, formats: tuple[str, ...], opset: int,
                       onnx_exporter: str) -> dict:
    """The transducer's encoder, predictor and joiner graphs, each checked against PyTorch, and their greedy
    decoding checked against :func:`modules.transducer.greedy_search`."""
    from modules.transducer import greedy_search

    acoustic = model.model
    graphs = {"encoder": ExportableTransducerEncoder(acoustic), "predictor": ExportablePredictor(acoustic),
              "joiner": ExportableJoiner(acoustic)}
    encoder, predictor = graphs["encoder"], graphs["predictor"]
    blank, max_symbols = int(acoustic.blank), int(model.hparams.max_symbols)
    layers, hidden = predictor.layers, predictor.hidden_size
    j, v = int(acoustic.joiner.enc_proj.out_features), len(model.tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = {"encoder": check_inputs(encoder.sample_rate, encoder.n_fft),
             "predictor": predictor_check_inputs(v, layers, hidden, blank=blank),
             "joiner": joiner_check_inputs(j)}
    with torch.no_grad():
        encoded = [acoustic.encode(w, n) for w, n in cases["encoder"]]
        refs = {"encoder": [(acoustic.joiner.project_encoder(e), n) for e, n in encoded],
                "predictor": [(acoustic.joiner.project_prediction(p), *state) for p, state in
                              (acoustic.predictor.step(t, (h, c)) for t, h, c in cases["predictor"])],
                "joiner": [(acoustic.joiner(e, p),) for e, p in cases["joiner"]]}
        ref_ids = [greedy_search(acoustic, e, n, max_symbols=max_symbols) for e, n in encoded]
    # Traced on batches of 2 (and the encoder on a padded one), checked on batches of 1, 2 and 5.
    examples = {"encoder": cases["encoder"][-1], "predictor": cases["predictor"][1], "joiner": cases["joiner"][1]}
    frames = f"valid frames per row ({acoustic.frontend.frame_rate:g} per second)"
    shapes = {
        "waveforms": ("float32", ["batch", "samples"], f"zero-padded mono audio at {encoder.sample_rate} Hz"),
        "lengths": ("int64", ["batch"], "valid samples per row"),
        "encoder_out": ("float32", ["batch", "frames", j],
                        "encoder frames through the joiner's encoder projection (only the first "
                        "output_lengths[b] frames of a row are meaningful)"),
        "output_lengths": ("int64", ["batch"], frames),
        "tokens": ("int64", ["batch"], "the last emitted token (start_token before the first)"),
        "h": ("float32", [layers, "batch", hidden], "LSTM hidden state (zeros before the first step)"),
        "c": ("float32", [layers, "batch", hidden], "LSTM cell state (zeros before the first step)"),
        "prediction": ("float32", ["batch", j], "prediction network output through the joiner's projection"),
        "h_out": ("float32", [layers, "batch", hidden], "the next hidden state"),
        "c_out": ("float32", [layers, "batch", hidden], "the next cell state"),
        "encoder_frame": ("float32", ["batch", j], "one frame of encoder_out"),
        "logits": ("float32", ["batch", v], "scores over tokenizer.json tokens (blank included)"),
    }
    meta = {
        "format": 1,
        "checkpoint": str(ckpt),
        "model": "RNN transducer speech recogniser: waveform -> log-mel -> recurrent encoder (encoder graph); "
                 "last emitted token -> LSTM prediction network (predictor graph); joiner (joiner graph); "
                 "the greedy loop runs outside the graphs (README.md)",
        "decoder": "transducer",
        "sample_rate": encoder.sample_rate,
        "frame_rate": acoustic.frontend.frame_rate,
        "samples_per_frame": encoder.hop_length * encoder.stack_frames,
        "min_samples": encoder.n_fft // 2 + 1,
        "vocab_size": v,
        "blank": blank,
        "start_token": blank,
        "max_symbols": max_symbols,
        "bidirectional": bool(model.model.encoder.bidirectional),
        "predictor": {"layers": layers, "hidden_size": hidden},
        "joiner_size": j,
        "graphs": {name: _io(spec, shapes) for name, spec in TRANSDUCER_GRAPHS.items()},
        "greedy_decoding": "per row: run the encoder; start the predictor with start_token and zero h, c; at each "
                           "of the first output_lengths[b] frames join the frame with the current prediction; "
                           "blank: next frame; another token: emit it, step the predictor on it, join the same "
                           "frame again (at most max_symbols tokens per frame)",
        "files": {},
        "max_abs_diff_vs_pytorch": {},
        "greedy_check": {"inputs": len(cases["encoder"]), "tokens": sum(len(r) for ids in ref_ids for r in ids),
                         "same_tokens_as_pytorch": {}},
        "torch_version": torch.__version__,
    }
    # Files are written to a scratch directory inside `out` and moved in only when every format checked out.
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        for fmt in formats:
            runners: dict[str, Runner] = {}
            diffs: dict[str, float] = {}
            for name, module in graphs.items():
                path = Path(tmp) / TRANSDUCER_FILES[fmt][name]
                if fmt == "torchscript":
                    export_torchscript(module, examples[name], path)
                    runners[name] = torch_runner(torch.jit.load(str(path)))
                else:
                    meta["onnx"] = export_onnx(module, examples[name], path, opset=opset, exporter=onnx_exporter,
                                               graph=TRANSDUCER_GRAPHS[name])
                    runners[name] = onnx_runner(onnx_session(path), TRANSDUCER_GRAPHS[name])
                outs = [runners[name](*(x.numpy() for x in case)) for case in cases[name]]
                try:
                    if name == "encoder":
                        diff = max(max_valid_diff(r[0], r[1], *o) for r, o in zip(refs[name], outs, strict=True))
                    else:
                        diff = max(max_abs_diff(r, o) for r, o in zip(refs[name], outs, strict=True))
                except ValueError as e:
                    raise ValueError(f"the {fmt} {name} graph does not match the PyTorch model: {e}") from None
                if not diff <= CHECK_TOLERANCE:
                    raise ValueError(f"the {fmt} {name} graph differs from the PyTorch model by {diff:.2e} "
                                     f"(limit {CHECK_TOLERANCE})")
                diffs[name] = diff
            for i, ((w, n), ref) in enumerate(zip(cases["encoder"], ref_ids, strict=True)):
                got = greedy_with_graphs(runners["encoder"], runners["predictor"], runners["joiner"], w.numpy(),
                                         n.numpy(), blank=blank, max_symbols=max_symbols, layers=layers,
                                         hidden_size=hidden)
                if got != ref:
                    row = next(b for b, (g, r) in enumerate(zip(got, ref, strict=True)) if g != r)
                    raise ValueError(f"greedy decoding with the {fmt} graphs gives other tokens than PyTorch's "
                                     f"greedy_search on check input {i} (row {row}: {len(got[row])} tokens "
                                     f"vs {len(ref[row])})")
            meta["files"][fmt] = {name: TRANSDUCER_FILES[fmt][name] for name in graphs}
            meta["max_abs_diff_vs_pytorch"][fmt] = diffs
            meta["greedy_check"]["same_tokens_as_pytorch"][fmt] = True
        _keep(Path(tmp), out, tokenizer_spec(model.tokenizer, "transducer"), meta,
              _transducer_readme(meta, model.tokenizer.kind))
    return meta


# -- benchmark ---------------------------------------------------------------------------------------------------


def bench_export(ckpt: str | Path, files: list[str | Path], *, out_dir: str | Path | None = None,
                 onnx_exporter: str = "legacy", warmup: int = 1, repeats: int = 3) -> dict:
    """Exports ``ckpt`` (a CTC checkpoint) and times batch-1 greedy transcription of ``files`` with PyTorch eager, TorchScript and
    onnxruntime, each on one thread.

    Each backend transcribes every file ``repeats`` times, passes interleaved across backends (after ``warmup``
    runs on the first file); the fastest pass counts, in wall-clock and in process CPU time (the latter is
    steadier when other jobs share the core). Returns ``{"checkpoint", "files", "audio_s", "threads",
    "seconds", "rtf", "cpu_seconds", "rtf_cpu"`` (per backend; RTF = processing seconds / audio seconds)
    ``, "max_abs_diff_vs_pytorch", "same_text_as_pytorch", "onnx"}``.

    Raises:
        ValueError: no files, or a transducer checkpoint (only CTC exports are benchmarked).
    """
    from data.audio import AudioRef, load_audio
    from pipelines.base import load_module

    if not files:
        raise ValueError("bench_export needs at least one audio file")
    model = load_module(ckpt, map_location="cpu").eval()
    if _is_transducer(model):
        raise ValueError(f"bench_export times CTC exports only; {ckpt} is a transducer checkpoint "
                         f"(rnnlab export exports it; its greedy decoding loop is not benchmarked)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            if out_dir is None:
                out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnlab-export-"))
            meta = export_checkpoint(ckpt, out_dir, onnx_exporter=onnx_exporter)
            scripted = torch.jit.load(str(Path(out_dir) / FILES["torchscript"]))
            session = onnx_session(Path(out_dir) / FILES["onnx"], threads=1)
            inputs = [(w[None], torch.tensor([w.numel()]))
                      for w in (load_audio(AudioRef(path=str(f)), model.sample_rate) for f in files)]
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
            audio_s = sum(int(n) for _, n in inputs) / model.sample_rate
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
