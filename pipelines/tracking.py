"""Old path of :mod:`pipelines.training.tracking`, kept only for pipelines/analyze.py until it moves (then delete)."""

from pipelines.training.tracking import resolve_wandb_mode  # noqa: F401
