"""Checkpoints are written atomically, saved mid-epoch on request, and loaded without running pickled code."""

import os
import pickle

import pytest
import torch

from pipelines.base import load_matching_weights, load_module
from pipelines.cli.lightning import RnnlabCLI
from pipelines.training.checkpointing import AtomicCheckpointIO, atomic_torch_save


def test_atomic_save_keeps_the_previous_checkpoint_when_a_save_dies(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1

    real_save = torch.save

    def dying_save(obj, f, *a, **kw):  # writes part of the file, then the process "dies"
        f.write(b"PARTIAL" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["step"] == 1  # intact and loadable
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file left behind


class _Payload:
    """Pickles to a call that creates a marker file: what a malicious checkpoint would smuggle in."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"rnnlab": {"class_path": "pipelines.ctc.CTCSpeechRecognizer"}, "x": _Payload(marker)}, f)
    with pytest.raises(ValueError, match="evil.ckpt: not a readable checkpoint"):
        load_module(evil)
    with pytest.raises(ValueError, match="init_from: .*evil.ckpt: not a readable checkpoint"):
        load_matching_weights(torch.nn.Linear(2, 2), evil)
    assert not marker.exists()
    # An unsafe load would have run it (shows the payload is real).
    with open(evil, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_cli_uses_atomic_writer_and_optional_step_checkpoints(tmp_path, slot_data_dir):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cli = RnnlabCLI(args=["fit", "--config", "pipelines/configs/defaults.yaml", "--config",
                          "pipelines/configs/tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
                          f"--run.root={tmp_path}", "--run.name=r", "--run.last_every_n_steps=2",
                          "--trainer.max_steps=4"])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    steps = [cb._every_n_train_steps for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    assert sorted(steps) == [0, 0, 2]  # best, last after every epoch, last every 2 steps
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4
    assert not [p for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path, slot_data_dir):
    # Lightning's `save_last` refreshes last.ckpt only in epochs that improve the monitored metric; resuming
    # from it would repeat the epochs since. With a metric that never improves, last.ckpt must still move on.
    RnnlabCLI(args=["fit", "--config", "pipelines/configs/defaults.yaml", "--config",
                    "pipelines/configs/tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
                    f"--run.root={tmp_path}", "--run.name=r", "--trainer.max_epochs=3",
                    "--model.init_args.optimizer.init_args.lr=0.0"])  # weights never change: no improvement
    ckpts = tmp_path / "r" / "checkpoints"
    best = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
