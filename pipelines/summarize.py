"""Old path of :mod:`pipelines.commands.summarize`, kept only for test_analyze.py until analyze.py moves (then delete)."""

from pipelines.commands.summarize import main, seed_group, summarize_seed_groups  # noqa: F401
