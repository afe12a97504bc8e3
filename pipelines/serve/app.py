"""The web app of ``rnnlab serve``: a FastAPI app over already-loaded models (JSON API, WebSocket stream, page).

:func:`create_app` takes the models by role and the :class:`Limits`; the command only loads models and runs
uvicorn, and the tests drive the same app with FastAPI's ``TestClient``. Roles:

- ``asr``: a speech model (``transcribe_waveforms``; a bidirectional CTC model, say) for files;
- ``stream``: a unidirectional CTC model that streams (``/ws/stream?mode=asr``; files too when ``asr`` is absent);
- ``keywords``: an utterance classifier over 1 s clips (labels such as yes/no/.../unknown/silence);
- ``digits``: a speech model or a classifier for spoken digits (``/ws/stream?mode=digits``);
- ``slots``: slot filling (``tag_sentences``); ``g2p``: grapheme to phoneme (``pronounce``).

Every error is ``{"error": "<one line>"}`` with a 4xx status (a failure inside a model: 500, same shape). All
inference runs in a bounded thread pool, never on the event loop; nothing a request sends names a file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Query, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from pipelines.inference import make_decoder, read_audio_bytes
from pipelines.inference.inspect import inspect_ctc
from pipelines.inference.keywords import classify_scores, model_sample_rate
from pipelines.serve.streams import StreamResampler, can_stream, is_classifier, make_session, session_kind

# The page's roles: role -> (shipped model loaded by default, kind it must be, what the page uses it for).
DEFAULT_MODELS = {
    "asr": ("english", "speech", "file transcription"),
    "stream": ("english-stream", "speech", "live transcription"),
    "keywords": ("keywords", "classifier", "keyword spotting"),
    "digits": ("digits", None, "spoken digits"),
    "slots": ("snips", "slots", "slot filling"),
    "g2p": ("g2p", "g2p", "pronunciations"),
}

STATIC = Path(__file__).resolve().parent / "static"
ROLES = ("asr", "stream", "keywords", "digits", "slots", "g2p")
MAX_BEAM = 32
MIN_STREAM_RATE, MAX_STREAM_RATE = 8000, 48000
MB = 1024 * 1024
log = logging.getLogger("rnnlab.serve")


@dataclass(frozen=True)
class Limits:
    """What one request or stream may use; each limit, when hit, is a one-line error.

    Args:
        max_upload_bytes: Largest uploaded file.
        max_audio_seconds: Longest audio, uploaded or streamed.
        max_text_chars: Longest text for slot filling and G2P.
        max_streams: WebSocket streams at once (more are told ``busy`` and closed).
        stream_idle_seconds: A stream with no message for this long is closed.
        workers: Threads that run inference (requests beyond wait their turn).
    """

    max_upload_bytes: int = 10 * MB
    max_audio_seconds: float = 60.0
    max_text_chars: int = 500
    max_streams: int = 4
    stream_idle_seconds: float = 30.0
    workers: int = 2

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")

    @property
    def upload_size(self) -> str:
        """The upload limit for messages: ``10 MB``, ``400 kB``."""
        n = self.max_upload_bytes
        return f"{n / MB:.3g} MB" if n >= MB else f"{n / 1024:.3g} kB"


@dataclass(frozen=True)
class ChunkTiming:
    """One audio frame of a WebSocket stream, timed (recorded only when ``create_app`` gets ``chunk_timings``).

    Times are ``time.perf_counter()`` readings, comparable with a client's in the same process.

    Attributes:
        client: The stream's peer address (``host:port``).
        index: The frame's position in its stream (0: the first audio frame).
        seconds: Audio in the frame.
        received: When the app got the frame from the server.
        done: When its processing ended and any partial had been sent.
        compute_s: Seconds the recogniser spent on it in the inference pool.
    """

    client: str
    index: int
    seconds: float
    received: float
    done: float
    compute_s: float


class ApiError(HTTPException):
    """An error for the client: ``status`` and one line (an ``HTTPException``, so body parsing passes it on)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=one_line(message))


def one_line(message: object, limit: int = 300) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


