"""Shipped models: compact checkpoints installed with the package, listed in a manifest, checked by checksum.

The models live in :mod:`pipelines.pretrained` (package data, found through ``importlib.resources``), one folder
each: ``<name>/model.ckpt`` (weights stored in float16, loaded as float32; weights-only, as every checkpoint) and
``<name>/config.yaml`` (the resolved training config, so ``rnnlab test --ckpt <name>`` works). ``manifest.json``
beside them holds one entry per model: task, training command, data and their licences, commit, validation
metrics, bytes and sha256. ``RNNLAB_MODELS`` names another folder of the same layout (searched first).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pipelines.inference.errors import InferenceError

ENV = "RNNLAB_MODELS"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShippedModel:
    """One manifest entry, with the folder it was found in."""

    name: str
    root: Path
    entry: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / self.entry.get("file", f"{self.name}/model.ckpt")

    @property
    def task(self) -> str:
        return str(self.entry.get("task", ""))

    def verify(self) -> Path:
        """The checkpoint's path once its size and sha256 match the manifest.

        Raises:
            InferenceError: the file is missing or differs from the manifest (one line).
        """
        p = self.path
        if not p.is_file():
            raise InferenceError(f"shipped model {self.name!r}: {p} is missing (reinstall rnnlab)")
        want = self.entry.get("sha256")
        if not want:
            raise InferenceError(f"shipped model {self.name!r}: the manifest in {self.root} gives no sha256")
        got = sha256_of(p)
        if got != want:
            raise InferenceError(f"shipped model {self.name!r}: {p} fails its checksum (sha256 {got[:12]}..., "
                                 f"manifest {want[:12]}...); refused")
        return p


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def roots() -> list[Path]:
    """Folders searched for shipped models: ``$RNNLAB_MODELS`` (if set), then the package's own."""
    out = []
    if os.environ.get(ENV):
        out.append(Path(os.environ[ENV]).expanduser())
    out.append(Path(str(resources.files("pipelines.pretrained"))))
    return out


def read_manifest(root: Path) -> dict[str, dict]:
    p = root / MANIFEST
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InferenceError(f"{p}: not a readable model manifest ({type(e).__name__})") from None
    models = data.get("models", {}) if isinstance(data, dict) else {}
    if not isinstance(models, dict):
        raise InferenceError(f"{p}: 'models' must be an object of name -> entry")
    return models


def available() -> dict[str, ShippedModel]:
    """Every shipped model by name (the first folder of :func:`roots` that has a name wins)."""
    out: dict[str, ShippedModel] = {}
    for root in reversed(roots()):
        for name, entry in read_manifest(root).items():
            out[name] = ShippedModel(name, root, entry)
    return out


def find(name: str) -> ShippedModel | None:
    return available().get(name)


def looks_like_name(spec: str) -> bool:
    """True for a bare model name (``english``, ``english-stream``), not a path."""
    return bool(spec) and "/" not in spec and "\\" not in spec and not spec.endswith(".ckpt") and \
        not spec.startswith(".")
