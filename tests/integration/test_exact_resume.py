"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends where an
uninterrupted run ends: same step count, same epoch, same weights (data order, RNG streams and the learning-rate
schedule are all restored)."""

import signal

import pytest
import torch

from tests.integration.helpers import rnnlab


def _args(corpus, root, name):
    # Dropout and SpecAugment on, so the RNG streams matter; 16 utterances / batch 4 = 4 steps per epoch.
    return ["-c", "defaults", "-c", "tiny/ctc.yaml", f"--data.init_args.data_dir={corpus}",
            "--model.init_args.dropout=0.3", "--model.init_args.frontend.spec_augment=true",
            "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.StepLR",
            "--model.init_args.lr_scheduler.init_args.step_size=1", "--trainer.max_epochs=3",
            "--run.last_every_n_steps=1", f"--run.root={root}", f"--run.name={name}"]


def _state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["epoch"], ckpt["state_dict"], ckpt["optimizer_states"][0]["param_groups"][0]["lr"]


@pytest.mark.parametrize("kill_step", [6])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(speech_corpus_dir, tmp_path, kill_step):
    env = {"OMP_NUM_THREADS": "1"}
    rnnlab("fit", *_args(speech_corpus_dir, tmp_path, "full"), env=env)
    full_step, full_epoch, full_weights, full_lr = _state(tmp_path / "full" / "checkpoints" / "last.ckpt")
    assert full_step == 12

    args = _args(speech_corpus_dir, tmp_path, "killed")
    proc = rnnlab("fit", *args, "--trainer.callbacks+=tests.fixtures.callbacks.KillAtStep",
                  f"--trainer.callbacks.step={kill_step}", env=env, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    killed_step, killed_epoch, killed_weights, _ = _state(last)
    assert killed_step == kill_step and killed_step % 4 != 0  # mid-epoch
    assert not all(torch.equal(killed_weights[k], full_weights[k]) for k in full_weights)

    rnnlab("fit", *args, "--ckpt_path", "last", env=env)
    step, epoch, weights, lr = _state(last)
    assert (step, epoch) == (full_step, full_epoch)
    assert lr == pytest.approx(full_lr)
    assert weights.keys() == full_weights.keys()
    for k in full_weights:
        torch.testing.assert_close(weights[k], full_weights[k], rtol=1e-5, atol=1e-6, msg=k)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
