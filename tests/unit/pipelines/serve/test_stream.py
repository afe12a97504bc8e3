"""The WebSocket stream: partial and final text equal to streaming offline, keywords, protocol errors, the stream limit."""

import base64
import json
import os
import socket
import time
import urllib.request

import pytest
import torch
import torchaudio.functional as AF
from fastapi.testclient import TestClient

from modules.streaming import StreamingTranscriber, stream_file_chunks
from pipelines.serve import Limits, create_app
from tests.unit.pipelines.serve.helpers import (
    LIMITS,
    RATE,
    FakeKeywords,
    from_pcm16,
    live_server,
    pcm16,
    scene,
    speechlike,
    tiny_ctc,
)

START = {"type": "start", "sample_rate": RATE, "format": "pcm16"}
CHUNK = int(0.2 * RATE) * 2  # bytes of 200 ms of 16-bit audio


def run_stream(ws, pcm: bytes, chunk: int = CHUNK, start: dict = START) -> tuple[list[dict], int]:
    """Sends start, the audio in ``chunk``-byte frames and stop; returns the messages and the close code."""
    ws.send_json(start)
    for i in range(0, len(pcm), chunk):
        ws.send_bytes(pcm[i:i + chunk])
    ws.send_json({"type": "stop"})
    return until_close(ws)


def until_close(ws) -> tuple[list[dict], int]:
    messages = []
    while True:
        m = ws.receive()
        if m["type"] == "websocket.close":
            return messages, m["code"]
        messages.append(json.loads(m["text"]))


def offline_partials(model, wav: torch.Tensor, chunk_samples: int) -> tuple[list[str], str]:
    """The hypotheses StreamingTranscriber shows while ``wav`` arrives in chunks, and its final text."""
    st = StreamingTranscriber(model)
    shown = []
    for piece in stream_file_chunks(wav, chunk_samples):
        st.accept(piece)
        if st.text != (shown[-1] if shown else ""):
            shown.append(st.text)
    return shown, st.finish()


def streams_in_use(client) -> int:
    return client.get("/api/status").json()["streams_in_use"]