class TextRequest(BaseModel):
    """``{"text": "..."}``: a sentence for slot filling."""

    text: str


class WordRequest(BaseModel):
    """``{"word": "..."}``: one word for G2P."""

    word: str


# -- what the models are ----------------------------------------------------------------------------------------
def display_name(model) -> str:
    """How the page names a model: its shipped name, or its checkpoint's file name (never a full path)."""
    source = getattr(model, "rnnlab_source", None)
    return Path(str(source)).name if source else type(model).__name__


def _check_role(role: str, model) -> None:
    need = {"asr": ("transcribe_waveforms",), "stream": ("transcribe_waveforms",), "keywords": ("labels", "forward"),
            "slots": ("tag_sentences",), "g2p": ("pronounce",)}
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r} (roles: {', '.join(ROLES)})")
    if role == "digits":
        if not (is_classifier(model) or hasattr(model, "transcribe_waveforms")):
            raise ValueError(f"the digits model must be a speech model or a classifier, not {type(model).__name__}")
        return
    missing = [m for m in need[role] if not hasattr(model, m)]
    if missing:
        raise ValueError(f"the {role} model ({type(model).__name__}) has no {', '.join(missing)}")
    if role == "stream" and not can_stream(model):
        raise ValueError(f"the stream model ({display_name(model)}) cannot stream: it must be a unidirectional "
                         f"CTC model")


def describe(role: str, model) -> dict:
    """What ``/api/models`` says about one model."""
    out = {"name": display_name(model), "class": type(model).__name__}
    rate = getattr(model, "sample_rate", None)
    if rate and role not in ("slots", "g2p"):
        out["sample_rate"] = int(rate)
    if role in ("keywords", "digits") and is_classifier(model):
        out.update(task="keyword spotting" if role == "keywords" else "spoken digits (classifier)",
                   labels=list(model.labels))
    elif role in ("asr", "stream", "digits"):
        out.update(task="speech recognition", streaming=can_stream(model), ctc=_is_ctc(model))
    elif role == "slots":
        out.update(task="slot filling and intent", intents=list(getattr(model, "intents", [])))
    elif role == "g2p":
        out.update(task="grapheme to phoneme")
    return out


def _is_ctc(model) -> bool:
    from pipelines.ctc import CTCSpeechRecognizer

    return isinstance(model, CTCSpeechRecognizer)


def stream_modes(models: dict) -> dict[str, dict]:
    """WebSocket modes this app offers: ``{mode: {"role", "kind", "labels"?}}``."""
    modes = {}
    if "stream" in models:
        modes["asr"] = {"role": "stream", "kind": "stream"}
    elif "asr" in models:
        modes["asr"] = {"role": "asr", "kind": session_kind(models["asr"])}
    for role in ("keywords", "digits"):
        if role in models:
            kind = session_kind(models[role])
            modes[role] = {"role": role, "kind": kind, **({"labels": list(models[role].labels)}
                                                           if kind == "keywords" else {})}
    return modes


# -- the app --------------------------------------------------------------------------------------------------
class _Service:
    """The loaded models, the limits, the inference pool and the count of open streams."""

    def __init__(self, models: dict, limits: Limits, chunk_timings: list | None = None) -> None:
        self.models = models
        self.limits = limits
        self.chunk_timings = chunk_timings
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="rnnlab-serve")
        self.streams = 0
        self.modes = stream_modes(models)

    def model(self, role: str, *fallbacks: str):
        for r in (role, *fallbacks):
            if r in self.models:
                return r, self.models[r]
        names = " or ".join((role, *fallbacks))
        raise ApiError(404, f"no {names} model is loaded on this server (start rnnlab serve with --{role})")

    async def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in the pool; a ``ValueError`` becomes a 400, anything else a 500 (one line)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, functools.partial(_no_grad, fn, *args, **kwargs))
        except ApiError:
            raise
        except ValueError as e:  # InferenceError, AudioError and the models' input checks
            raise ApiError(400, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a failure inside a model: one line to the client, the trace to the log
            log.exception("inference failed in %s", getattr(fn, "__qualname__", fn))
            raise ApiError(500, f"internal error: {type(e).__name__}: {str(e).strip()[:200]}") from None

    async def read_upload(self, file: UploadFile, sample_rate: int) -> torch.Tensor:
        """The uploaded file as mono float32 at ``sample_rate``, within the size and duration limits."""
        name = Path(file.filename or "upload").name[:80] or "upload"
        limit = self.limits.max_upload_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"{name}: file over the {self.limits.upload_size} upload limit")
        if not data:
            raise ApiError(400, f"{name}: empty file")
        seconds = await self.run(_header_seconds, data, name)
        if seconds is not None:
            self.check_seconds(name, seconds)
        wav = await self.run(read_audio_bytes, data, sample_rate, name)
        self.check_seconds(name, wav.numel() / sample_rate)
        return wav

    def check_seconds(self, name: str, seconds: float) -> None:
        if seconds > self.limits.max_audio_seconds:
            raise ApiError(413, f"{name}: {seconds:.1f} s of audio, over the {self.limits.max_audio_seconds:g} s "
                                f"limit")


