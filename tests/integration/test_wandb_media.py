"""W&B media (offline run): validation examples as a table with playable audio, reference and hypothesis."""

import json

import pytest

from tests.integration.helpers import rnnlab


def test_ctc_validation_examples_are_logged_with_audio(speech_corpus_dir, tmp_path):
    rnnlab("fit", "-c", "defaults", "-c", "tiny/ctc.yaml", f"--data.init_args.data_dir={speech_corpus_dir}",
           "--trainer.max_epochs=1", "--run.wandb=offline", "--model.init_args.val_examples=2",
           f"--run.root={tmp_path}", "--run.name=m", env={"WANDB_MODE": "offline"})
    media = list((tmp_path / "m" / "wandb").glob("offline-run-*/files/media"))
    assert media, "no W&B media directory"
    audio = list(media[0].rglob("*.wav"))
    tables = list(media[0].rglob("*.table.json"))
    assert audio and tables
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["id", "reference", "hypothesis"]
    assert len(table["data"]) == len(audio) and all(isinstance(row[1], str) and row[1] for row in table["data"])
    import soundfile as sf

    info = sf.info(audio[0])
    assert info.samplerate == 16000 and info.frames > 1000  # a real clip at the model's rate


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
