"""The JSON API of ``rnnlab serve``: answers equal the models' own, look-inside data, and one-line errors for bad input."""

import pytest
import torch
from fastapi.testclient import TestClient

from pipelines.serve import Limits, create_app
from pipelines.serve.app import slot_spans
from tests.unit.pipelines.serve.helpers import (
    LIMITS,
    RATE,
    decoded,
    scene,
    speechlike,
    tiny_ctc,
    trained_slots,
    wav_bytes,
)


def upload(data: bytes, name: str = "clip.wav") -> dict:
    return {"file": (name, data, "audio/wav")}


def test_models_lists_roles_modes_and_limits(client, models):
    info = client.get("/api/models").json()
    assert set(info["models"]) == set(models)
    assert info["models"]["stream"]["streaming"] is True and info["models"]["asr"]["streaming"] is False
    assert info["models"]["asr"]["sample_rate"] == RATE and info["models"]["asr"]["ctc"] is True
    assert info["models"]["keywords"]["labels"] == ["yes", "no", "unknown", "silence"]
    assert info["modes"]["asr"] == {"role": "stream", "kind": "stream"}
    assert info["modes"]["keywords"]["kind"] == "keywords" and "digits" not in info["modes"]
    assert info["limits"]["max_streams"] == LIMITS.max_streams
    page = client.get("/")
    assert page.status_code == 200 and 'id="record"' in page.text and "<script" in page.text
    for asset in ("app.js", "style.css", "pcm-worklet.js"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    assert "registerProcessor" in client.get("/static/pcm-worklet.js").text


def test_transcribe_equals_the_model_offline_greedy_and_beam(client, models):
    model = models["asr"]
    data = wav_bytes(speechlike(1.6, 3))
    wav = decoded(data)
    r = client.post("/api/transcribe", files=upload(data))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == model.transcribe_waveforms([wav])[0] and body["text"]
    assert body["model"] == "asr" and body["beam"] == 1 and body["duration"] == pytest.approx(1.6, abs=1e-3)
    assert body["rtf"] > 0
    beam = client.post("/api/transcribe?beam=4", files=upload(data)).json()
    decoder = model.make_decoder(beam_size=4)
    assert beam["text"] == model.transcribe_waveforms([wav], decoder=decoder)[0] and beam["beam"] == 4


def test_transcribe_reads_other_rates_and_formats(client, models):
    wav8k = speechlike(1.2, 4, rate=8000)
    for data, name in ((wav_bytes(wav8k, 8000), "a.wav"), (wav_bytes(wav8k, 8000, "FLAC", "PCM_16"), "a.flac"),
                       (wav_bytes(wav8k, 8000, "OGG", "VORBIS"), "a.ogg")):
        body = client.post("/api/transcribe", files=upload(data, name)).json()
        assert body["text"] == models["asr"].transcribe_waveforms([decoded(data)])[0], name
        assert body["duration"] == pytest.approx(1.2, abs=0.01)


def test_transcribe_falls_back_to_the_stream_model_and_404s_without_speech():
    stream = tiny_ctc(bidirectional=False)
    data = wav_bytes(speechlike(1.0, 5))
    with TestClient(create_app({"stream": stream})) as c:
        body = c.post("/api/transcribe", files=upload(data)).json()
        assert body["model"] == "stream" and body["text"] == stream.transcribe_waveforms([decoded(data)])[0]
        info = c.get("/api/models").json()
        assert set(info["models"]) == {"stream"} and set(info["modes"]) == {"asr"}
    with TestClient(create_app({"slots": trained_slots(steps=1)})) as c:
        for path, kw in (("/api/transcribe", {"files": upload(data)}), ("/api/keywords", {"files": upload(data)}),
                         ("/api/inspect", {"files": upload(data)}), ("/api/g2p", {"json": {"word": "cat"}})):
            r = c.post(path, **kw)
            assert r.status_code == 404 and list(r.json()) == ["error"], path
            assert "\n" not in r.json()["error"] and "model" in r.json()["error"], path
        assert c.get("/api/models").json()["modes"] == {}


def test_keywords_scores_a_clip(client, models):
    for word in ("yes", "no"):
        data = wav_bytes(scene([(None, 0.3), (word, 0.5), (None, 0.2)], seed=11))
        body = client.post("/api/keywords", files=upload(data)).json()
        assert body["label"] == word and body["score"] > 0.7
        assert list(body["scores"]) == models["keywords"].labels
        assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    quiet = wav_bytes(scene([(None, 1.0)], seed=12))
    assert client.post("/api/keywords", files=upload(quiet)).json()["label"] == "silence"


def test_slots_give_words_tags_intent_and_spans(client, models):
    text = "i want to fly from boston to denver"
    body = client.post("/api/slots", json={"text": f"  {text}\n"}).json()
    ref = models["slots"].tag_sentences([text])[0]
    assert body["text"] == text and body["words"] == ref["words"] and body["tags"] == ref["tags"]
    assert body["intent"] == ref["intent"] == "atis_flight"
    assert body["spans"] == [{"slot": "fromloc.city_name", "text": "boston", "start": 5, "end": 6},
                             {"slot": "toloc.city_name", "text": "denver", "start": 7, "end": 8}]


def test_slot_spans_follow_bio():
    words = "from new york to san francisco on friday".split()
    tags = ["O", "B-from", "I-from", "O", "I-to", "I-to", "O", "B-day"]
    assert slot_spans(words, tags) == [
        {"slot": "from", "text": "new york", "start": 1, "end": 3},
        {"slot": "to", "text": "san francisco", "start": 4, "end": 6},  # an I- without its B- starts a span
        {"slot": "day", "text": "friday", "start": 7, "end": 8}]
    assert slot_spans(["a", "b"], ["B-x", "I-y"]) == [{"slot": "x", "text": "a", "start": 0, "end": 1},
                                                      {"slot": "y", "text": "b", "start": 1, "end": 2}]
    assert slot_spans([], []) == []


def test_g2p_pronounces_one_word(client, models):
    body = client.post("/api/g2p", json={"word": " Cat "}).json()
    assert body == {"word": "Cat", "phonemes": models["g2p"].pronounce(["Cat"])[0]}
    phonemes = set(models["g2p"].vocab.phonemes.itos)
    assert body["phonemes"] and set(body["phonemes"].split()) <= phonemes


def test_inspect_gives_posteriors_and_gates_that_match_the_model(client, models):
    model = models["asr"]
    data = wav_bytes(speechlike(1.3, 6))
    wav = decoded(data)
    r = client.post("/api/inspect", files=upload(data))
    assert r.status_code == 200, r.text
    body = r.json()
    with torch.no_grad():
        lp, n = model(wav[None], torch.tensor([wav.numel()]))
    probs = lp[0, : n[0]].exp()
    frames, vocab = probs.shape
    assert body["model"] == "asr" and body["frames"] == frames
    assert body["frame_rate"] == pytest.approx(RATE / (160 * 3))  # 10 ms hop, 3 frames stacked
    assert body["symbols"] == list(model.tokenizer.tokens) and body["symbols"][body["blank"]] == "<blank>"
    assert body["text"] == model.transcribe_waveforms([wav])[0]
    assert body["argmax"] == probs.argmax(-1).tolist()
    post = torch.tensor(body["posteriors"])
    assert post.shape == (frames, vocab) and torch.allclose(post, probs, atol=6e-4)
    assert torch.allclose(post.sum(-1), torch.ones(frames), atol=0.02)
    for t, top in enumerate(body["top"]):
        ids, ps = zip(*top, strict=True)
        assert len(top) == 5 and list(ps) == sorted(ps, reverse=True) and ids[0] == body["argmax"][t]
        assert ps[0] == pytest.approx(body["argmax_prob"][t], abs=1e-4)

    gates = body["gates"]
    assert gates["available"] and gates["layer"] == 0 and gates["units"] == 32 == gates["hidden_size"]
    for name in ("input_gate", "forget_gate", "output_gate"):
        assert len(gates["mean"][name]) == frames and all(0 < v < 1 for v in gates["mean"][name])
    assert torch.tensor(gates["forget_units"]).shape == (frames, 32)
    # The forget gate recomputed here by hand from the fused LSTM's weights: f = sigmoid(W_f x + U_f h + b_f).
    lstm = model.model.encoder.layers[0][0]
    with torch.no_grad():
        x, _ = model.model.frontend(wav[None], torch.tensor([wav.numel()]))
        h = c = torch.zeros(32)
        forget = []
        for t in range(x.size(1)):
            z = lstm.weight_ih_l0 @ x[0, t] + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
            i, f, g, o = z.chunk(4)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            forget.append(f.sigmoid())
    forget = torch.stack(forget)
    assert torch.allclose(torch.tensor(gates["forget_units"]), forget, atol=2e-3)
    assert torch.allclose(torch.tensor(gates["mean"]["forget_gate"]), forget.mean(-1), atol=2e-4)

    stream = client.post("/api/inspect?model=stream", files=upload(data)).json()
    assert stream["model"] == "stream" and stream["text"] == models["stream"].transcribe_waveforms([wav])[0]


def test_inspect_without_lstm_gates_says_why():
    torch.manual_seed(0)
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    gru = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=20, hidden_size=16, num_layers=1, cell="gru")
    with TestClient(create_app({"asr": gru})) as c:
        body = c.post("/api/inspect", files=upload(wav_bytes(speechlike(0.5, 1)))).json()
    assert body["gates"] == {"available": False, "reason": "the encoder is a GRU: no LSTM gates"}
    assert body["frames"] == len(body["argmax"]) > 0