def _no_grad(fn, *args, **kwargs):
    with torch.no_grad():
        return fn(*args, **kwargs)


def _header_seconds(data: bytes, name: str) -> float | None:
    """Duration from the file header (no decoding), or None where the header does not say."""
    from data.audio import AudioError, AudioRef, audio_duration

    try:
        return audio_duration(AudioRef(data=data, label=name))
    except AudioError:
        return None  # the decoder's own error names the problem


def slot_spans(words: list[str], tags: list[str]) -> list[dict]:
    """BIO tags to spans ``{"slot", "text", "start", "end"}`` (word indices, ``end`` exclusive).

    An ``I-x`` that does not continue an ``x`` span starts one (as conlleval reads it).
    """
    spans: list[dict] = []
    current = None
    for i, tag in enumerate(tags):
        prefix, _, slot = tag.partition("-")
        if prefix == "I" and current is not None and current["slot"] == slot:
            current["end"] = i + 1
            continue
        current = None
        if prefix in ("B", "I") and slot:
            current = {"slot": slot, "start": i, "end": i + 1}
            spans.append(current)
    return [{"slot": s["slot"], "text": " ".join(words[s["start"]:s["end"]]), "start": s["start"], "end": s["end"]}
            for s in spans]


class _BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413 before it is all read."""

    def __init__(self, app, max_bytes: int, label: str) -> None:
        self.app, self.max_bytes, self.label = app, max_bytes, label

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        too_big = f"request body over the {self.label} upload limit"
        if length.isdigit() and int(length) > self.max_bytes:
            return await _error(413, too_big)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, too_big)
            return message

        return await self.app(scope, limited, send)


def api_reference(schema: dict) -> str:
    """A self-contained HTML page of the API from its OpenAPI schema (no script, no CDN: it works offline)."""
    from html import escape

    def fields(ref_or_schema: dict) -> str:
        comps = schema.get("components", {}).get("schemas", {})
        s = ref_or_schema
        if "$ref" in s:
            s = comps.get(s["$ref"].rsplit("/", 1)[-1], {})
        props = s.get("properties", {})
        if not props:
            return ""
        need = set(s.get("required", []))
        rows = "".join(f"<li><code>{escape(k)}</code>{' (required)' if k in need else ''}: "
                       f"{escape(str(v.get('type', v.get('format', 'value'))))}"
                       f"{' — ' + escape(v['description']) if v.get('description') else ''}</li>"
                       for k, v in props.items())
        return f"<ul>{rows}</ul>"

    parts = [f"<h1>{escape(schema['info']['title'])} API</h1>",
             f"<p>{escape(schema['info'].get('description', ''))}</p>",
             '<p>The schema as JSON: <a href="/openapi.json">/openapi.json</a>.</p>']
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            parts.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}"
                         "</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<p>Query parameters:</p><ul>" + "".join(
                    f"<li><code>{escape(p['name'])}</code>{' (required)' if p.get('required') else ''}: "
                    f"{escape(str(p.get('schema', {}).get('type', 'value')))}"
                    f"{' = ' + escape(str(p['schema']['default'])) if 'default' in p.get('schema', {}) else ''}</li>"
                    for p in params) + "</ul>")
            body = op.get("requestBody", {}).get("content", {})
            for kind, spec in body.items():
                parts.append(f"<p>Body ({escape(kind)}):</p>{fields(spec.get('schema', {}))}")
            codes = ", ".join(escape(c) for c in op.get("responses", {}))
            parts.append(f"<p>Responses: {codes}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>rnnlab API</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
            "code{background:#f3f3f3;padding:0 .2em}</style></head><body>" + "".join(parts) + "</body></html>")


def create_app(models: dict[str, object], *, limits: Limits | None = None,
               chunk_timings: list | None = None) -> FastAPI:
    """The web app over ``models`` (role -> loaded model, each role optional) within ``limits``.

    Args:
        models: Loaded models by role (:data:`ROLES`); None leaves a role out.
        limits: What a request or stream may use (default :class:`Limits`).
        chunk_timings: A list to which every audio frame of every stream appends its :class:`ChunkTiming`
            (``rnnlab bench``); None, the default, records nothing.

    Raises:
        ValueError: an unknown role, or a model that cannot play its role (one line).
    """
    limits = limits or Limits()
    models = {role: model for role, model in models.items() if model is not None}
    for role, model in models.items():
        _check_role(role, model)
        if hasattr(model, "eval"):
            model.eval()
    service = _Service(models, limits, chunk_timings)
    app = FastAPI(title="rnnlab", summary="Recurrent speech and text models on this machine.",
                  description="Transcription, keyword spotting, slot filling and G2P with rnnlab models. Errors "
                              "are `{\"error\": \"<one line>\"}`. The WebSocket `/ws/stream` is described in "
                              "docs/usage.md.", version="1", docs_url=None, redoc_url=None)
    app.state.service = service
    # Multipart headers around the file are small: the exact file size is checked once it is read.
    app.add_middleware(_BodyLimit, max_bytes=limits.max_upload_bytes + 64 * 1024, label=limits.upload_size)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        message = exc.detail
        if exc.status_code == 404 and message == "Not Found":
            message = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return _error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        if not errors:
            return _error(422, "invalid request")
        first = errors[0]
        if first.get("type") == "json_invalid":
            return _error(422, "the request body is not valid JSON")
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] == "query":
            where = f"query parameter {'.'.join(loc[1:])}"
        else:
            where = ".".join(p for p in loc if p != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error(422, f"{where}: {first.get('msg', 'invalid')}{more}")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}")

    # -- page ----------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- JSON API ------------------------------------------------------------------------------------------
    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def api_docs() -> str:
        return api_reference(app.openapi())

    @app.get("/api/models", summary="The loaded models by role, the stream modes and the limits")
    async def api_models():
        return {"models": {role: describe(role, m) for role, m in models.items()},
                "modes": service.modes,
                "limits": {**asdict(limits), "max_beam": MAX_BEAM}}

    @app.get("/api/status", summary="Streams in use")
    async def api_status():
        return {"streams_in_use": service.streams, "max_streams": limits.max_streams, "workers": limits.workers}

    @app.post("/api/transcribe", summary="Transcribe an audio file (WAV/FLAC/OGG, any rate)")
    async def api_transcribe(file: UploadFile = File(..., description="the audio file"),
                             beam: int = Query(1, ge=1, le=MAX_BEAM, description="beam size (1 = greedy)")):
        role, model = service.model("asr", "stream")
        rate = model_sample_rate(model)
        wav = await service.read_upload(file, rate)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        text = await service.run(_transcribe, model, wav, beam)
        elapsed = loop.time() - t0
        duration = wav.numel() / rate
        return {"text": text, "duration": round(duration, 3), "rtf": round(elapsed / max(duration, 1e-9), 4),
                "beam": beam, "model": role}

    @app.post("/api/inspect", summary="CTC posteriors over time and the first LSTM layer's gates")
    async def api_inspect(file: UploadFile = File(...),
                          model: str | None = Query(None, pattern="^(asr|stream)$",
                                                    description="which CTC model (default: asr, else stream)")):
        role, m = _ctc_model(service, model)
        wav = await service.read_upload(file, model_sample_rate(m))
        out = await service.run(inspect_ctc, m, wav)
        return {**out, "model": role}

    @app.post("/api/keywords", summary="Classify a short clip (1 s) with the keyword model")
    async def api_keywords(file: UploadFile = File(...)):
        role, model = service.model("keywords")
        wav = await service.read_upload(file, model_sample_rate(model))
        scores = await service.run(classify_scores, model, wav)
        label = max(scores, key=scores.get)
        return {"label": label, "score": round(scores[label], 4),
                "scores": {k: round(v, 4) for k, v in scores.items()}, "duration": round(wav.numel() /
                                                                                      model_sample_rate(model), 3)}

    @app.post("/api/slots", summary="Slot filling and intent of a sentence")
    async def api_slots(body: TextRequest):
        _, model = service.model("slots")
        text = _checked_text(body.text, "text", limits)
        result = (await service.run(model.tag_sentences, [text]))[0]
        words, tags = list(result["words"]), list(result["tags"])
        return {"text": text, "words": words, "tags": tags, "intent": result["intent"],
                "spans": slot_spans(words, tags)}

    @app.post("/api/g2p", summary="Pronunciation (phonemes) of one word")
    async def api_g2p(body: WordRequest):
        _, model = service.model("g2p")
        word = _checked_text(body.word, "word", limits)
        if " " in word:
            raise ApiError(400, f"{word!r}: one word expected")
        phonemes = (await service.run(model.pronounce, [word]))[0]
        return {"word": word, "phonemes": phonemes}

    # -- WebSocket -----------------------------------------------------------------------------------------
    @app.websocket("/ws/stream")
    async def ws_stream(ws: WebSocket):
        await ws.accept()
        if service.streams >= limits.max_streams:
            await _ws_error(ws, f"busy: {service.streams} streams in use, try again later", 1013)
            return
        service.streams += 1
        try:
            await _stream(ws, service, ws.query_params.get("mode", "asr"))
        except WebSocketDisconnect:
            pass  # the client went away: its slot is freed below
        except ApiError as e:
            await _ws_error(ws, e.detail, 1011 if e.status_code >= 500 else 1008)
        except Exception as e:  # noqa: BLE001 - never leave a client without an answer
            log.exception("stream failed")
            await _ws_error(ws, f"internal error: {type(e).__name__}", 1011)
        finally:
            service.streams -= 1

    return app


def _ctc_model(service: _Service, wanted: str | None):
    roles = [wanted] if wanted else ["asr", "stream"]
    for role in roles:
        m = service.models.get(role)
        if m is not None and _is_ctc(m):
            return role, m
    raise ApiError(404, f"no CTC speech model is loaded as {' or '.join(roles)}: look-inside needs one")


def _checked_text(text: str, field: str, limits: Limits) -> str:
    text = " ".join(text.split())
    if not text:
        raise ApiError(400, f"{field} is empty")
    if len(text) > limits.max_text_chars:
        raise ApiError(413, f"{field} has {len(text)} characters, over the {limits.max_text_chars} limit")
    return text


def _transcribe(model, wav: torch.Tensor, beam: int) -> str:
    decoder = make_decoder(model, beam=beam) if beam > 1 else None
    return model.transcribe_waveforms([wav], decoder=decoder)[0]


# -- the stream protocol ---------------------------------------------------------------------------------------
async def _ws_error(ws: WebSocket, message: str, code: int = 1008) -> None:
    """Sends ``{"type": "error", "error": ...}`` and closes, unless the client is gone already."""
    try:
        if ws.application_state == WebSocketState.CONNECTED:
            await ws.send_json({"type": "error", "error": one_line(message)})
            await ws.close(code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


class _StreamEnd(Exception):
    """A protocol error: ``message`` goes to the client, then the stream closes with ``code``."""

    def __init__(self, message: str, code: int = 1008) -> None:
        super().__init__(message)
        self.code = code


def _start_rate(obj: dict) -> int:
    rate = obj.get("sample_rate", 16000)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != int(rate) or \
            not MIN_STREAM_RATE <= rate <= MAX_STREAM_RATE:
        raise _StreamEnd(f"sample_rate must be an integer from {MIN_STREAM_RATE} to {MAX_STREAM_RATE}, "
                         f"got {rate!r}")
    fmt = obj.get("format", "pcm16")
    if fmt != "pcm16":
        raise _StreamEnd(f"format must be 'pcm16' (little-endian 16-bit mono), got {fmt!r}")
    return int(rate)


class _Stream:
    """One connection's state: the session, the resampler and how much audio has arrived."""

    def __init__(self, session, client_rate: int, mode: str) -> None:
        self.session, self.client_rate, self.mode = session, client_rate, mode
        self.resampler = StreamResampler(client_rate, session.sample_rate)
        self.samples = 0
        self.frames = 0
        self.compute_s = 0.0  # of the last accept call

    def accept(self, samples: np.ndarray) -> list[dict]:
        t0 = time.perf_counter()
        x = self.resampler.accept(torch.from_numpy(samples))
        out = self.session.accept(x) if x.numel() else []
        self.compute_s = time.perf_counter() - t0
        return out

    def finish(self) -> list[dict]:
        x = self.resampler.flush()
        out = self.session.accept(x) if x.numel() else []
        return out + self.session.finish()


