"""``rnnlab serve``: a local web app (microphone, files, typed text, look inside) over shipped or trained models.

Usage: rnnlab serve [--asr M] [--stream M] [--keywords M] [--digits M] [--slots M] [--g2p M] [--host H] [--port N]

Each role takes a checkpoint, a shipped model's name or ``hf://...`` (``none`` leaves the role out). The defaults
are the shipped models ``english``, ``english-stream``, ``keywords``, ``digits``, ``snips`` and ``g2p``; one that
is not installed is left out with a warning (the page hides what it needs). A model named on the command line
that cannot be loaded is an error, and so is no model at all. The app listens on 127.0.0.1:8000 by default
(``--port 0``: a free port); the API, the WebSocket protocol and the limits are in docs/usage.md ("Serving").
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from pipelines.commands._common import ArgumentParser, at_least, fail, warn
from pipelines.serve.app import DEFAULT_MODELS

COMMAND = "serve"

# role -> (default shipped model, kind for load_model, what the page loses without it)
NONE = "none"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parser() -> ArgumentParser:
    ap = ArgumentParser(prog=f"rnnlab {COMMAND}", description="Serve models on a local web page and a JSON/WebSocket "
                        "API. Each model option takes a checkpoint, a shipped model's name, hf://... or 'none'.")
    for role, (default, _, purpose) in DEFAULT_MODELS.items():
        ap.add_argument(f"--{role}", default=None, metavar="MODEL",
                        help=f"model for {purpose} (default: shipped {default!r} if installed)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=at_least(0, "0 = a free port"), default=8000)
    ap.add_argument("--max-upload-mb", type=float, default=10.0, help="largest uploaded file (default 10 MB)")
    ap.add_argument("--max-audio-s", type=float, default=60.0, help="longest audio, uploaded or streamed (60 s)")
    ap.add_argument("--max-text-chars", type=at_least(1), default=500, help="longest typed text (500)")
    ap.add_argument("--max-streams", type=at_least(1), default=4, help="microphone streams at once (4)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="close a stream silent for this long (30 s)")
    ap.add_argument("--workers", type=at_least(1), default=2, help="inference threads (2)")
    ap.add_argument("--device", default="cpu")
    return ap


def load_models(args) -> dict:
    """The models of every role: explicit ones must load; missing default shipped models are skipped with a warning.

    Raises:
        CommandError: a model given explicitly that cannot be used, or no model at all (one line, status 2).
    """
    from pipelines.inference import InferenceError, load_model
    from pipelines.inference import shipped as shipped_models
    from pipelines.serve.streams import can_stream

    models = {}
    for role, (default, kind, purpose) in DEFAULT_MODELS.items():
        spec = getattr(args, role)
        if spec is not None and spec.lower() == NONE:
            continue
        if spec is None and shipped_models.find(default) is None:
            warn(COMMAND, f"shipped model {default!r} not installed: the page works without {role} ({purpose})")
            continue
        name = spec or default
        try:
            model = load_model(name, kind=kind, device=args.device)
        except InferenceError as e:
            fail(COMMAND, f"--{role}: {e}")
        if role == "digits" and not (hasattr(model, "transcribe_waveforms") or hasattr(model, "classify_waveforms")):
            fail(COMMAND, f"--digits: {name} is a {type(model).__name__} checkpoint, not a speech model or classifier")
        if role == "stream" and not can_stream(model):
            fail(COMMAND, f"--stream: {name} cannot stream (it must be a unidirectional CTC model); give it as --asr")
        models[role] = model
    if not models:
        fail(COMMAND, "no model to serve: give at least one of " + ", ".join(f"--{r}" for r in DEFAULT_MODELS)
             + " (or install the shipped models)")
    return models


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        fail(COMMAND, f"--host {host}: cannot resolve it ({e.strerror})")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        fail(COMMAND, f"cannot listen on {host}:{port}: {e.strerror or e}")
    sock.set_inheritable(True)
    return sock


def run_server(app, sock: socket.socket) -> None:
    """Serves ``app`` on the listening ``sock`` with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", ws_max_size=1 << 20, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        from pipelines.serve import Limits, create_app
    except ImportError as e:  # pragma: no cover - fastapi and uvicorn are dependencies
        fail(COMMAND, f"the web app needs fastapi and uvicorn ({e}); pip install rnnlab again")
    try:
        limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_audio_seconds=args.max_audio_s,
                        max_text_chars=args.max_text_chars, max_streams=args.max_streams,
                        stream_idle_seconds=args.idle_s, workers=args.workers)
    except ValueError as e:
        fail(COMMAND, str(e))
    if not is_loopback(args.host):
        warn(COMMAND, f"listening on {args.host}: other machines can use these models; the page's microphone "
                      f"needs https or localhost in their browsers")
    models = load_models(args)
    try:
        app = create_app(models, limits=limits)
    except ValueError as e:
        fail(COMMAND, str(e))
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(f"{role}={getattr(m, 'rnnlab_source', type(m).__name__)}" for role, m in models.items())
    print(f"rnnlab {COMMAND}: open http://{shown}:{port}/ (models: {names})", flush=True)
    try:
        run_server(app, sock)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print(f"rnnlab {COMMAND}: stopped", file=sys.stderr)
    return 0
