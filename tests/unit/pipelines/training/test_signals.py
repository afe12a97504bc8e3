"""SIGTERM and Ctrl-C are only noted when they arrive (pipelines/training/signals.py); the loops act on the note."""

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipelines.training import signals


def test_a_signal_is_only_noted_and_the_handlers_before_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with signals.noting():
        assert signals.received() is None
        os.kill(os.getpid(), signal.SIGTERM)  # nothing raised, nothing printed: noted
        time.sleep(0.01)
        assert signals.received() == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert signals.received() == "SIGTERM"  # the first signal names the stop
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signals.received() is None


def test_the_first_ctrl_c_is_noted_and_a_second_one_interrupts():
    with signals.noting():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert signals.received() == "Ctrl-C"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)


def test_nested_blocks_share_the_outer_record():
    with signals.noting():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        with signals.noting():
            assert signals.received() == "SIGTERM"
        assert signals.received() == "SIGTERM"


def test_a_forked_process_does_not_run_the_handlers():
    with signals.noting():
        pid = os.fork()
        if pid == 0:  # the child: Ctrl-C ignored, SIGTERM back to its default action
            ok = (signal.getsignal(signal.SIGINT) == signal.SIG_IGN
                  and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class _Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        time.sleep(0.2)
        return i


def test_dataloader_workers_outlive_a_sigterm_sent_to_them():
    # As SLURM does at a time limit: every process of the job gets SIGTERM, workers included, also while they start.
    with signals.noting():
        it = iter(torch.utils.data.DataLoader(_Slow(), batch_size=2, num_workers=2))
        for worker in it._workers:  # just forked
            os.kill(worker.pid, signal.SIGTERM)
        first = next(it)
        for worker in it._workers:  # running
            os.kill(worker.pid, signal.SIGTERM)
        rest = list(it)
    assert [b.tolist() for b in [first, *rest]] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def _trainer(fn="fit", processed=0, max_epochs=2, world_size=1):
    loop = SimpleNamespace(max_epochs=max_epochs, max_steps=-1,
                           epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=processed)))
    return SimpleNamespace(world_size=world_size, fit_loop=loop, global_step=0, should_stop=False,
                           state=SimpleNamespace(fn=fn))


def test_the_loops_see_a_noted_signal_until_training_is_over_and_not_while_held():
    with signals.noting():
        assert not signals.stop_requested(_trainer())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert signals.stop_requested(_trainer())
        assert signals.stop_requested(_trainer(fn="validate", processed=2))
        assert not signals.stop_requested(_trainer(processed=2))  # the last epoch is trained: the run finishes
        with signals.hold():
            assert not signals.stop_requested(_trainer())
        # Under DDP only what the ranks agreed on counts (they agree at the start of each training batch).
        assert not signals.stop_requested(_trainer(world_size=2))


def test_lightning_reads_the_note_and_prints_no_sigterm_line_of_its_own(capfd):
    from lightning.pytorch import Trainer

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer._signal_connector = signals.signal_connector(trainer)
    with signals.noting():
        trainer._signal_connector.register_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is signals._note
        assert not trainer.received_sigterm
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert trainer.received_sigterm
        trainer._signal_connector.received_sigterm = False  # what Lightning does at the start of each run
        assert trainer.received_sigterm
        trainer._signal_connector.teardown()
    assert "Received SIGTERM" not in "".join(capfd.readouterr())


def test_a_process_that_leaves_its_dataloader_workers_running_still_exits():
    # The workers block SIGTERM; multiprocessing's clean-up at exit sends them SIGTERM and then waits for them.
    import subprocess
    import sys

    code = ("import torch\nfrom pipelines.training import signals\n"
            "with signals.noting():\n"
            "    it = iter(torch.utils.data.DataLoader(list(range(8)), batch_size=2, num_workers=2,"
            " persistent_workers=True))\n"
            "    next(it)\n")
    repo = str(Path(__file__).resolve().parents[4])
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
