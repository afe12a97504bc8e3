"""``rnnlab bench`` section ``serve``: the ``rnnlab serve`` app on a real uvicorn server, with real-time WebSocket
streams: per-frame latency, per-stream real-time factor, how many streams it holds, cold start and memory."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from pipelines.commands.bench.common import DEFAULT_DATA_DIR, REPO, table

TITLE = "rnnlab serve: real-time stream latency, streams held, cold start (CPU)"
RATE, CHUNK_S, P95_LIMIT_MS, BUDGET_S = 16000, 0.2, 300.0, 150.0
FRAME = int(RATE * CHUNK_S) * 2  # bytes of one 200 ms int16 frame
LEVELS, QUICK_LEVELS = (1, 4, 16), (1, 2)
STEPS = (1, 2, 4, 8, 16, 24, 32, 48, 64)  # the capacity search, up to --serve-cap
START = {"type": "start", "sample_rate": RATE, "format": "pcm16"}
# The shipped recipe's size (configs/ctc-english-stream.yaml), used with random weights when it is not installed.
STREAM_SIZE = {"full": {"n_mels": 80, "hidden_size": 320, "num_layers": 3},
               "quick": {"n_mels": 40, "hidden_size": 32, "num_layers": 1}}
COLD_START = """
import json, resource, sys, time
t0 = time.perf_counter()
import pipelines.serve
from pipelines.inference import load_model
t1 = time.perf_counter()
models, load = {}, {}
for role, (spec, kind) in json.loads(sys.argv[1]).items():
    t = time.perf_counter()
    models[role] = load_model(spec, kind=kind)
    load[role] = time.perf_counter() - t
pipelines.serve.create_app(models)
total = time.perf_counter() - t0
try:
    status = {x.split(":")[0]: int(x.split()[1]) / 1024 for x in open("/proc/self/status") if x.startswith("Vm")}
except OSError:  # no /proc: the peak from getrusage (KB on Linux)
    status = {"VmHWM": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
rss, peak = status.get("VmRSS"), status["VmHWM"]
print(json.dumps({"import_s": t1 - t0, "load_s": load, "total_s": total, "rss_mb": rss, "peak_rss_mb": peak}))
"""


def _specs(ctx) -> tuple[dict, str]:
    """``({role: (model spec, load kind)}, weights)``: the shipped models installed (stream: random if absent)."""
    from pipelines.commands.bench.rtf import save_checkpoint
    from pipelines.inference import shipped
    from pipelines.serve.app import DEFAULT_MODELS

    installed = {} if ctx.args.quick else shipped.available()
    specs = {role: (name, kind) for role, (name, kind, _) in DEFAULT_MODELS.items() if name in installed}
    if "stream" in specs:
        return specs, f"shipped {specs['stream'][0]}"
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    size = STREAM_SIZE["quick" if ctx.args.quick else "full"]
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), dropout=0.0,
                                frontend={"n_mels": size["n_mels"], "stack_frames": 3, "normalize": "global"},
                                encoder={"hidden_size": size["hidden_size"], "num_layers": size["num_layers"],
                                         "bidirectional": False})
    path = ctx.tmp / "serve-stream.ckpt"
    save_checkpoint(model, str(path))
    specs["stream"] = (str(path), "speech")
    return specs, (f"random weights, {size['num_layers']}x LSTM-{size['hidden_size']} unidirectional, "
                   f"{size['n_mels']} mels, stack 3 (shipped english-stream not installed)")


def _audio(ctx, seconds: float) -> tuple[bytes, str]:
    """``seconds`` of int16 PCM: ARCTIC validation recordings joined, else a synthetic voiced signal."""
    from pipelines.inference import read_audio

    folder = Path(ctx.args.data_dir or DEFAULT_DATA_DIR) / "validation"
    files = sorted(p for p in folder.glob("*") if p.suffix in (".flac", ".wav")) if folder.is_dir() else []
    parts, n, need = [], 0, int(seconds * RATE)
    for f in files:
        parts.append(read_audio(f, RATE))
        n += parts[-1].numel()
        if n >= need:
            break
    if n >= need:
        wav, source = torch.cat(parts)[:need], f"recordings from {folder}"
    else:
        t = torch.arange(need) / RATE
        voiced = sum(torch.sin(2 * math.pi * f * t) / (i + 1) for i, f in enumerate((140.0, 800.0, 2400.0)))
        wav = 0.2 * voiced * (0.5 + 0.5 * torch.sin(2 * math.pi * 2.3 * t)) + 0.02 * torch.randn(need)
        source = "a synthetic voiced signal"
    return (wav.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes(), source


class _Client:
    """A minimal asyncio WebSocket client over wsproto (the library the server speaks through)."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer, self.conn = reader, writer, WSConnection(ConnectionType.CLIENT)
        self.pending, self.text = collections.deque(), ""
        self.name = "{}:{}".format(*writer.get_extra_info("sockname")[:2])

    @classmethod
    async def open(cls, port: int, target: str) -> _Client:
        ws = cls(*await asyncio.open_connection("127.0.0.1", port))
        ws.writer.write(ws.conn.send(Request(host=f"127.0.0.1:{port}", target=target)))
        if await ws.recv() is not True:
            ws.writer.close()
            raise ConnectionError(f"WebSocket handshake refused on {target}")
        return ws

    def send(self, event) -> None:
        if self.conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.writer.write(self.conn.send(event))

    async def recv(self):
        """The next text message as a dict; True once the handshake is accepted; None once the connection ends."""
        while not self.pending:
            data = await self.reader.read(1 << 16)
            self.conn.receive_data(data or None)
            for ev in self.conn.events():
                if isinstance(ev, AcceptConnection):
                    self.pending.append(True)
                elif isinstance(ev, TextMessage):
                    self.text += ev.data
                    if ev.message_finished:
                        self.pending.append(json.loads(self.text))
                        self.text = ""
                elif isinstance(ev, (Ping, CloseConnection)):
                    self.send(ev.response())
                    if isinstance(ev, CloseConnection):
                        self.pending.append(None)
                elif isinstance(ev, RejectConnection):
                    self.pending.append(None)
            if not data:
                self.pending.append(None)
        return self.pending.popleft()


async def _stream(port: int, pcm: bytes, delay: float, sent: dict, ends: dict) -> None:
    """One real-time stream: start, a 200 ms frame every 200 ms, stop. Fills ``sent[client]`` with each frame's
    send time and ``ends[client]`` with ``(stop -> final seconds, error or None)``."""
    await asyncio.sleep(delay)
    ws = await _Client.open(port, "/ws/stream?mode=asr")
    try:
        ws.send(TextMessage(json.dumps(START)))
        ready = await ws.recv()
        if not isinstance(ready, dict) or ready.get("type") != "ready":
            raise ConnectionError(f"no ready message: {ready}")

        async def until_final():
            while (m := await ws.recv()) is not None and m.get("type") not in ("final", "error"):
                pass
            return m, time.perf_counter()

        reader = asyncio.create_task(until_final())
        times = sent[ws.name] = []
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(pcm), FRAME)):
            await asyncio.sleep(max(0.0, t0 + k * CHUNK_S - time.perf_counter()))
            times.append(time.perf_counter())
            ws.send(BytesMessage(pcm[i:i + FRAME]))
            await ws.writer.drain()
        stop = time.perf_counter()
        ws.send(TextMessage(json.dumps({"type": "stop"})))
        last, end = await reader
        ends[ws.name] = (end - stop, None if last and last["type"] == "final" else f"no final: {last}")
    finally:
        ws.writer.close()


