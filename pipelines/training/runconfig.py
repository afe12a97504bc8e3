"""The one place YAML is read outside LightningCLI's parser: a run's saved ``config.yaml`` or shipped configs
composed as ``-c`` composes them (later files win, nested mappings merged)."""

from __future__ import annotations

from pathlib import Path


def parse_yaml(text: str) -> dict:
    """A YAML document as a dict (``{}`` for an empty one)."""
    import yaml

    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``: nested mappings merged, anything else replaced (as repeated ``-c`` does)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_configs(*paths: str | Path) -> dict:
    """The composition of config files, later files winning."""
    cfg: dict = {}
    for p in paths:
        cfg = merge(cfg, parse_yaml(Path(p).read_text(encoding="utf-8")))
    return cfg