# Over the 400 kB file limit (but within the body allowance for multipart headers), 2.2 s of audio.
BIG = wav_bytes(torch.zeros(int(2.2 * 48000)), 48000, subtype="FLOAT")


def _long_small() -> bytes:
    """7 s of audio in a small file (8 kHz, 8-bit): over the duration limit, under the size limit."""
    return wav_bytes(torch.zeros(7 * 8000), 8000, subtype="PCM_U8")


# (method, path, request arguments, status, words the one-line error must contain)
BAD = [
    ("post", "/api/transcribe", {"files": upload(b"just some notes\n", "notes.txt")}, 400, "notes.txt: not audio"),
    ("post", "/api/transcribe", {"files": upload(b"\x00\x01\x02\x03" * 64, "noise.bin")}, 400, "not audio"),
    ("post", "/api/transcribe", {"files": upload(b"", "empty.wav")}, 400, "empty.wav: empty file"),
    ("post", "/api/transcribe", {"files": upload(b"RIFF\x24\x00\x00\x00WAVEfmt ", "cut.wav")}, 400, "cut.wav"),
    ("post", "/api/transcribe", {"files": upload(_long_small(), "long.wav")}, 413, "7.0 s of audio, over the 6 s limit"),
    ("post", "/api/transcribe", {"files": upload(BIG, "big.wav")}, 413, "big.wav: file over the 400 kB upload limit"),
    ("post", "/api/transcribe", {"files": upload(b"x" * 600_000, "huge.wav")}, 413, "request body over the 400 kB upload limit"),
    ("post", "/api/inspect", {"files": upload(_long_small(), "long.wav")}, 413, "over the 6 s limit"),
    ("post", "/api/keywords", {"files": upload(b"hello", "hi.txt")}, 400, "hi.txt: not audio"),
    ("post", "/api/transcribe", {"files": {"audio": ("a.wav", b"RIFF", "audio/wav")}}, 422, "file: Field required"),
    ("post", "/api/transcribe?beam=0", {"files": upload(b"RIFF")}, 422, "query parameter beam"),
    ("post", "/api/transcribe?beam=many", {"files": upload(b"RIFF")}, 422, "query parameter beam"),
    ("post", "/api/inspect?model=../x.ckpt", {"files": upload(b"RIFF")}, 422, "query parameter model"),
    ("post", "/api/slots", {"json": {"text": "   "}}, 400, "text is empty"),
    ("post", "/api/slots", {"json": {"text": "fly " * 30}}, 413, "text has 119 characters, over the 80 limit"),
    ("post", "/api/slots", {"json": {"sentence": "hi"}}, 422, "text: Field required"),
    ("post", "/api/slots", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     "not valid JSON"),
    ("post", "/api/g2p", {"json": {"word": "ca7"}}, 400, "'ca7': characters outside the grapheme vocabulary: '7'"),
    ("post", "/api/g2p", {"json": {"word": "two words"}}, 400, "one word expected"),
    ("post", "/api/g2p", {"json": {"word": ""}}, 400, "word is empty"),
    ("post", "/api/g2p", {"json": {"word": 7}}, 422, "word: Input should be a valid string"),
    ("get", "/api/nothing", {}, 404, "not found: /api/nothing"),
    ("get", "/api/slots", {}, 405, "method GET not allowed on /api/slots"),
    ("get", "/static/../app.py", {}, 404, "not found"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), BAD,
                         ids=[f"{b[1]}-{b[4][:30]}" for b in BAD])
