"""The three packages import in one direction: modules (pure torch) never pulls in lightning/datasets/wandb/data."""

import subprocess
import sys


def test_modules_import_without_lightning_datasets_or_wandb():
    code = (
        "import sys, importlib, pkgutil, modules\n"
        "for m in pkgutil.iter_modules(modules.__path__):\n"
        "    importlib.import_module('modules.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning', 'torchmetrics',"
        " 'datasets', 'wandb', 'matplotlib', 'data', 'pipelines'))\n"
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


def _package_imports(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (top level or inside functions), read from the source."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    graph: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d.split(".")[0] == package and d != name}
    return graph


def test_no_import_cycles_inside_modules_or_data():
    # Lazy imports inside functions count too: they hide a cycle rather than remove it.
    for package in ("modules", "data"):
        graph = _package_imports(package)
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done

        def visit(name: str, path: list[str], graph=graph, state=state) -> None:
            state[name] = 1
            for dep in sorted(graph.get(name, ())):
                if state.get(dep) == 1:
                    raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
                if dep not in state:
                    visit(dep, path + [dep])
            state[name] = 2

        for name in sorted(graph):
            if name not in state:
                visit(name, [name])
