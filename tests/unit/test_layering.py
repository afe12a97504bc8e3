"""The three packages import in one direction: modules (pure torch) never pulls in lightning/datasets/wandb."""

import subprocess
import sys


def test_modules_import_without_lightning_datasets_or_wandb():
    code = (
        "import sys, importlib, pkgutil, modules\n"
        "for m in pkgutil.iter_modules(modules.__path__):\n"
        "    importlib.import_module('modules.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning', 'datasets',"
        " 'wandb', 'pipelines'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"modules imported forbidden packages: {out.stdout.strip()}"


def test_data_does_not_import_pipelines():
    code = (
        "import sys, importlib, pkgutil, data\n"
        "for m in pkgutil.iter_modules(data.__path__):\n"
        "    importlib.import_module('data.' + m.name)\n"
        "print(','.join(sorted(k for k in sys.modules if k.split('.')[0] == 'pipelines')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
