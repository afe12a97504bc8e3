"""Test-wide setup: no network, no W&B uploads, caches in a temp dir; shared fixtures and data locations."""

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="rnnlab-tests-"))
for key, value in {
    "WANDB_MODE": "disabled",
    "WANDB_DIR": str(_TMP / "wandb"),
    "WANDB_CACHE_DIR": str(_TMP / "wandb-cache"),
    "WANDB_SILENT": "true",
    "HF_HOME": str(_TMP / "hf"),
    "HF_DATASETS_CACHE": str(_TMP / "hf" / "datasets"),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RNNLAB_CACHE": str(_TMP / "rnnlab-cache"),
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[key] = value
os.environ.pop("RNNLAB_RUN_NAME", None)
os.environ.pop("RNNLAB_WANDB_ID", None)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RNNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a local public dataset copy, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"local dataset copy {path} is absent (set RNNLAB_SHARED_DATA to its parent)")
    return path


@pytest.fixture(autouse=True)
def _clean_run_env(monkeypatch):
    # Run names and W&B ids are inherited through the environment inside one job; tests are separate jobs.
    monkeypatch.delenv("RNNLAB_RUN_NAME", raising=False)
    monkeypatch.delenv("RNNLAB_WANDB_ID", raising=False)


@pytest.fixture
def slot_data_dir(tmp_path) -> Path:
    """A small, learnable slot-filling corpus (train/validation/test jsonl) in the local-copy layout."""
    from tests.fixtures.slot_corpus import write_slot_corpus

    return write_slot_corpus(tmp_path / "slots")


@pytest.fixture(scope="session")
def speech_corpus_dir(tmp_path_factory) -> Path:
    """A small synthetic spoken corpus (audiofolder train/validation/test), built once per test session."""
    from data.synth import build_corpus

    return build_corpus(tmp_path_factory.mktemp("speech") / "corpus", n_train=16, n_validation=6, n_test=6,
                        seed=1, workers=1, progress=False)


@pytest.fixture
def one_thread():
    """Runs a test on one torch thread: tiny recurrent models train faster without intra-op threading."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
