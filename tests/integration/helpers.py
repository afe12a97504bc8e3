"""Running the `rnnlab` command in-process or as a subprocess, for integration tests."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rnnlab(*args: str, timeout: float = 300, env: dict | None = None, check: bool = True,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m pipelines.cli ARGS`` in a subprocess (as a user would run ``rnnlab``)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RNNLAB_RUN_NAME", None)
    full_env.pop("RNNLAB_WANDB_ID", None)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"rnnlab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def make_lines(make_argv: list[str]) -> list[list[str]]:
    """The ``rnnlab`` command lines ``make MAKE_ARGV`` runs (with ``rnnlab`` replaced by a recorder); lines that
    differ only in run name, seed and data directory (loops over models and seeds) are kept once."""
    recorder = "RNNLAB=printf '%s\\0' @rnnlab"
    proc = subprocess.run(["make", "-s", "-C", str(REPO), *make_argv, recorder], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [part.strip("\0").split("\0") for part in proc.stdout.split("@rnnlab\0") if part.strip("\0")]
    key = re.compile(r"--(run\.name|seed_everything|data\.init_args\.data_dir)=")
    return list({tuple(a for a in line if not key.match(a)): line for line in lines}.values())


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def arctic_subset(tmp_path: Path, n: int) -> Path:
    """An audiofolder of the ``n`` shortest real ARCTIC training sentences (skips the test if the copy is absent).

    Returns the directory holding the ``train`` split (rows point at the shared files by absolute path).
    """
    from tests.conftest import shared_dataset

    root = shared_dataset("arctic_kathleen")
    rows = [json.loads(line) for line in (root / "train" / "metadata.jsonl").read_text().splitlines()]
    rows = sorted(rows, key=lambda r: r["duration"])[:n]
    subset = tmp_path / f"arctic{n}" / "train"
    subset.mkdir(parents=True)
    with open(subset / "metadata.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "file_name": str(root / "train" / r["file_name"])}) + "\n")
    return subset.parent
