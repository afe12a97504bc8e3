"""Old path of :mod:`pipelines.training.plots`, kept only for pipelines/analyze.py until it moves (then delete)."""

from pipelines.training.plots import _pyplot  # noqa: F401
