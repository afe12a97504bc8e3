"""W&B faults never end or stall training: online start failures fall back to offline, logging errors become
one warning; no secret from the environment reaches the run directory."""

import errno
import os
import time

import pytest

from pipelines.training.tracking import make_loggers, resilient_wandb_logger


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    # Nothing listens on port 9: any request fails at once, without the network.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    yield
    import wandb

    wandb.finish()
    wandb.teardown()
    os.environ.pop("WANDB_MODE", None)  # Lightning's offline mode sets it


def test_invalid_api_key_falls_back_to_an_offline_run(wandb_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    start = time.monotonic()
    logger = make_loggers(tmp_path / "run", project="p", mode="online")[0]
    exp = logger.experiment
    logger.log_metrics({"train/loss": 1.5}, step=0)
    assert time.monotonic() - start < 120
    assert type(exp).__name__ == "Run" and not logger.failed
    out = capsys.readouterr().out
    assert "W&B online run could not start (AuthenticationError" in out and "wandb sync" in out
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_logging_errors_become_one_warning(capsys):
    cls = resilient_wandb_logger()
    logger = cls(project="p", offline=True)

    class _FullDisk:
        def log(self, *a, **k):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

    logger._experiment = _FullDisk()
    for step in range(3):
        assert logger.log_metrics({"x": 1.0}, step=step) is None
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "Disk quota exceeded" in warnings[0] and "training continues" in warnings[0]


def test_w_and_b_switched_off_when_even_offline_fails(monkeypatch, capsys):
    import wandb

    def broken_init(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wandb, "init", broken_init)
    logger = resilient_wandb_logger()(project="p", offline=False)
    exp = logger.experiment
    assert logger.failed and type(exp).__name__ == "_DummyExperiment"
    logger.log_metrics({"x": 1.0}, step=0)  # a no-op, no exception
    logger.log_hyperparams({"a": 1})
    out = capsys.readouterr().out
    assert "W&B is off for this run" in out and "No space left on device" in out
    os.environ.pop("WANDB_MODE", None)


def test_no_secret_from_the_environment_is_written(slot_data_dir, tmp_path):
    from tests.integration.helpers import rnnlab

    key = "a1b2c3d4e5" * 4  # looks like a real 40-character key
    token = "hf_" + "Z9y8X7w6V5" * 3
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": key, "HF_TOKEN": token, "WANDB_DIR": str(tmp_path / "wd")}
    rnnlab("fit", "-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
           f"--run.root={tmp_path}", "--run.name=r", "--run.wandb=offline", "--trainer.max_epochs=1", env=env)
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.name == "config.yaml" for p in files)
    assert any("offline-run" in str(p) for p in files)  # the W&B run directory is included in the search
    for p in files:
        data = p.read_bytes()
        assert key.encode() not in data and token.encode() not in data, p
