"""``rnnlab bench`` section ``decode``: speech checkpoints side by side (say CTC against transducer), batch 1 on one
CPU thread: offline greedy, beam search, and chunked streaming for unidirectional models.

``make bench ARGS="--only decode --decode-ckpt ctc=A.ckpt --decode-ckpt rnnt=B.ckpt --data-dir DIR"``. Every model
decodes the same validation utterances; passes alternate between the models, so a busy machine slows them alike;
the fastest of ``--repeats`` passes counts.
"""

from __future__ import annotations

import time

import torch

from pipelines.commands.bench.common import table

TITLE = "decode: recognisers side by side (CPU, batch 1, one thread)"
CHUNK_MS = 200.0


def _parse_specs(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for s in specs:
        name, sep, ckpt = s.partition("=")
        if not sep or not name or not ckpt:
            raise ValueError(f"--decode-ckpt takes NAME=CHECKPOINT, got {s!r}")
        out.append((name, ckpt))
    if not out:
        raise ValueError("the decode section needs --decode-ckpt NAME=CHECKPOINT (one or more)")
    return out


def _modes(model, beam: int) -> dict:
    """``{mode: fn(waveform) -> text}`` for one model."""
    from modules.streaming import stream_file_chunks
    from pipelines.inference import InferenceError, make_streamer

    decoder = model.make_decoder(beam_size=beam)
    modes = {"greedy": lambda w: model.transcribe_waveforms([w], batch_size=1)[0],
             f"beam {beam}": lambda w: model.transcribe_waveforms([w], decoder=decoder, batch_size=1)[0]}
    try:
        streamer = make_streamer(model)
    except InferenceError:
        return modes
    chunk = round(CHUNK_MS * model.sample_rate / 1000)

    def stream(w):
        streamer.reset()
        for piece in stream_file_chunks(w, chunk):
            streamer.accept(piece)
        return streamer.finish()

    modes[f"streaming greedy ({CHUNK_MS:g} ms chunks)"] = stream
    return modes


def run(ctx) -> dict:
    from data.audio import load_audio
    from pipelines.inference import load_model

    a = ctx.args
    specs = _parse_specs(a.decode_ckpt or [])
    models = {name: load_model(ckpt, kind="speech").cpu().eval() for name, ckpt in specs}
    rate = next(iter(models.values())).sample_rate
    utts = ctx.dm.datasets["val"].utterances[: a.rtf_utterances]
    wavs = [load_audio(u.audio, rate) for u in utts]
    audio_s = sum(w.numel() for w in wavs) / rate
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {(name, mode): fn for name, m in models.items() for mode, fn in _modes(m, a.beam).items()}
        for fn in runs.values():  # warm-up
            fn(wavs[0])
        best: dict = {key: (float("inf"), float("inf")) for key in runs}
        for _ in range(max(1, a.repeats)):
            for key, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    for w in wavs:
                        fn(w)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
    finally:
        torch.set_num_threads(threads)
    rows = {f"{name} | {mode}": {"model": name, "mode": mode, "seconds": best[(name, mode)][0],
                                 "rtf": best[(name, mode)][0] / audio_s, "rtf_cpu": best[(name, mode)][1] / audio_s}
            for name, mode in runs}
    return {"checkpoints": dict(specs), "models": {n: type(m).__name__ for n, m in models.items()},
            "utterances": len(wavs), "audio_s": audio_s, "threads": 1, "repeats": max(1, a.repeats),
            "data": ctx.data_info, "rows": rows}


def show(r: dict) -> None:
    print(f"{r['utterances']} validation utterances ({r['audio_s']:.1f} s of audio), batch 1, one thread, fastest of "
          f"{r['repeats']} interleaved passes; {', '.join(f'{n}: {c}' for n, c in r['models'].items())}")
    print(table(["model", "decoding", "s", "RTF", "RTF by CPU time"],
                [[v["model"], v["mode"], v["seconds"], v["rtf"], v["rtf_cpu"]] for v in r["rows"].values()]))
