"""``python -m pipelines.cli``: the same as the ``rnnlab`` console script."""

from pipelines.cli import entry

entry()
