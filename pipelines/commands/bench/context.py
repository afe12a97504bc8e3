"""The state the ``rnnlab bench`` sections share: options, device, the data module, decoded batches, results."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from data.sources import no_progress_bars
from pipelines.commands.bench.common import DEFAULT_DATA_DIR, lightning_quiet


class BenchContext:
    """One ``rnnlab bench`` run: what every section reads (``args``, ``device``, data) and what they report.

    The data module and the training batches are built on first use and kept, so the sections time the same
    batches and only the first one pays for decoding.

    Args:
        args: the parsed ``rnnlab bench`` options.
        tmp: a scratch directory that lives as long as the run (synthetic corpus, checkpoints, batches).
    """

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.precisions = ["32-true"] + (["bf16-mixed"] if self.device.type == "cuda" else [])
        self.results: dict = {}  # section name -> its result, for the sections that reuse another's numbers
        self.data_info: dict = {}
        self._dm = None
        self._batches: list[dict] | None = None

    @property
    def dm(self):
        """The SpeechDataModule over the benchmark's data (ARCTIC or another audiofolder, else synthetic)."""
        if self._dm is None:
            self._dm = self._setup_data()
        return self._dm

    def _setup_data(self):
        from data.speech import SpeechDataModule

        a = self.args
        common = {"batch_size": a.batch, "num_workers": a.workers, "cache_audio": False, "bucketing": True,
                  "seed": 0, "train_split": "train", "val_split": "validation", "test_split": "validation"}
        data_dir = Path(a.data_dir) if a.data_dir else DEFAULT_DATA_DIR
        if data_dir.is_dir():
            dm = SpeechDataModule(dataset=None, data_dir=str(data_dir), **common)
            self.data_info = {"source": "audiofolder", "path": str(data_dir)}
        elif a.quick:
            from data.synth import build_corpus

            root = build_corpus(self.tmp / "corpus", n_train=16, n_validation=4, n_test=2, seed=0, workers=1,
                                progress=False)
            dm = SpeechDataModule(dataset=None, data_dir=str(root), **common)
            self.data_info = {"source": "synthetic (data.synth.build_corpus, 16/4/2 utterances)", "path": str(root)}
        else:
            dm = SpeechDataModule(dataset="embedded", **common)
            self.data_info = {"source": "embedded synthetic corpus (3000/200/200, cached)"}
        with lightning_quiet(), no_progress_bars():
            dm.setup("fit")
        train, val = dm.datasets["train"], dm.datasets["val"]
        self.data_info.update({
            "train_utterances": len(train), "validation_utterances": len(val), "sample_rate": dm.hparams.sample_rate,
            "train_hours": sum(u.duration for u in train.utterances) / 3600,
            "mean_train_duration_s": statistics.mean(u.duration for u in train.utterances)})
        return dm

    def train_batches(self) -> list[dict]:
        """The first ``--steps`` length-bucketed training batches (epoch 0), decoded once and kept in memory."""
        if self._batches is None:
            batches = []
            for batch in self.dm.train_dataloader():
                if batch is not None:
                    batches.append(batch)
                if len(batches) == self.args.steps:
                    break
            if len(batches) < self.args.steps:
                print(f"[rnnlab] only {len(batches)} training batches available (asked for {self.args.steps})")
            self._batches = batches
        return self._batches

    @staticmethod
    def loader(batches: list[dict]):
        """A DataLoader that replays ``batches`` as they are (no collation, no workers)."""
        from torch.utils.data import DataLoader

        return DataLoader(_Batches(batches), batch_size=None, collate_fn=_identity, num_workers=0)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def _identity(x):
    return x
