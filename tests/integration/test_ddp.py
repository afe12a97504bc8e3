"""Multi-device through Lightning: 2-process DDP on CPU (gloo) end to end, metrics reduced across ranks."""

import pytest

from tests.integration.helpers import read_json, rnnlab


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_two_process_ddp_fit_and_globally_reduced_metrics(slot_data_dir, tmp_path):
    runs = tmp_path / "runs"
    # Plain `ddp` relaunches the command line in a child process: run it as a subprocess with a timeout.
    proc = rnnlab("fit", "-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
                  "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                  "--trainer.max_epochs=2", f"--run.root={runs}", "--run.name=ddp", timeout=300)
    out = proc.stdout + proc.stderr
    assert "rank 0/2 finished fit" in out and "rank 1/2 finished fit" in out
    run = runs / "ddp"
    ddp_metrics = read_json(run / "summary.json")
    # The validation set (20 sentences) was split 10/10 across the two ranks. Re-validating the final weights
    # in one process over all 20 must give the same slot F1 and intent accuracy: DDP logged the global values
    # (summed chunk counts), not one rank's half nor a mean of per-rank F1s.
    out_file = tmp_path / "single.json"
    rnnlab("validate", "--ckpt", str(run / "checkpoints" / "last.ckpt"), f"--run.metrics_file={out_file}",
           "--trainer.devices=1", "--trainer.strategy=auto")
    single = read_json(out_file)["metrics"]
    assert single["val/slot_f1"] == pytest.approx(ddp_metrics["val/slot_f1"], abs=1e-4)
    assert single["val/intent_acc"] == pytest.approx(ddp_metrics["val/intent_acc"], abs=1e-4)


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_exception_on_one_rank_ends_every_rank_in_bounded_time(slot_data_dir, tmp_path, failing_rank):
    import subprocess
    import time

    start = time.monotonic()
    try:
        proc = rnnlab("fit", "-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
                      "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
                      "--trainer.max_epochs=50", f"--run.root={tmp_path}", "--run.name=ddp",
                      "--trainer.callbacks+=tests.fixtures.callbacks.FailOnRank",
                      f"--trainer.callbacks.rank={failing_rank}", timeout=150, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("a rank kept waiting for its failed peer (no exit within 150 s)")
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert f"injected failure on rank {failing_rank}" in proc.stdout + proc.stderr
    assert "finished fit" not in proc.stdout
    assert elapsed < 150


@pytest.mark.slow  # make test-all; kept out of make test's 10-minute budget
def test_torchrun_launch_makes_one_run_and_logs_the_global_batch(slot_data_dir, tmp_path):
    import os
    import subprocess
    import sys

    from tests.integration.helpers import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNLAB_RUN_NAME", None)
    env.pop("RNNLAB_WANDB_ID", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "--rdzv-id=job42", "-m", "pipelines.cli", "fit", "-c", "defaults", "-c",
           "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}", "--trainer.devices=2",
           "--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.max_epochs=1", f"--run.root={tmp_path / 'runs'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rank 0/2 finished fit" in out and "rank 1/2 finished fit" in out
    assert "batch size: 8 per device x 2 device(s) x 1 node(s) = 16 global" in out
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["slots-jobjob42"]  # both ranks wrote one run, named by the job
    assert (tmp_path / "runs" / "slots-jobjob42" / "checkpoints" / "last.ckpt").exists()


# The transducer shares the CTC recogniser's metrics and sources and adds its own losses; the CTC case is slow-marked
# (make test-all) to keep make test under its time budget.
@pytest.mark.parametrize("recipe", [pytest.param(["tiny/ctc.yaml"], marks=pytest.mark.slow, id="ctc"),
                                    pytest.param(["tiny/ctc.yaml", "-c", "tiny/rnnt.yaml"], id="rnnt")])
def test_two_process_ddp_mixture_reports_each_source_as_one_process_does(speech_corpus_dir, tmp_path, recipe):
    """Two corpora mixed under 2-process DDP: val/<source>/cer per source, reduced over both ranks."""
    cfg = tmp_path / "mixture.yaml"
    cfg.write_text(
        "data:\n  init_args:\n    batch_size: 3\n    sources:\n"
        f"      - {{name: first, data_dir: '{speech_corpus_dir}'}}\n"
        f"      - {{name: second, data_dir: '{speech_corpus_dir}', weight: 0.5}}\n")
    runs = tmp_path / "runs"
    proc = rnnlab("fit", "-c", "defaults", "-c", *recipe, "-c", str(cfg), "--trainer.strategy=ddp",
                  "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
                  f"--run.root={runs}", "--run.name=mix", timeout=300)
    out = proc.stdout + proc.stderr
    assert "rank 0/2 finished fit" in out and "rank 1/2 finished fit" in out
    ddp = read_json(runs / "mix" / "summary.json")
    for key in ("val/cer", "val/first/cer", "val/first/wer", "val/second/cer", "val/second/wer"):
        assert key in ddp, key
    # 12 validation utterances in batches of 3 split 2/2 over the ranks (no padding batch): one process over all
    # of them must give the same per-source numbers.
    out_file = tmp_path / "single.json"
    rnnlab("validate", "--ckpt", str(runs / "mix" / "checkpoints" / "last.ckpt"), f"--run.metrics_file={out_file}",
           "--trainer.devices=1", "--trainer.strategy=auto")
    single = read_json(out_file)["metrics"]
    keys = ("val/cer", "val/first/cer", "val/second/cer", "val/first/wer", "val/loss")
    for key in keys + (("val/rnnt_loss", "val/ctc_loss") if len(recipe) > 1 else ()):
        assert single[key] == pytest.approx(ddp[key], abs=1e-3), key
