"""Shipped models: pack a run's checkpoint, list it, load it by name (checksum checked), and hf:// downloads."""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import pytest
import soundfile as sf
import torch

from data.text import CharTokenizer
from pipelines.commands.models import main as models_main
from pipelines.commands.pack import main as pack_main
from pipelines.commands.transcribe import main as transcribe_main
from pipelines.ctc import CTCSpeechRecognizer
from pipelines.inference import InferenceError, load_model, resolve_checkpoint
from pipelines.inference.shipped import available, sha256_of

RATE = 16000


def _run_checkpoint(tmp_path):
    """A random-weight CTC model saved as a run would save it: checkpoints/best.ckpt + config.yaml + summary."""
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=3, hidden_size=32,
                                num_layers=2, bidirectional=True, init_from="/somewhere/else.ckpt")
    with torch.no_grad():
        model.model.head.proj.weight.mul_(10.0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(run / "checkpoints" / "best.ckpt")
    (run / "config.yaml").write_text("model:\n  class_path: pipelines.ctc.CTCSpeechRecognizer\n")
    (run / "summary.json").write_text(json.dumps({"val/cer": 12.345678, "val/wer": 30.0, "val/loss": 1.0}))
    return model.eval(), run / "checkpoints" / "best.ckpt"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    model, ckpt = _run_checkpoint(tmp_path)
    out = tmp_path / "models"
    assert pack_main(["--ckpt", str(ckpt), "--name", "tiny-en", "--out", str(out), "--data", "arctic=CC0 1.0",
                      "--command", "make train-ctc", "--summary", "a test model"]) == 0
    monkeypatch.setenv("RNNLAB_MODELS", str(out))
    return model, ckpt, out


def _wav(path, seconds=1.2):
    t = torch.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.2 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 1.5 * t)).numpy(), RATE)
    return path


def test_pack_writes_compact_weights_manifest_and_card(shipped):
    model, ckpt, out = shipped
    entry = json.loads((out / "manifest.json").read_text())["models"]["tiny-en"]
    path = out / "tiny-en" / "model.ckpt"
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["bytes"] == path.stat().st_size
    assert entry["metrics"] == {"val/cer": 12.3457, "val/wer": 30.0}  # loss left out
    assert entry["data"] == [{"name": "arctic", "licence": "CC0 1.0"}] and entry["dtype"] == "float16"
    assert entry["params"] == sum(p.numel() for p in model.parameters())
    packed = torch.load(path, weights_only=True)
    assert "optimizer_states" not in packed and packed["hyper_parameters"]["init_from"] is None
    assert packed["state_dict"]["model.head.proj.weight"].dtype == torch.float16
    assert path.stat().st_size < 0.7 * ckpt.stat().st_size
    assert (out / "tiny-en" / "config.yaml").is_file()
    card = (out / "tiny-en" / "README.md").read_text()
    assert "# tiny-en" in card and "CC0 1.0" in card and "make train-ctc" in card


def test_a_shipped_name_loads_and_transcribes_like_the_run(shipped, tmp_path, capsys):
    model, ckpt, out = shipped
    assert "tiny-en" in available()
    loaded = load_model("tiny-en", kind="speech")
    # float16 storage: weights within half precision of the originals, same transcript on a clip
    w0 = dict(model.named_parameters())["model.head.proj.weight"]
    w1 = dict(loaded.named_parameters())["model.head.proj.weight"]
    assert w1.dtype == torch.float32 and torch.allclose(w0, w1, rtol=1e-3, atol=1e-3)
    wav = _wav(tmp_path / "a.wav")
    assert transcribe_main(["--ckpt", "tiny-en", str(wav)]) == 0
    by_name = capsys.readouterr().out
    assert transcribe_main(["--ckpt", str(ckpt), str(wav)]) == 0
    assert capsys.readouterr().out == by_name and by_name.startswith(f"{wav}\t")


