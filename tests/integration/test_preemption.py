"""SIGTERM mid-training: a checkpoint is saved, the process exits 143, and `--ckpt_path last` resumes from it."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.integration.helpers import REPO, rnnlab


def test_sigterm_saves_and_resume_continues(slot_data_dir, tmp_path):
    run = tmp_path / "r"
    args = ["-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
            f"--run.root={tmp_path}", "--run.name=r"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "fit", *args, "--trainer.max_epochs=10000"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 120
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert last.exists(), "no epoch finished in time"
        first = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: saved" in out and "Traceback" not in err
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] > first
    # Relaunch the same command with --ckpt_path last: training continues from the saved step.
    epoch = saved["epoch"]
    rnnlab("fit", *args, f"--trainer.max_epochs={epoch + 2}", "--ckpt_path", "last", timeout=300)
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] > saved["global_step"] and resumed["epoch"] >= epoch
    # The resumed run's log starts after the saved step (it did not start over).
    import csv

    rows = list(csv.DictReader(open(run / "resume-1" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps and min(steps) >= saved["global_step"]


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
