"""The shipped launch files stay in step with the CLI: every swept hyperparameter is a real option."""

import re
import subprocess
import sys

from pipelines.training.runconfig import parse_yaml, read_configs
from tests.integration.helpers import REPO


def test_sweep_parameters_are_accepted_by_the_cli():
    sweep = read_configs(REPO / "pipelines" / "launch" / "sweep-ctc.yaml")
    assert sweep["metric"] == {"name": "val/cer", "goal": "minimize"}
    args = []
    for name, spec in sweep["parameters"].items():
        value = spec["values"][-1] if "values" in spec else spec["max"]
        args.append(f"--{name}={value}")
    cmd = sweep["command"]
    fixed = cmd[cmd.index("fit") + 1: cmd.index("${args}")]
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "fit", *fixed, *args, "--print_config"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = parse_yaml(proc.stdout)
    for name, spec in sweep["parameters"].items():
        node = config
        for key in name.split("."):
            node = node[key]
        expected = spec["values"][-1] if "values" in spec else spec["max"]
        assert node == expected, name


def test_launch_scripts_use_existing_presets_and_options():
    configs = {p.stem for p in (REPO / "pipelines" / "configs").glob("*.yaml")}
    for script in ("slurm-ctc.sbatch", "torchrun-ctc.sh"):
        text = (REPO / "pipelines" / "launch" / script).read_text()
        assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
        default = re.search(r"DATA=\$\{DATA:-([\w-]+)\}", text).group(1)
        assert f"speech-{default}" in configs and f"ctc-{default}" in configs
        assert "--trainer.num_nodes" in text and "--trainer.strategy=ddp" in text
    assert "--signal=SIGUSR1@" in (REPO / "pipelines" / "launch" / "slurm-ctc.sbatch").read_text()