def test_bad_input_is_a_one_line_json_error(client, method, path, kwargs, status, words):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    assert words in body["error"], body["error"]
    assert client.get("/api/status").json()["streams_in_use"] == 0  # and the server still answers


def test_an_oversized_body_is_refused_before_it_is_read(app):
    import asyncio
    import json

    pieces, sent = [], []

    async def receive():  # a client that would send a 6.5 MB file without announcing a length
        pieces.append(1)
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' if len(pieces) == 1 \
            else b""
        return {"type": "http.request", "body": head + b"x" * 65536, "more_body": len(pieces) < 100}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/transcribe", "raw_path": b"/api/transcribe", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")], "server": ("test", 80),
             "client": ("test", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "request body over the 400 kB upload limit"}
    assert len(pieces) <= 8  # read up to the limit (400 kB + 64 kB for the multipart headers), not 6.5 MB


def test_a_model_failure_is_a_one_line_500():
    class Broken(torch.nn.Module):
        def tag_sentences(self, sentences):
            raise RuntimeError("weights\nwent missing")

    with TestClient(create_app({"slots": Broken()})) as c:
        r = c.post("/api/slots", json={"text": "hello"})
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError: weights went missing"}


def test_limits_and_roles_are_checked_when_the_app_is_built():
    with pytest.raises(ValueError, match="max_streams must be positive"):
        Limits(max_streams=0)
    with pytest.raises(ValueError, match="unknown model role 'tts'"):
        create_app({"tts": object()})
    with pytest.raises(ValueError, match="cannot stream: it must be a unidirectional CTC model"):
        create_app({"stream": tiny_ctc(bidirectional=True)})
    with pytest.raises(ValueError, match="the slots model .* has no tag_sentences"):
        create_app({"slots": tiny_ctc(bidirectional=True)})


def test_docs_page_is_self_contained_and_lists_every_endpoint(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for path in ("/api/transcribe", "/api/keywords", "/api/slots", "/api/g2p", "/api/inspect", "/api/models"):
        assert f"{path}</code>" in html, path
    assert "<script" not in html and "cdn" not in html.lower() and "https://" not in html  # works offline
    assert "beam" in html and "file</code> (required)" in html  # query parameters and the upload field
    assert client.get("/redoc").status_code == 404