def test_streamed_speech_gives_the_offline_partials_and_final(client, models):
    pcm = pcm16(speechlike(2.5, 7))
    wav = from_pcm16(pcm)
    with client.websocket_connect("/ws/stream?mode=asr") as ws:
        messages, code = run_stream(ws, pcm)
    assert code == 1000
    assert messages[0] == {"type": "ready", "mode": "asr", "sample_rate": RATE}
    partials = [m["text"] for m in messages if m["type"] == "partial"]
    shown, final = offline_partials(models["stream"], wav, CHUNK // 2)
    assert messages[-1] == {"type": "final", "text": final} and final
    assert partials == shown and len(partials) >= 3
    assert all(final.startswith(p) for p in partials)  # normalize=global: every partial is already exact
    st = StreamingTranscriber(models["stream"])
    st.accept(wav)
    assert st.finish() == final  # the whole file at once: the same text
    assert streams_in_use(client) == 0


def test_frames_of_any_size_and_another_rate(client, models):
    wav = speechlike(1.7, 8)
    pcm = pcm16(wav)
    with client.websocket_connect("/ws/stream?mode=asr") as ws:
        messages, _ = run_stream(ws, pcm, chunk=1234)
    _, final = offline_partials(models["stream"], from_pcm16(pcm), 4000)
    assert messages[-1] == {"type": "final", "text": final}
    # A 48 kHz client: the server resamples the stream, chunk by chunk, as the whole file would be resampled.
    pcm48 = pcm16(AF.resample(wav, RATE, 48000))
    with client.websocket_connect("/ws/stream?mode=asr") as ws:
        messages, code = run_stream(ws, pcm48, chunk=9600 * 2, start={**START, "sample_rate": 48000})
    st = StreamingTranscriber(models["stream"])
    st.accept(AF.resample(from_pcm16(pcm48), 48000, RATE))
    assert code == 1000 and messages[0]["sample_rate"] == 48000
    assert messages[-1] == {"type": "final", "text": st.finish()}


def test_keywords_are_spotted_as_they_are_said(client):
    audio = scene([(None, 1.0), ("yes", 0.5), (None, 1.5), ("no", 0.5), (None, 1.0)], seed=3)
    with client.websocket_connect("/ws/stream?mode=keywords") as ws:
        messages, code = run_stream(ws, pcm16(audio))
    assert code == 1000
    found = [m for m in messages if m["type"] == "keyword"]
    assert [m["label"] for m in found] == ["yes", "no"]
    assert 1.0 < found[0]["time"] <= 2.5 and 3.0 < found[1]["time"] <= 4.5  # window ends after each word starts
    assert all(m["score"] >= 0.7 for m in found)
    final = messages[-1]
    assert final["type"] == "final" and final["text"] == "yes no"
    assert final["detections"] == [{k: m[k] for k in ("label", "score", "time")} for m in found]


def test_digits_and_buffered_modes():
    digits = FakeKeywords(label="7", score=0.95, labels=[str(d) for d in range(10)])
    asr = tiny_ctc(bidirectional=True)
    pcm = pcm16(speechlike(1.6, 9))
    with TestClient(create_app({"digits": digits, "asr": asr})) as c:
        modes = c.get("/api/models").json()["modes"]
        assert modes["digits"]["kind"] == "keywords" and modes["asr"] == {"role": "asr", "kind": "buffered"}
        with c.websocket_connect("/ws/stream?mode=digits") as ws:
            messages, _ = run_stream(ws, pcm)
        assert [m["label"] for m in messages if m["type"] == "keyword"] == ["7"]  # once: the label is held
        assert messages[-1]["text"] == "7"
        # A bidirectional model cannot stream: no partials, the final text of the whole recording.
        with c.websocket_connect("/ws/stream?mode=asr") as ws:
            messages, _ = run_stream(ws, pcm)
        assert [m["type"] for m in messages] == ["ready", "final"]
        assert messages[-1]["text"] == asr.transcribe_waveforms([from_pcm16(pcm)])[0]


# (what the client sends, words of the one-line error, close code); sent in order on a fresh connection.
PROTOCOL_ERRORS = [
    ([b"\x00\x00" * 100], "audio before start: send", 1008),
    ([START, b"\x00\x01\x02"], "odd-length audio frame (3 bytes)", 1008),
    (["{nope"], "control message is not JSON: '{nope'", 1008),
    (["[1, 2]"], "a control message must be a JSON object", 1008),
    ([{"type": "pause"}], "unknown control message type 'pause'", 1008),
    ([{"sample_rate": 16000}], "unknown control message type None", 1008),
    ([{**START, "sample_rate": 4000}], "sample_rate must be an integer from 8000 to 48000, got 4000", 1008),
    ([{**START, "sample_rate": 96000}], "from 8000 to 48000, got 96000", 1008),
    ([{**START, "sample_rate": "16k"}], "got '16k'", 1008),
    ([{**START, "sample_rate": True}], "got True", 1008),
    ([{**START, "format": "f32"}], "format must be 'pcm16'", 1008),
    ([START, START], "start sent twice", 1008),
    ([{"type": "stop"}], "stop before start", 1008),
    ([START, b"\x00\x00" * 100, {"type": "stop"}], "audio too short to transcribe", 1008),
    ([START, *[b"\x00\x00" * RATE] * 7], "stream longer than the 6 s limit", 1009),
]


@pytest.mark.parametrize(("sends", "words", "code"), PROTOCOL_ERRORS, ids=[p[1][:32] for p in PROTOCOL_ERRORS])
def test_protocol_errors_are_one_line_then_close(client, sends, words, code):
    with client.websocket_connect("/ws/stream?mode=asr") as ws:
        for item in sends:
            if isinstance(item, bytes):
                ws.send_bytes(item)
            elif isinstance(item, str):
                ws.send_text(item)
            else:
                ws.send_json(item)
        messages, got = until_close(ws)
    assert got == code
    assert [m["type"] for m in messages if m["type"] != "ready"] == ["error"]
    error = messages[-1]["error"]
    assert words in error and "\n" not in error, error
    assert streams_in_use(client) == 0
    assert client.get("/api/models").status_code == 200  # the server still answers


def test_unknown_mode_and_idle_stream(models):
    with TestClient(create_app(models, limits=Limits(stream_idle_seconds=0.3))) as c:
        with c.websocket_connect("/ws/stream?mode=tts") as ws:
            messages, code = until_close(ws)
        assert messages == [{"type": "error", "error": "mode 'tts' is not available on this server (modes: asr, "
                                                       "keywords)"}] and code == 1008
        t0 = time.monotonic()
        with c.websocket_connect("/ws/stream?mode=asr") as ws:
            ws.send_json(START)
            messages, code = until_close(ws)
        assert messages[-1] == {"type": "error", "error": "idle for 0.3 s: stream closed"} and code == 1001
        assert time.monotonic() - t0 < 5
        assert streams_in_use(c) == 0


def test_more_streams_than_the_limit_are_told_busy_at_once(client):
    assert LIMITS.max_streams == 2
    with client.websocket_connect("/ws/stream?mode=asr") as a, client.websocket_connect("/ws/stream?mode=keywords") as b:
        for ws in (a, b):
            ws.send_json(START)
            assert ws.receive_json()["type"] == "ready"
        assert streams_in_use(client) == 2
        with client.websocket_connect("/ws/stream?mode=asr") as c:
            messages, code = until_close(c)
        assert messages == [{"type": "error", "error": "busy: 2 streams in use, try again later"}] and code == 1013
        a.send_json({"type": "stop"})
        assert until_close(a)[0][-1]["type"] == "error"  # no audio: too short
    assert streams_in_use(client) == 0
    with client.websocket_connect("/ws/stream?mode=asr") as ws:  # the slots are free again
        messages, code = run_stream(ws, pcm16(speechlike(0.5, 1)))
    assert messages[-1]["type"] == "final" and code == 1000


def test_a_client_that_leaves_mid_stream_frees_its_slot(client):
    with client.websocket_connect("/ws/stream?mode=asr") as ws:
        ws.send_json(START)
        ws.receive_json()
        ws.send_bytes(pcm16(speechlike(0.4, 2)))
    assert streams_in_use(client) == 0


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455)."""
    mask, n = os.urandom(4), len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_dropped_connection_frees_its_slot_on_a_real_server(models):
    """uvicorn (wsproto): the TCP connection vanishes mid-stream, without a close frame."""
    app = create_app({"stream": models["stream"]}, limits=Limits(max_streams=1))
    with live_server(app) as port:
        def status() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                return json.loads(r.read())["streams_in_use"]

        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /ws/stream?mode=asr HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 101")
        sock.sendall(_ws_frame(1, json.dumps(START).encode()) + _ws_frame(2, pcm16(speechlike(0.2, 3))))
        deadline = time.monotonic() + 10
        while status() != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        sock.close()
        while status() != 0:
            assert time.monotonic() < deadline, "the slot of the dropped stream was not freed"
            time.sleep(0.05)


def test_a_unidirectional_transducer_streams_on_the_page_as_offline():
    """`rnnlab serve --stream` takes a transducer: its partials are exact and the final is its offline greedy."""
    from data.text import CharTokenizer
    from pipelines.transducer import TransducerSpeechRecognizer

    torch.manual_seed(0)
    model = TransducerSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=3, hidden_size=32,
                                       num_layers=2, bidirectional=False, dropout=0.0, normalize="global",
                                       pred_embed_size=8, pred_hidden_size=16, joiner_size=16).eval()
    with torch.no_grad():
        model.model.joiner.out.bias[model.tokenizer.blank] -= 2.0
    wav = speechlike(1.5, 9)
    pcm = pcm16(wav)
    with TestClient(create_app({"stream": model}, limits=LIMITS)) as c, \
            c.websocket_connect("/ws/stream?mode=asr") as ws:
        messages, code = run_stream(ws, pcm)
    final = model.transcribe_waveforms([from_pcm16(pcm)])[0]
    assert code == 1000 and messages[-1] == {"type": "final", "text": final} and final
    assert all(final.startswith(m["text"]) for m in messages if m["type"] == "partial")
