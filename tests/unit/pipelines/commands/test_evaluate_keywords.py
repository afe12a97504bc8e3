"""``rnnlab evaluate-keywords``: accuracy, per-class accuracy and confusion matrix agree, beside the MFCC baseline."""

import json

import lightning as L
import pytest
import torch

from pipelines.classifier import UtteranceClassifier
from pipelines.commands.evaluate_keywords import main as evaluate_main
from tests.fixtures.word_audio import write_tone_words


def test_numbers_agree_with_each_other(tmp_path, capsys):
    data = write_tone_words(tmp_path / "words", per_label={"train": 8, "validation": 4})
    torch.manual_seed(0)
    model = UtteranceClassifier(vocab={"labels": ["0", "1", "2"]}, sample_rate=8000, n_mels=16, hidden_size=8,
                                num_layers=1)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(model)
    ckpt = tmp_path / "k.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "r.json"
    assert evaluate_main(["--ckpt", str(ckpt), "--data", str(data), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    cm = torch.tensor(res["confusion"])
    assert res["clips"] == 12 == int(cm.sum()) and cm.sum(1).tolist() == [4, 4, 4]
    assert res["accuracy"] == pytest.approx(100 * float(cm.trace()) / 12, abs=0.01)
    assert res["per_class"]["1"] == pytest.approx(100 * int(cm[1, 1]) / 4)
    assert res["baseline_accuracy"] >= 75  # the tones differ in pitch: mean MFCCs separate them
    printed = capsys.readouterr().out
    assert "| true \\ predicted | 0 | 1 | 2 |" in printed and f"**{res['accuracy']:.2f}%**" in printed


def test_a_speech_model_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--ckpt", str(tmp_path / "none.ckpt"), "--data", str(tmp_path)])
    assert "checkpoint not found" in capsys.readouterr().err