async def _stream(ws: WebSocket, service: _Service, mode: str) -> None:
    """Runs the protocol on an accepted WebSocket (see docs/usage.md, "Serving")."""
    limits = service.limits
    try:
        if mode not in service.modes:
            offered = ", ".join(service.modes) or "none"
            raise _StreamEnd(f"mode {mode!r} is not available on this server (modes: {offered})")
        stream: _Stream | None = None
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), timeout=limits.stream_idle_seconds)
            except asyncio.TimeoutError:
                raise _StreamEnd(f"idle for {limits.stream_idle_seconds:g} s: stream closed", 1001) from None
            received = time.perf_counter()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if stream is None:
                    raise _StreamEnd('audio before start: send {"type": "start", "sample_rate": 16000, '
                                     '"format": "pcm16"} first')
                if len(data) % 2:
                    raise _StreamEnd(f"odd-length audio frame ({len(data)} bytes): frames are 16-bit samples")
                stream.samples += len(data) // 2
                if stream.samples > limits.max_audio_seconds * stream.client_rate:
                    raise _StreamEnd(f"stream longer than the {limits.max_audio_seconds:g} s limit", 1009)
                if data:
                    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
                    for out in await service.run(stream.accept, samples):
                        await ws.send_json(out)
                    if service.chunk_timings is not None:
                        client = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
                        seconds = samples.size / stream.client_rate
                        service.chunk_timings.append(ChunkTiming(client, stream.frames, seconds, received,
                                                                 time.perf_counter(), stream.compute_s))
                    stream.frames += 1
                continue
            try:
                obj = json.loads(text or "")
            except json.JSONDecodeError:
                raise _StreamEnd(f"control message is not JSON: {one_line(text or '', 60)!r}") from None
            kind = obj.get("type") if isinstance(obj, dict) else None
            if kind == "start":
                if stream is not None:
                    raise _StreamEnd("start sent twice: one stream per connection")
                rate = _start_rate(obj)
                spec = service.modes[mode]
                session = await service.run(make_session, service.models[spec["role"]], spec["kind"],
                                            display_name(service.models[spec["role"]]))
                stream = _Stream(session, rate, mode)
                await ws.send_json({"type": "ready", "mode": mode, "sample_rate": rate})
            elif kind == "stop":
                if stream is None:
                    raise _StreamEnd("stop before start")
                for out in await service.run(stream.finish):
                    await ws.send_json(out)
                await ws.close(1000)
                return
            else:
                raise _StreamEnd(f"unknown control message type {kind!r} (expected 'start' or 'stop')"
                                 if isinstance(obj, dict) else "a control message must be a JSON object")
    except _StreamEnd as e:
        await _ws_error(ws, str(e), e.code)


__all__ = ["ApiError", "ChunkTiming", "Limits", "ROLES", "create_app", "slot_spans", "stream_modes"]
