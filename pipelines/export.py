"""Old path of :mod:`pipelines.commands.export`, kept only for pipelines/bench.py until it moves (then delete)."""

from pipelines.commands.export import bench_export  # noqa: F401
