"""``rnnlab bench`` section ``rtf``: batch-1 CPU real-time factor of the default CTC model: greedy decoding,
prefix beam search and the exported backends (:func:`pipelines.inference.export.bench_export`)."""

from __future__ import annotations

import importlib.util
import statistics
import time

import torch

from pipelines.commands.bench.common import TARGETS, lightning_quiet, print_notes, table
from pipelines.commands.bench.models import build_model, describe, model_name
from pipelines.inference.errors import first_line
from pipelines.inference.export import bench_export

TITLE = "5. inference real-time factor (CPU, batch 1)"


def run(ctx) -> dict:
    """Batch-1 CPU real-time factor: greedy, prefix beam search (width ``--beam``), exported backends."""
    from data.audio import load_audio

    a = ctx.args
    model, weights = _model(ctx)
    model = model.cpu().eval()
    utts = ctx.dm.datasets["val"].utterances[: a.rtf_utterances]
    rate = model.sample_rate
    wavs = [load_audio(u.audio, rate) for u in utts]
    audio_s = sum(w.numel() for w in wavs) / rate
    decoder = model.make_decoder(beam_size=a.beam)

    def decode_all(dec) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for w in wavs:
            model.transcribe_waveforms([w], decoder=dec, batch_size=1)
        return time.perf_counter() - t0, time.process_time() - c0

    model.transcribe_waveforms([wavs[0]], batch_size=1)  # warm-up
    out = {"weights": weights, "model": describe(model), "model_name": model_name(model),
           "utterances": len(wavs), "audio_s": audio_s, "threads": torch.get_num_threads(), "batch_size": 1,
           "device": "cpu", "rows": {}}
    greedy = [decode_all(None) for _ in range(max(1, a.repeats))]
    beam = [decode_all(decoder)]  # one pass: the pure-Python search is the slow part
    for name, secs, target in (("greedy", greedy, TARGETS["rtf_greedy"]),
                               (f"prefix beam {a.beam}", beam, TARGETS["rtf_beam"])):
        med = statistics.median(w for w, _ in secs)
        cpu = statistics.median(c for _, c in secs)
        out["rows"][name] = {"seconds": [w for w, _ in secs], "median_s": med, "rtf": med / audio_s,
                             "cpu_seconds": [c for _, c in secs], "rtf_cpu": cpu / audio_s, "target": target,
                             "meets_target": med / audio_s <= target, "threads": torch.get_num_threads()}
    out["export"] = _export_rtf(ctx, model, utts)
    return out


def _model(ctx):
    """``(model, description of its weights)``: the ``--ckpt`` checkpoint, else random weights."""
    a = ctx.args
    if not a.ckpt:
        return (build_model("tiny" if a.quick else "default"),
                "random (untrained): beam search cost depends on the output distributions; pass --ckpt")
    from pipelines.base import load_module
    from pipelines.ctc import CTCSpeechRecognizer

    model = load_module(a.ckpt, map_location="cpu")
    if not isinstance(model, CTCSpeechRecognizer):
        raise ValueError(f"--ckpt {a.ckpt} holds a {type(model).__name__}, not a CTC speech recognizer")
    return model, f"trained checkpoint {a.ckpt}"


def _export_rtf(ctx, model, utts) -> dict:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"skipped": "pipelines.inference.export.bench_export needs onnxruntime, which is not installed"}
    files = [u.audio.path for u in utts if u.audio.path]
    if not files:
        return {"skipped": "the validation audio has no file paths"}
    ckpt = ctx.args.ckpt
    if not ckpt:
        ckpt = str(ctx.tmp / "random-ctc.ckpt")
        save_checkpoint(model, ckpt)
    try:
        with lightning_quiet():
            res = bench_export(ckpt, files, repeats=ctx.args.repeats)
    except Exception as e:  # noqa: BLE001 - another tool's failure must not lose the other sections
        return {"skipped": f"pipelines.inference.export.bench_export failed: {first_line(e)}"}
    res = dict(res)
    res["note"] = "pipelines.inference.export.bench_export: fastest pass, each backend on one thread, greedy"
    return res


def save_checkpoint(model, path: str) -> None:
    import lightning as L

    with lightning_quiet():
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.strategy.connect(model)
        trainer.save_checkpoint(path)


def show(r: dict) -> None:
    """Prints the section's table."""
    print(f"{r['model_name']} on CPU, batch 1, {r['utterances']} utterances ({r['audio_s']:.1f} s of audio); "
          f"weights: {r['weights']}")
    rows = [[f"{name} ({v['threads']} thread(s))", v["median_s"], v["rtf"], v["rtf_cpu"], f"<= {v['target']:g}"]
            for name, v in r["rows"].items()]
    e, notes = r["export"], []
    if "skipped" in e:
        notes.append(f"ONNX (onnxruntime): skipped: {e['skipped']}")
    else:
        for backend, rtf in e.get("rtf", {}).items():
            rows.append([f"exported: {backend} greedy ({e.get('threads', 1)} thread)", e["seconds"][backend], rtf,
                         e.get("rtf_cpu", {}).get(backend), ""])
    print(table(["inference", "s", "RTF", "RTF by CPU time", "aim"], rows))
    print_notes(notes)