def test_models_lists_and_verifies(shipped, capsys):
    assert models_main([]) == 0
    out = capsys.readouterr().out
    assert "tiny-en" in out and "speech-to-text" in out and "val/cer 12.35" in out
    assert models_main(["--verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tiny-en"]["task"] == "speech-to-text"


def test_a_changed_shipped_file_is_refused(shipped, capsys):
    _, _, out = shipped
    path = out / "tiny-en" / "model.ckpt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InferenceError, match="fails its checksum"):
        load_model("tiny-en")
    with pytest.raises(SystemExit) as e:
        transcribe_main(["--ckpt", "tiny-en", "x.wav"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rnnlab transcribe: error: shipped model 'tiny-en'" in err
    with pytest.raises(SystemExit):
        models_main(["--verify"])


def test_unknown_names_and_paths(shipped):
    with pytest.raises(InferenceError, match=r"neither a file nor a shipped model \(shipped: (.*, )?tiny-en[,;]"):
        resolve_checkpoint("englsh")
    with pytest.raises(InferenceError, match="checkpoint not found: runs/x.ckpt"):
        resolve_checkpoint("runs/x.ckpt")


def test_the_package_manifest_matches_its_files(monkeypatch):
    # Whatever models ship with the package: each file exists and its checksum holds.
    monkeypatch.delenv("RNNLAB_MODELS", raising=False)
    for name, m in available().items():
        assert sha256_of(m.verify()) == m.entry["sha256"], name


class _Hub(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for the hub's file endpoint (``/<owner>/<repo>/resolve/<rev>/<file>``)."""

    files: dict[str, bytes] = {}

    def _head(self) -> bytes | None:
        key = self.path.split("/resolve/", 1)[-1].split("/", 1)[-1] if "/resolve/" in self.path else None
        data = self.files.get(key) if self.path.startswith("/owner/repo/") else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if self.path.startswith("/owner/repo/")
                             else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_HEAD(self):  # noqa: N802
        self._head()

    def do_GET(self):  # noqa: N802
        data = self._head()
        if data is not None:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_hf_address_downloads_through_huggingface_hub(shipped, tmp_path):
    _, ckpt, _ = shipped
    _Hub.files = {"models/best.ckpt": ckpt.read_bytes()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wav = _wav(tmp_path / "a.wav")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}

    def rnnlab(*args, **kw):
        return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                              timeout=120, env={**env, **kw})

    try:
        first = rnnlab("transcribe", "--ckpt", "hf://owner/repo/models/best.ckpt", str(wav))
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith(f"{wav}\t")
        cached = list((tmp_path / "hf").rglob("best.ckpt"))
        assert cached and cached[0].read_bytes() == ckpt.read_bytes()
        missing = rnnlab("transcribe", "--ckpt", "hf://owner/repo/nope.ckpt", str(wav))
        assert missing.returncode == 2
        assert missing.stderr.strip() == "rnnlab transcribe: error: hf://owner/repo/nope.ckpt: owner/repo has no " \
                                         "file 'nope.ckpt'"
    finally:
        server.shutdown()
    # offline (the server is gone): the cached copy is used; an uncached file says it cannot reach the hub
    code = ("import sys; from pipelines.inference import resolve_checkpoint, InferenceError\n"
            "print(resolve_checkpoint('hf://owner/repo/models/best.ckpt'))\n"
            "try:\n    resolve_checkpoint('hf://owner/repo/other.ckpt')\nexcept InferenceError as e:\n    print(e)\n")
    offline = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**env, "HF_HUB_OFFLINE": "1"})
    cached_path, message = offline.stdout.strip().splitlines()
    assert Path(cached_path).read_bytes() == ckpt.read_bytes()
    assert message == "hf://owner/repo/other.ckpt: not in the local cache and the hub cannot be reached " \
                      "(offline: HF_HUB_OFFLINE is set, or no network)"
    with pytest.raises(InferenceError, match="expected hf://owner/repo/path/to/file.ckpt"):
        resolve_checkpoint("hf://owner")


def test_every_shipped_file_is_package_data():
    # pip install must carry the models: each file under pipelines/pretrained matches a package-data pattern.
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    root = Path(__file__).resolve().parents[4]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pipelines"]
    pretrained = root / "pipelines" / "pretrained"
    for f in pretrained.rglob("*"):
        if f.is_file() and f.suffix != ".py" and "__pycache__" not in f.parts:
            rel = str(f.relative_to(root / "pipelines"))
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would not be installed"


def test_pack_names_the_task_of_every_pipeline():
    from pipelines.autoencoder import AudioAutoencoder
    from pipelines.classifier import UtteranceClassifier
    from pipelines.commands.pack import TASKS
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.seq2seq import G2PModel, LASRecognizer
    from pipelines.slot_filling import SlotFillingModule
    from pipelines.transducer import TransducerSpeechRecognizer
    from pipelines.word_embedding import SiameseWordEmbedder

    classes = (AudioAutoencoder, UtteranceClassifier, CTCSpeechRecognizer, G2PModel, LASRecognizer,
               SlotFillingModule, TransducerSpeechRecognizer, SiameseWordEmbedder)
    assert sorted(TASKS) == sorted(c.__name__ for c in classes)
