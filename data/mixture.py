"""Datasets of different kinds in one mixture: recorded corpora beside generated ones (connected FSDD digits)."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


class MixtureDataset(Dataset):
    """Concatenates datasets that each know their items' ``lengths``, tagging every item with its source index.

    Args:
        parts: Datasets with ``lengths`` (and, for a :class:`~data.speech.SpeechDataset` holding several
            corpora, ``sources``); indices run through them in order.
        sources: Source index of each part (used where a part has no ``sources`` of its own).
    """

    def __init__(self, parts: list, sources: list[int]) -> None:
        if len(parts) != len(sources) or not parts:
            raise ValueError(f"MixtureDataset needs one source index per part, got {len(parts)} parts, {sources}")
        self.parts = list(parts)
        self.part_sources = list(sources)
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def lengths(self) -> list[int]:
        return [n for p in self.parts for n in p.lengths]

    @property
    def sources(self) -> np.ndarray:
        """``(N,)`` source index of every item."""
        return np.concatenate([np.asarray(p.sources, dtype=np.int64) if hasattr(p, "sources")
                               else np.full(len(p), s, dtype=np.int64)
                               for p, s in zip(self.parts, self.part_sources, strict=True)])

    def set_epoch(self, epoch: int) -> None:
        """Forwards the epoch to parts that redraw per epoch (generated digit strings)."""
        for p in self.parts:
            if hasattr(p, "set_epoch"):
                p.set_epoch(epoch)

    def __getitem__(self, i: int):
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        item = self.parts[k][i - int(self._offsets[k])]
        if item is not None and "source" not in item:
            item = {**item, "source": self.part_sources[k]}
        return item