def _pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values``, in milliseconds."""
    v = sorted(values)
    return 1000 * v[max(0, math.ceil(q * len(v)) - 1)]


def _round(app, port: int, timings: list, pcm: bytes, n: int) -> dict:
    """``n`` concurrent streams, started a fraction of a frame apart; latency, RTF and the stop round trip."""
    timings.clear()
    sent, ends, audio_s = {}, {}, len(pcm) / 2 / RATE

    async def streams():
        jobs = [_stream(port, pcm, k * CHUNK_S / n, sent, ends) for k in range(n)]
        return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 2 * audio_s + 20)

    try:
        errors = [f"{type(e).__name__}: {e}" for e in asyncio.run(streams()) if isinstance(e, Exception)]
        timed_out = False
    except asyncio.TimeoutError:
        errors, timed_out = [], True
    deadline = time.monotonic() + 30
    while app.state.service.streams and time.monotonic() < deadline:  # the next round starts on an idle server
        time.sleep(0.05)
    errors += [e for _, e in ends.values() if e]
    done = list(timings)
    lat = [t.done - sent[t.client][t.index] for t in done if t.index < len(sent.get(t.client, ()))]
    if not lat:
        raise RuntimeError(f"{n} stream(s): no audio frame was answered ({errors[0] if errors else 'timed out'})")
    per_stream = collections.defaultdict(lambda: [0.0, 0.0])
    for t in done:
        per_stream[t.client][0] += t.compute_s
        per_stream[t.client][1] += t.seconds
    rtf = [c / s for c, s in per_stream.values()]
    trips = [s for s, _ in ends.values()]
    out = {"streams": n, "frames": len(lat), "frames_expected": n * len(range(0, len(pcm), FRAME)),
           "latency_ms": {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95), "max": _pct(lat, 1.0)},
           "server_ms": {"p50": _pct([t.done - t.received for t in done], 0.5),
                         "p95": _pct([t.done - t.received for t in done], 0.95)},
           "rtf_per_stream": {"mean": sum(rtf) / len(rtf), "max": max(rtf)},
           "stop_to_final_ms": {"p50": _pct(trips, 0.5), "max": _pct(trips, 1.0)} if trips else None,
           "timed_out": timed_out, "errors": errors[:3]}
    out["holds"] = (not timed_out and not errors and out["frames"] == out["frames_expected"]
                    and out["latency_ms"]["p95"] <= P95_LIMIT_MS)
    return out


def _server(app):
    """``app`` on uvicorn (``rnnlab serve``'s settings) on a free loopback port, in a thread; yields the port."""
    from pipelines.serve.threaded import serve_in_thread

    return serve_in_thread(app, ws_max_size=1 << 20, timeout_graceful_shutdown=2)


def _cold_start(specs: dict) -> dict:
    """A fresh process: ``import pipelines.serve``, every model loaded, the app built; seconds and RSS."""
    proc = subprocess.run([sys.executable, "-c", COLD_START, json.dumps(specs)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(f"cold start failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx) -> dict:
    """Latency and RTF at 1, 4, 16 streams; streams held at p95 <= 300 ms (1, 2, 4, 8, ...); cold start."""
    from pipelines.inference import load_model
    from pipelines.serve import Limits, create_app

    a = ctx.args
    specs, weights = _specs(ctx)
    cold = _cold_start(specs)
    pcm, source = _audio(ctx, a.serve_seconds)
    levels = QUICK_LEVELS if a.quick else LEVELS
    steps = [n for n in STEPS if n <= a.serve_cap]
    limits = Limits(max_streams=max(*levels, *steps), max_audio_seconds=max(60.0, a.serve_seconds + 1))
    timings: list = []
    app = create_app({role: load_model(spec, kind=kind) for role, (spec, kind) in specs.items()}, limits=limits,
                     chunk_timings=timings)
    rounds, capacity, failed_at, stopped = {}, 0, None, None
    t0 = time.perf_counter()
    with _server(app) as port:
        for n in levels:
            rounds[n] = _round(app, port, timings, pcm, n)
        for n in steps:
            if n not in rounds and time.perf_counter() - t0 > BUDGET_S:
                stopped = f"time budget of {BUDGET_S:g} s spent"
                break
            rounds[n] = rounds.get(n) or _round(app, port, timings, pcm, n)
            if not rounds[n]["holds"]:
                failed_at = n
                break
            capacity = n
    roles = {role: spec if role != "stream" or weights.startswith("shipped") else "random"
             for role, (spec, _) in specs.items()}
    return {"weights": weights, "models": roles, "audio": source, "audio_s": len(pcm) / 2 / RATE,
            "chunk_s": CHUNK_S, "workers": limits.workers, "threads": torch.get_num_threads(),
            "p95_limit_ms": P95_LIMIT_MS, "levels": list(levels),
            "rounds": {str(n): rounds[n] for n in sorted(rounds)},
            "capacity": {"streams": capacity, "failed_at": failed_at, "cap": a.serve_cap, "stopped": stopped},
            "cold_start": cold}


def show(r: dict) -> None:
    """Prints the stream table, the streams held and the cold start."""
    print(f"stream model: {r['weights']}; every stream {r['audio_s']:.1f} s of {r['audio']} in "
          f"{r['chunk_s'] * 1000:.0f} ms frames in real time; {r['workers']} inference workers x {r['threads']} "
          f"torch thread(s); latency: frame sent -> processed and any partial sent")
    rows = [[n, x["latency_ms"]["p50"], x["latency_ms"]["p95"], x["latency_ms"]["max"], x["server_ms"]["p95"],
             x["rtf_per_stream"]["mean"], x["rtf_per_stream"]["max"],
             x["stop_to_final_ms"]["p50"] if x["stop_to_final_ms"] else None,
             "timed out" if x["timed_out"] else x["holds"]] for n, x in r["rounds"].items()]
    print(table(["streams", "p50 ms", "p95 ms", "max ms", "server p95 ms", "RTF/stream", "RTF max",
                 "stop->final ms", f"p95 <= {r['p95_limit_ms']:g} ms"], rows))
    c = r["capacity"]
    end = (f"failed at {c['failed_at']}" if c["failed_at"] else c["stopped"] or f"the cap of {c['cap']} reached")
    print(f"  holds {c['streams']} concurrent real-time stream(s) at p95 <= {r['p95_limit_ms']:g} ms ({end})")
    cold = r["cold_start"]
    rows = [["import pipelines.serve", cold["import_s"]]] + [
        [f"load {role} ({r['models'][role]})", s] for role, s in cold["load_s"].items()]
    rows += [["total (with create_app)", cold["total_s"]], ["RSS MB, every model loaded", cold["rss_mb"]],
             ["peak RSS MB", cold["peak_rss_mb"]]]
    print(table(["cold start (fresh process)", "s / MB"], rows))
