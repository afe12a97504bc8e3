"""SIGTERM: a checkpoint is saved, the process exits 143 and prints the command that resumes it; that command
continues the same run (directory, W&B run) and ends with the uninterrupted run's weights."""

import csv
import shlex

import pytest
import torch

from tests.integration.helpers import rnnlab

ENV = {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
NOISE = ("Traceback", "could not find the monitored key", "exists and is not empty", "`weights_only` was not set")


def _make_args(data_dir, root):
    # As `make train-slots ARGS=...` starts it: no run name, so the run directory is named by the time.
    return ["-c", "defaults", "-c", "tiny/slots.yaml", "--trainer.devices=1", "--trainer.num_nodes=1",
            f"--data.init_args.data_dir={data_dir}", f"--run.root={root}", "--trainer.max_epochs=2"]


def _final(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["epoch"], ckpt["state_dict"]


def _val_loss(metrics_csv, epoch):
    rows = [r for r in csv.DictReader(open(metrics_csv)) if r.get("val/loss") and r["epoch"] == str(epoch)]
    assert len(rows) == 1, f"epoch {epoch} validated {len(rows)} times in {metrics_csv}"
    return float(rows[0]["val/loss"])


def test_sigterm_during_validation_then_the_printed_command_resumes_the_same_run(slot_data_dir, tmp_path):
    # The callback sends SIGTERM after the first of epoch 0's 3 validation batches, so validation is unfinished.
    # (Mid-epoch training state is restored exactly too: test_exact_resume.py.)
    full = tmp_path / "full"
    rnnlab("fit", *_make_args(slot_data_dir, full), env={"OMP_NUM_THREADS": "1"})
    (full,) = full.iterdir()
    root = tmp_path / "runs"
    args = [*_make_args(slot_data_dir, root), "--trainer.callbacks+=tests.fixtures.callbacks.SigtermAt",
            "--trainer.callbacks.stage=validation"]
    proc = rnnlab("fit", *args, env=ENV, check=False, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    (run,) = root.iterdir()
    saved = _final(run / "checkpoints" / "last.ckpt")
    assert saved[0] == 12
    line = next(x for x in proc.stdout.splitlines() if "SIGTERM: saved" in x)
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command == ["rnnlab", "fit", *args, "--ckpt_path", "last"]
    wandb_id = (run / "wandb_id").read_text().strip()

    resumed = rnnlab(*command[1:], env=ENV, timeout=120)
    assert [p.name for p in root.iterdir()] == [run.name]
    assert (run / "wandb_id").read_text().strip() == wandb_id
    assert sorted(p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")) == [wandb_id] * 2
    out = proc.stdout + proc.stderr + resumed.stdout + resumed.stderr
    assert not [n for n in NOISE if n in out]
    # The resumed run validates epoch 0 (once, all of it) before it trains on from the saved step.
    log = run / "resume-1" / "metrics.csv"
    assert _val_loss(log, 0) == pytest.approx(_val_loss(full / "metrics.csv", 0), abs=1e-6)
    assert min(int(r["step"]) for r in csv.DictReader(open(log)) if r.get("train/loss")) >= saved[0]
    step, epoch, weights = _final(run / "checkpoints" / "last.ckpt")
    full_step, full_epoch, full_weights = _final(full / "checkpoints" / "last.ckpt")
    assert (step, epoch) == (full_step, full_epoch) == (24, 1)
    assert weights.keys() == full_weights.keys()
    for k in full_weights:
        torch.testing.assert_close(weights[k], full_weights[k], rtol=1e-5, atol=1e-6, msg=k)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.slow  # about a minute: three runs; make test-all runs it
def test_resuming_a_finished_run_changes_nothing_and_extending_it_keeps_its_records(slot_data_dir, tmp_path):
    root = tmp_path / "runs"
    args = _make_args(slot_data_dir, root) + ["--trainer.max_epochs=1", "--run.average_best=2"]
    first = rnnlab("fit", *args, env=ENV, timeout=180)
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = root.iterdir()
    before = {p: p.read_bytes() for p in [run / "summary.json", *sorted((run / "checkpoints").rglob("*.ckpt"))]}
    again = rnnlab("fit", *args, "--ckpt_path", "last", env=ENV, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"rnnlab fit: {run} is finished (1 epochs, --trainer.max_epochs=1); nothing to resume" in again.stderr
    assert {p: p.read_bytes() for p in before} == before  # not one byte changed
    assert not any(p.name.startswith("resume-") for p in run.iterdir())
    # a larger max_epochs extends it; the earlier summary and averaged checkpoint are kept
    longer = [a for a in args if not a.startswith("--trainer.max_epochs")] + ["--trainer.max_epochs=2"]
    extended = rnnlab("fit", *longer, "--ckpt_path", "last", env=ENV, timeout=180)
    assert extended.returncode == 0, extended.stderr[-2000:]
    (kept,) = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert (kept / "summary.json").read_bytes() == before[run / "summary.json"]
    assert (kept / "averaged.ckpt").read_bytes() == before[run / "checkpoints" / "averaged.ckpt"]
    assert not any(n in extended.stdout + extended.stderr for n in NOISE)


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_ctrl_c_saves_prints_the_resume_line_and_exits_130(slot_data_dir, tmp_path):
    root = tmp_path / "runs"
    args = [*_make_args(slot_data_dir, root), "--trainer.callbacks+=tests.fixtures.callbacks.SigtermAt",
            "--trainer.callbacks.step=3", "--trainer.callbacks.signum=SIGINT"]
    proc = rnnlab("fit", *args, env=ENV, check=False, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    (run,) = root.iterdir()
    assert _final(run / "checkpoints" / "last.ckpt")[0] == 3
    line = next(x for x in proc.stdout.splitlines() if "Ctrl-C: saved" in x)
    assert "[rnnlab] stopped by Ctrl-C" in proc.stderr and "Traceback" not in proc.stderr
    command = shlex.split(line.split("resume with: ", 1)[1])
    resumed = rnnlab(*command[1:], env=ENV, timeout=120)
    assert resumed.returncode == 0 and (run / "summary.json").is_file()
    assert _final(run / "checkpoints" / "last.ckpt")[:2] == (24, 1)


# SIGTERM at random moments: while Python starts and the run is set up, during a training step, a validation (twice
# an epoch here), a checkpoint save (one every step here) and data loading (DataLoader worker processes, and the
# signal sent to the whole process group, as SLURM signals every process of a job). Trial i: i % 3 == 0 training
# with workers, group signal; 1 start-up; 2 training, one process. RNNLAB_SIGTERM_TRIALS sets the number of
# trials (each: the signalled run and its resumption), RNNLAB_SIGTERM_SEED the moments.
STRESS_ARGS = ["--trainer.val_check_interval=0.5", "--run.last_every_n_steps=1",
               "--trainer.callbacks+=tests.fixtures.callbacks.SlowSteps"]  # 24 steps and 12 batches: 1.5 s or more
STRESS_NOISE = ("Traceback", "corrupted", "Received SIGTERM", "Error", "error:", "Aborted", "core dumped")


def _sigterm_trial(slot_data_dir, root, rng, index):
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests.integration.helpers import REPO

    workers, started = index % 3 == 0, index % 3 == 1
    args = [*_make_args(slot_data_dir, root), *STRESS_ARGS, f"--data.init_args.num_workers={2 if workers else 0}"]
    env = {**os.environ, **ENV, "PYTHONUNBUFFERED": "1"}
    for key in ("RNNLAB_RUN_NAME", "RNNLAB_WANDB_ID"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "fit", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()

    def send():
        if proc.poll() is None:
            (os.killpg if workers else os.kill)(proc.pid, signal.SIGTERM)

    timer = threading.Timer(rng.uniform(0.3, 4.0), send) if started else None  # while Python starts, set-up
    if timer:
        timer.start()
    hung = threading.Timer(180, lambda: os.killpg(proc.pid, signal.SIGKILL))  # a hang fails the test, never waits
    hung.start()
    out = []
    for line in proc.stdout:
        out.append(line)
        if timer is None and "[rnnlab] batch size" in line:  # training starts: validation, steps, saves follow
            timer = threading.Timer(rng.uniform(0.0, 1.6), send)
            timer.start()
    proc.wait()
    hung.cancel()
    reader.join(10)
    assert proc.returncode != -signal.SIGKILL, f"no exit within 180 s\n{''.join(out)[-2000:]}\n{''.join(err)[-2000:]}"
    return proc.returncode, "".join(out), "".join(err)


def _check_and_resume(slot_data_dir, root, code, out, err):
    where = f"exit {code}\n{out[-1500:]}\n{err[-3000:]}"
    assert not [n for n in STRESS_NOISE if n in err], where
    runs = list(root.iterdir()) if root.exists() else []
    if code == -15:  # before Python had loaded rnnlab: killed by the default action, nothing written yet
        assert not list(root.rglob("*.ckpt")), where
        return "before start"
    if code == 0:  # the signal came once the last epoch was trained (or as the process shut down): it finished
        (run,) = runs
        assert (run / "summary.json").is_file(), where
        assert _final(run / "checkpoints" / "last.ckpt")[:2] == (24, 1)
        return "finished"
    assert code == 143, where
    assert "[rnnlab] stopped by SIGTERM" in err, where
    line = next((x for x in out.splitlines() if "SIGTERM: saved" in x), None)
    assert line is not None, where
    command = shlex.split(line.split("resume with: ", 1)[1])
    (run,) = runs
    resumed = rnnlab(*command[1:], env=ENV, timeout=180, check=False)
    assert resumed.returncode == 0, f"{where}\nresumed: {resumed.stdout[-1500:]}\n{resumed.stderr[-3000:]}"
    assert not [n for n in STRESS_NOISE if n in resumed.stderr], resumed.stderr[-3000:]
    assert (run / "summary.json").is_file()
    assert _final(run / "checkpoints" / "last.ckpt")[:2] == (24, 1)
    return "during validation" if "during validation" in line else f"step {line.split(' at step ')[1].split(';')[0]}"


def _stress(slot_data_dir, tmp_path, trials):
    import os
    import random

    rng = random.Random(int(os.environ.get("RNNLAB_SIGTERM_SEED", "0")))
    seen = []
    for i in range(trials):
        root = tmp_path / f"t{i}"
        code, out, err = _sigterm_trial(slot_data_dir, root, rng, i)
        seen.append(_check_and_resume(slot_data_dir, root, code, out, err))
    print("SIGTERM trials:", seen)


def test_sigterm_at_random_moments_always_saves_or_finishes_and_resumes(slot_data_dir, tmp_path):
    import os

    _stress(slot_data_dir, tmp_path, int(os.environ.get("RNNLAB_SIGTERM_TRIALS", "3")))


@pytest.mark.slow  # make test-all: 30 trials, about 8 minutes
def test_sigterm_at_random_moments_many_times(slot_data_dir, tmp_path):
    import os

    _stress(slot_data_dir, tmp_path, int(os.environ.get("RNNLAB_SIGTERM_TRIALS", "30")))
