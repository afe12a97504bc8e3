"""Speech data at corpus scale: hub snapshots as local copies, only the asked splits prepared, no audio held
per utterance, durations cached across runs, and hub errors that say what happened."""

import os
import tracemalloc

import pytest

from data.errors import DataError
from data.speech import SpeechDataModule
from pipelines.commands.bench.data_scale import write_corpus


def _dm(root, **kw):
    kw = {"dataset": None, "data_dir": str(root), "config_name": "clean", "train_split": "train.100",
          "val_split": "validation", "test_split": "validation", "duration_column": None, "validate": False,
          "min_duration": 0.05, "batch_size": 8, **kw}
    return SpeechDataModule(**kw)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A LibriSpeech-shaped hub snapshot: clean/{train.100,train.360,validation}/*.parquet + README configs."""
    root = write_corpus(tmp_path_factory.mktemp("snap") / "librispeech", 3000, n_val=40, shard_rows=1000)
    (root / "clean" / "train.360").mkdir()
    src = next((root / "clean" / "train.100").glob("*.parquet"))
    (root / "clean" / "train.360" / "0000.parquet").write_bytes(src.read_bytes())
    readme = (root / "README.md").read_text()
    (root / "README.md").write_text(readme.replace(
        "  - split: validation", "  - split: train.360\n    path: clean/train.360/*.parquet\n  - split: validation"))
    return root


def _arrow_files():
    import datasets

    # Where datasets writes: its config reads HF_DATASETS_CACHE once, when the library is first imported (a test
    # that imported it under a temporary HF_DATASETS_CACHE leaves it there).
    cache = str(datasets.config.HF_DATASETS_CACHE)
    return {os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".arrow")}


def test_hub_snapshot_loads_by_config_and_split_names_and_prepares_only_those(snapshot):
    before = _arrow_files()
    dm = _dm(snapshot)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3000 and len(dm.datasets["val"]) == 40
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveforms"].shape[0] == 8 and batch["ids"][0].count("-") == 2  # ids from the id column
    new = _arrow_files() - before
    assert new and not any("train.360" in f for f in new)  # the config's other training split is not prepared


def test_snapshot_config_and_split_errors_name_what_exists(snapshot):
    with pytest.raises(DataError, match=r"no config 'other' \(configs are \['clean'\]\)"):
        _dm(snapshot, config_name="other").setup("fit")
    with pytest.raises(DataError, match=r"no split 'train.500' \(splits are \['train.100', 'train.360', "):
        _dm(snapshot, train_split="train.500").setup("fit")


def test_no_encoded_audio_is_held_per_utterance(snapshot):
    encoded = sum(p.stat().st_size for p in (snapshot / "clean" / "train.100").glob("*.parquet"))
    _dm(snapshot).setup("fit")  # prepares the Arrow cache and the duration cache outside the measurement
    tracemalloc.start()
    dm = _dm(snapshot)
    dm.setup("fit")
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ds = dm.datasets["train"]
    assert len(ds) == 3000 and encoded > 5_000_000
    # 3000 utterances of FLAC: the index (row numbers, durations) is a few bytes per utterance, not the audio.
    assert held < encoded / 20, (held, encoded)
    assert not any(isinstance(v, (list, dict)) and len(v) >= 3000 for p in ds.parts for v in vars(p).values())
    assert ds[0]["waveform"].numel() > 0 and ds.utterances[5].audio.data  # audio read from the table on access


def test_durations_read_once_then_cached_beside_the_dataset(snapshot, monkeypatch):
    import data.row_index as speech  # where rows are indexed (their audio headers read)

    calls = []
    real = speech.audio_duration
    monkeypatch.setattr(speech, "audio_duration", lambda ref: calls.append(1) or real(ref))
    dm = _dm(snapshot, train_split="train.100[:500]", val_split="validation")
    dm.setup("fit")
    first = len(calls)
    dm2 = _dm(snapshot, train_split="train.100[:500]", val_split="validation")
    dm2.setup("fit")
    assert first >= 500 and len(calls) == first  # the second run reads no header
    assert dm2.datasets["train"].durations.tolist() == dm.datasets["train"].durations.tolist()
    cache_dir = os.path.dirname(dm.datasets["train"].parts[0].table.cache_files[0]["filename"])
    assert any(f.startswith("rnnlab-durations-") for f in os.listdir(cache_dir))


def test_cache_audio_defaults_to_off_for_large_splits(snapshot, monkeypatch):
    import data.speech as speech

    dm = _dm(snapshot)
    dm.setup("fit")
    assert dm.datasets["train"].cache_audio  # 3000 x ~0.25 s fits in the budget
    monkeypatch.setattr(speech, "AUTO_CACHE_BYTES", 1000)
    dm = _dm(snapshot)
    dm.setup("fit")
    assert not dm.datasets["train"].cache_audio


def _hub_env(monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    import data.sources as sources

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(key, "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "_AUTO_OFFLINE", None)
    return sources


def test_unreachable_hub_switches_to_offline_and_says_so(monkeypatch):
    import httpx
    from huggingface_hub import HfApi

    sources = _hub_env(monkeypatch)

    def refuse(self, repo_id, **kw):
        raise httpx.ConnectError("proxy refused the connection")

    monkeypatch.setattr(HfApi, "dataset_info", refuse)
    with pytest.raises(DataError) as e:
        sources.load_split("someone/not-cached-xyz", "train")
    msg = str(e.value)
    assert "could not be reached (ConnectError: proxy refused" in msg and "DATA_DIR" in msg and "\n" not in msg
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_unknown_repository_is_not_called_unreachable(monkeypatch):
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    sources = _hub_env(monkeypatch)

    def missing(self, repo_id, **kw):
        request = httpx.Request("GET", f"https://huggingface.co/api/datasets/{repo_id}")
        raise RepositoryNotFoundError("404 Client Error", response=httpx.Response(404, request=request))

    monkeypatch.setattr(HfApi, "dataset_info", missing)
    with pytest.raises(DataError, match=r"'someone/nope' is not a dataset on .*DATA_DIR"):
        sources.load_split("someone/nope", "train")


def test_loading_script_and_missing_config_errors_say_so():
    from data.sources import _classify

    e = _classify(RuntimeError("Dataset scripts are no longer supported, but found librispeech_asr.py"),
                  where="openslr/librispeech_asr", split="train.100", hub=True)
    assert "ships a loading script (librispeech_asr.py)" in str(e) and "could not be reached" not in str(e)
    e = _classify(ValueError("BuilderConfig 'cleen' not found. Available: ['clean', 'other', 'all']"),
                  where="openslr/librispeech_asr", split="train.100", hub=True)
    assert str(e) == "openslr/librispeech_asr: no config 'cleen' (configs are ['clean', 'other', 'all']); " \
                     "set data.config_name"
