"""Non-finite loss or gradients: the step is skipped (weights and optimizer moments untouched) and counted;
too many in a row stop training with the batch ids named."""

import lightning as L
import pytest
import torch

from pipelines.training.callbacks import NonFiniteGuard, NonFiniteTrainingError


class _Rows(torch.utils.data.Dataset):
    def __init__(self, bad: set[int], n: int = 32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        for i in bad:
            self.x[i, 0] = float("nan")  # a broken sample, as a corrupt feature file would give

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"id": f"row{i}", "x": self.x[i], "y": self.y[i]}


def _collate(items):
    return {"ids": [it["id"] for it in items], "x": torch.stack([it["x"] for it in items]),
            "y": torch.stack([it["y"] for it in items])}


class _Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.snapshots = []

    def training_step(self, batch, batch_idx):
        self.snapshots.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        return torch.nn.functional.mse_loss(self.lin(batch["x"]).squeeze(-1), batch["y"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def _fit(bad, max_consecutive, tmp_path, epochs=1):
    model = _Model()
    guard = NonFiniteGuard(max_consecutive)
    loader = torch.utils.data.DataLoader(_Rows(bad), batch_size=4, collate_fn=_collate)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[guard], default_root_dir=tmp_path,
                        gradient_clip_val=1.0)
    trainer.fit(model, loader)
    return model, guard, trainer


def test_bad_steps_are_skipped_and_counted(tmp_path):
    # rows 9 and 13 sit in batch 2 and batch 3 (batch size 4): two bad steps, not consecutive with good ones.
    model, guard, trainer = _fit({9, 21}, max_consecutive=3, tmp_path=tmp_path)
    assert guard.skipped == 2 and trainer.global_step == 8
    snaps = model.snapshots
    # The parameters before batch 3 equal those before batch 2: the step on the bad batch 2 changed nothing.
    for k in snaps[2]:
        assert torch.equal(snaps[2][k], snaps[3][k])
        assert not torch.equal(snaps[1][k], snaps[2][k])  # a good step does change them
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics.get("train/skipped_steps", 2.0))))


def test_optimizer_moments_untouched_by_a_skipped_step(tmp_path):
    model, guard, _ = _fit({0, 1, 2, 3}, max_consecutive=3, tmp_path=tmp_path)  # the very first batch is bad
    assert guard.skipped == 1
    opt = model.trainer.optimizers[0]
    steps = {int(s["step"]) for s in opt.state.values()}
    assert steps == {7}  # 8 batches, one skipped: Adam counted only the 7 real steps


def test_too_many_consecutive_bad_steps_stop_with_the_batch_ids(tmp_path):
    with pytest.raises(NonFiniteTrainingError, match=r"3 consecutive .*batch ids: row12, row13"):
        _fit({4, 8, 12}, max_consecutive=3, tmp_path=tmp_path)


def test_counter_resets_after_a_good_step(tmp_path):
    _, guard, trainer = _fit({4, 8, 16, 20}, max_consecutive=3, tmp_path=tmp_path)  # 2 bad, good, 2 bad
    assert guard.skipped == 4 and trainer.global_step == 8


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_cli_stops_with_one_line_and_keeps_the_last_good_checkpoint(slot_data_dir, tmp_path):
    from tests.integration.helpers import rnnlab

    args = ["-c", "defaults", "-c", "tiny/slots.yaml", f"--data.init_args.data_dir={slot_data_dir}",
            f"--run.root={tmp_path}", "--run.name=r", "--run.max_bad_steps=2", "--trainer.max_epochs=50"]
    rnnlab("fit", *args, "--trainer.max_epochs=1")
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    good = torch.load(last, map_location="cpu", weights_only=True)
    proc = rnnlab("fit", *args, "--ckpt_path", "last", "--trainer.callbacks+=tests.fixtures.callbacks.NaNGradients",
                  check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rnnlab fit: error:")]
    assert len(errors) == 1 and "2 consecutive" in errors[0] and "batch ids:" in errors[0]
    assert "Traceback" not in proc.stderr
    after = torch.load(last, map_location="cpu", weights_only=True)
    assert after["global_step"] == good["global_step"]
    for k, v in good["state_dict"].items():
        assert torch.equal(after["state_dict"][k], v)
