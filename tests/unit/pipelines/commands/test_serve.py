"""``rnnlab serve``: which models it loads (shipped defaults, explicit ones), its one-line errors, and a real run."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import lightning as L
import pytest

from pipelines.commands import serve
from pipelines.inference.shipped import sha256_of
from tests.unit.pipelines.serve.helpers import tiny_ctc, trained_keywords, trained_slots

REPO = Path(__file__).resolve().parents[4]


def save(model, path: Path) -> str:
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ckpts")
    return {"keywords": save(trained_keywords(steps=5), root / "keywords.ckpt"),
            "slots": save(trained_slots(steps=5), root / "slots.ckpt"),
            "bidi": save(tiny_ctc(bidirectional=True), root / "bidi.ckpt")}


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    """No shipped model anywhere: an empty model folder is the only one searched (not the package's own)."""
    (tmp_path / "manifest.json").write_text('{"models": {}}')
    monkeypatch.setenv("RNNLAB_MODELS", str(tmp_path))
    monkeypatch.setattr("pipelines.inference.shipped.roots", lambda: [tmp_path])


@pytest.fixture
def served(monkeypatch) -> list:
    """Replaces uvicorn: records the app and the socket it would serve."""
    calls = []
    monkeypatch.setattr(serve, "run_server", lambda app, sock: calls.append((app, sock.getsockname())))
    return calls


def run(argv, capsys) -> tuple[int, str, list[str]]:
    try:
        code = serve.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_without_any_model_it_warns_per_role_then_fails(no_shipped, served, capsys):
    code, out, err = run([], capsys)
    assert code == 2 and not served and out == ""
    assert err[:6] == [f"rnnlab serve: warning: shipped model {default!r} not installed: the page works without "
                       f"{role} ({purpose})" for role, (default, _, purpose) in serve.DEFAULT_MODELS.items()]
    assert err[6].startswith("rnnlab serve: error: no model to serve: give at least one of --asr") and len(err) == 7


def test_explicit_models_load_and_the_address_is_printed(no_shipped, served, ckpts, capsys):
    code, out, err = run(["--keywords", ckpts["keywords"], "--slots", ckpts["slots"], "--asr", "none",
                          "--stream", "NONE", "--digits", "none", "--g2p", "none", "--port", "0"], capsys)
    assert code == 0 and err == ["rnnlab serve: stopped"]
    (app, (host, port)), = served
    assert host == "127.0.0.1" and port > 0
    assert out.strip() == (f"rnnlab serve: open http://127.0.0.1:{port}/ (models: keywords={ckpts['keywords']}, "
                           f"slots={ckpts['slots']})")
    assert set(app.state.service.models) == {"keywords", "slots"}
    assert app.state.service.limits.max_upload_bytes == 10 * 1024 * 1024


def test_a_shipped_default_is_found_by_name(tmp_path, monkeypatch, served, ckpts, capsys):
    folder = tmp_path / "keywords"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(Path(ckpts["keywords"]).read_bytes())
    entry = {"task": "keywords", "sha256": sha256_of(folder / "model.ckpt")}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {"keywords": entry}}))
    monkeypatch.setenv("RNNLAB_MODELS", str(tmp_path))
    monkeypatch.setattr("pipelines.inference.shipped.roots", lambda: [tmp_path])
    code, out, err = run(["--port", "0", "--max-streams", "3", "--max-upload-mb", "2"], capsys)
    assert code == 0 and "(models: keywords=keywords)" in out
    assert len([line for line in err if "warning: shipped model" in line]) == 5
    service = served[0][0].state.service
    assert set(service.models) == {"keywords"} and service.limits.max_streams == 3
    assert service.limits.max_upload_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(("args", "words"), [
    (["--asr", "missing.ckpt"], "--asr: checkpoint not found: missing.ckpt"),
    (["--slots", "KEYWORDS"], "--slots: "),
    (["--stream", "BIDI"], "--stream: BIDI cannot stream (it must be a unidirectional CTC model); give it as --asr"),
    (["--keywords", "no-such-model"], "'no-such-model' is neither a file nor a shipped model"),
    (["--asr", "BIDI", "--max-audio-s", "0"], "limit max_audio_seconds must be positive"),
    (["--asr", "BIDI", "--port", "-1"], "--port: must be an integer >= 0 (0 = a free port)"),
    (["--asr", "BIDI", "--host", "no.such.host.invalid"], "--host no.such.host.invalid: cannot resolve it"),
])
def test_bad_options_are_one_line_errors(no_shipped, served, ckpts, capsys, args, words):
    args = [ckpts["bidi"] if a == "BIDI" else ckpts["keywords"] if a == "KEYWORDS" else a for a in args]
    words = words.replace("BIDI", ckpts["bidi"])
    code, _, err = run([*args, "--port", "0"] if "--port" not in args else args, capsys)
    errors = [line for line in err if ": warning: " not in line]
    assert code == 2 and not served and len(errors) == 1
    assert errors[0].startswith("rnnlab serve: error: ") and words in errors[0], errors[0]
    if args[:1] == ["--slots"]:
        assert "UtteranceClassifier checkpoint, not a slot filling model" in errors[0]


def test_a_busy_port_and_a_public_host(no_shipped, served, ckpts, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run(["--asr", ckpts["bidi"], "--port", str(port)], capsys)
    assert code == 2 and err[-1] == f"rnnlab serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    code, out, err = run(["--asr", ckpts["bidi"], "--host", "0.0.0.0", "--port", "0"], capsys)
    assert code == 0 and out.startswith("rnnlab serve: open http://0.0.0.0:")
    assert "rnnlab serve: warning: listening on 0.0.0.0: other machines can use these models" in err[0]
    assert serve.is_loopback("localhost") and serve.is_loopback("::1") and not serve.is_loopback("192.168.1.5")


def test_rnnlab_serve_answers_over_http_until_interrupted(no_shipped, ckpts):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--slots", ckpts["slots"],
                             "--keywords", ckpts["keywords"], "--asr", "none", "--stream", "none", "--digits",
                             "none", "--g2p", "none", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("rnnlab serve: open http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/models", timeout=20) as r:
            assert set(json.loads(r.read())["models"]) == {"slots", "keywords"}
        req = urllib.request.Request(url + "api/slots", data=json.dumps({"text": "fly to boston"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            assert json.loads(r.read())["words"] == ["fly", "to", "boston"]
        with urllib.request.urlopen(url, timeout=20) as r:
            assert b'id="transcript"' in r.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "rnnlab serve: stopped" and "Traceback" not in err
