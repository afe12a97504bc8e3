"""Learning check: a tiny CTC model overfits ~10 real ARCTIC utterances (CER < 0.1) in well under a minute."""

import time

import lightning as L
import pytest
import torch

from data.speech import SpeechDataModule
from pipelines.ctc import CTCSpeechRecognizer
from tests.integration.helpers import arctic_subset


def test_tiny_ctc_overfits_ten_arctic_utterances(tmp_path, one_thread):
    data_dir = arctic_subset(tmp_path, 10)
    torch.manual_seed(0)
    dm = SpeechDataModule(dataset=None, data_dir=str(data_dir), train_split="train", val_split="train",
                          batch_size=10, bucketing=False)
    model = CTCSpeechRecognizer(vocab=dm.vocab, n_mels=40, stack_frames=3, hidden_size=96, num_layers=2,
                                dropout=0.0, spec_augment=False, val_examples=0,
                                optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    trainer = L.Trainer(max_steps=160, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, check_val_every_n_epoch=100,
                        gradient_clip_val=5.0, default_root_dir=tmp_path, num_sanity_val_steps=0)
    t0 = time.time()
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    print(f"overfit: {time.time() - t0:.1f}s, CER {metrics['val/cer']:.2f}%, WER {metrics['val/wer']:.2f}%")
    assert metrics["val/cer"] < 10.0, metrics


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
