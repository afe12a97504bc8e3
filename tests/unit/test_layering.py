"""The three packages import in one direction: modules (pure torch) never pulls in lightning/datasets/wandb/data."""

import subprocess
import sys


def _loaded_after_importing(package: str, roots: tuple[str, ...]) -> str:
    """Comma-separated top-level ``roots`` in sys.modules after a fresh interpreter imports every module of
    ``package``."""
    code = (
        f"import sys, importlib, pkgutil, {package}\n"
        f"for m in pkgutil.iter_modules({package}.__path__):\n"
        f"    importlib.import_module('{package}.' + m.name)\n"
        f"print(','.join(sorted(k for k in sys.modules if k.split('.')[0] in {roots!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_modules_import_without_lightning_datasets_or_wandb():
    bad = _loaded_after_importing("modules", ("lightning", "pytorch_lightning", "torchmetrics", "datasets", "wandb",
                                              "matplotlib", "data", "pipelines"))
    assert bad == "", f"modules imported forbidden packages: {bad}"


def test_data_does_not_import_pipelines():
    assert _loaded_after_importing("data", ("pipelines",)) == ""


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


def _imports_of(path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every absolute import in a file (``names`` empty for ``import X``)."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_the_top_of_pipelines_holds_only_config_targets():
    # Configs and checkpoints name these files (class_path); everything else lives in a sub-package.
    import re

    root = _root()
    targets = set()
    for cfg in (root / "pipelines" / "configs").rglob("*.yaml"):
        targets |= set(re.findall(r"class_path:\s*pipelines\.(\w+)\.", cfg.read_text(encoding="utf-8")))
    top = {p.stem for p in (root / "pipelines").glob("*.py")} - {"__init__", "base"}
    assert top <= targets, f"pipelines/ top-level files that no config names: {sorted(top - targets)}"


def _string_imports(path) -> list[tuple[int, str]]:
    """``(line, name)`` of every import by a constant string: ``importlib.import_module("x")``,
    ``import_module("x")``, ``__import__("x")``."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            out.append((node.lineno, node.args[0].value))
    return out


# The library side: what commands and the server use; it never reaches up into a command or the CLI.
LIBRARY = ("pipelines/inference", "pipelines/serve", "pipelines/training")


def test_training_imports_no_task():
    root = _root()
    tasks = {f"pipelines.{p.stem}" for p in (root / "pipelines").glob("*.py")} - {"pipelines.base",
                                                                                 "pipelines.__init__"}
    for path in (root / "pipelines" / "training").rglob("*.py"):
        for module, _ in _imports_of(path):
            assert module not in tasks, f"{path.name} imports the task {module}"


def test_the_library_imports_no_command_and_not_the_cli():
    # Imports in functions and imports by a constant string count too.
    root = _root()
    found = []
    for folder in LIBRARY:
        for path in sorted((root / folder).rglob("*.py")):
            names = [m for m, _ in _imports_of(path)] + [name for _, name in _string_imports(path)]
            found += [f"{path.relative_to(root)} imports {m}" for m in names
                      if m.startswith(("pipelines.commands", "pipelines.cli"))]
    assert not found, "\n".join(found)


def test_a_command_reaches_no_command_by_string():
    # importlib.import_module("pipelines.commands.x") + getattr hides a command's import of another command from
    # the test below: shared code lives on the library side and is imported by name.
    root = _root()
    found = [f"{path.relative_to(root)}:{line} imports {name!r} by string"
             for path in sorted((root / "pipelines" / "commands").rglob("*.py"))
             for line, name in _string_imports(path) if name.startswith("pipelines.commands")]
    assert not found, "\n".join(found)


def test_a_command_imports_no_other_command_and_not_the_cli():
    from pipelines.cli.registry import COMMANDS

    root = _root()
    command_modules = {c.target.split(":")[0] for c in COMMANDS.values()
                       if c.target.startswith("pipelines.commands.")}
    for path in (root / "pipelines" / "commands").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        me = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(parts[:3])  # a command's own sub-package (bench/, analyze/) is its own rooms
        for module, names in _imports_of(path):
            assert not module.startswith("pipelines.cli"), f"{me} imports {module}"
            for target in [module] + [f"{module}.{n}" for n in names]:
                if target in command_modules and target != me and not target.startswith(package + ".") \
                        and target != package:
                    raise AssertionError(f"{me} imports the command {target}")


def test_no_private_name_is_imported_across_files():
    # The project's own private names stay in their files. (A third-party private class is a separate matter:
    # pipelines/training/signals.py subclasses Lightning's signal connector, which has no public hook.)
    root = _root()
    for package in ("modules", "data", "pipelines"):
        for path in (root / package).rglob("*.py"):
            for module, names in _imports_of(path):
                if module.split(".")[0] not in ("modules", "data", "pipelines", "tests"):
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, f"{path.relative_to(root)} imports private {private} from {module}"


def _yaml_loads(path) -> list[int]:
    """Lines of a file that parse YAML themselves: ``yaml.<load function>`` or a load function imported from yaml."""
    import ast

    loads = {"load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all", "full_load_all",
             "unsafe_load_all", "compose", "compose_all", "parse", "scan"}
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in loads and isinstance(node.value, ast.Name) \
                and node.value.id == "yaml":
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml" and {a.name for a in node.names} & loads:
            lines.append(node.lineno)
    return lines


def test_one_config_reader():
    # YAML is read by LightningCLI (jsonargparse) and pipelines/training/runconfig.py (parse_yaml, read_configs);
    # no other module imports yaml, and no other file, tests included, parses YAML itself (tests may write it).
    root = _root()
    reader = root / "pipelines" / "training" / "runconfig.py"
    importers, parsers = [], []
    for package in ("modules", "data", "pipelines", "tests"):
        for path in (root / package).rglob("*.py"):
            if package != "tests" and any(m == "yaml" or m.startswith("yaml.") for m, _ in _imports_of(path)):
                importers.append(str(path.relative_to(root)))
            if path != reader:
                parsers += [f"{path.relative_to(root)}:{line}" for line in _yaml_loads(path)]
    assert importers == ["pipelines/training/runconfig.py"], f"modules reading YAML themselves: {importers}"
    assert not parsers, f"YAML parsed outside pipelines/training/runconfig.py: {parsers}"


def test_the_unit_test_tree_mirrors_the_packages():
    # tests/unit/<package>/<sub>/ holds the tests of <package>/<sub>/: every test folder is a source folder, and
    # each of its test files imports from that folder (or, for a folder without Python, reads its files).
    root = _root()
    unit = root / "tests" / "unit"
    misplaced = []
    for path in sorted(unit.rglob("test_*.py")):
        folder = path.parent.relative_to(unit)
        if not folder.parts:
            continue  # tests of the whole tree, such as this file
        source = root / folder
        if not source.is_dir():
            misplaced.append(f"tests/unit/{folder} has no source folder {folder}/")
            continue
        package = ".".join(folder.parts)
        text = path.read_text(encoding="utf-8")
        imports = [target for module, names in _imports_of(path) for target in [module] + [f"{module}.{n}" for n in names]]
        if len(folder.parts) == 1:
            # the top of a package: its own modules; for pipelines/, a task or base (sub-packages have folders)
            subpackages = {p.name for p in source.iterdir() if (p / "__init__.py").exists()}
            own = [m for m in imports if m.startswith(package + ".") and m.split(".")[1] not in subpackages]
        else:
            own = [m for m in imports if m == package or m.startswith(package + ".")]
        reads = not any(source.glob("*.py")) and "/".join(folder.parts) in text.replace('" / "', "/")
        if not (own or reads):
            misplaced.append(f"{path.relative_to(root)} imports nothing from {package}")
    assert not misplaced, "tests outside their package's folder:\n" + "\n".join(misplaced)


def test_commands_have_one_error_idiom():
    # A command's user error is _common.fail / CommandError (one line, status 2): no command declares its own
    # exception class for it.
    import ast

    root = _root()
    classes = []
    for path in (root / "pipelines" / "commands").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Exception", "Error", "Exit"))
                    for b in node.bases):
                classes.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert [c.split(" ")[1] for c in classes] == ["CommandError"] and classes[0].startswith(
        "pipelines/commands/_common.py:"), classes


def test_tests_import_helpers_never_another_test_file():
    # Shared test code lives in helper modules (tests/fixtures, */helpers.py): a test file moved or split must not
    # break another one's imports, which for an import inside a function only shows when that test runs.
    root = _root()
    bad = []
    for path in (root / "tests").rglob("*.py"):
        for module, names in _imports_of(path):
            if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_"):
                bad.append(f"{path.relative_to(root)} imports {names or module} from {module}")
    assert not bad, bad
