"""The rnnlab command table (every entry imports, answers --help, covers the Makefile and README) and make targets."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.cli.lightning import run
from pipelines.cli.registry import COMMANDS, usage

REPO = Path(__file__).resolve().parents[4]
LIGHTNING = {"fit", "validate", "test"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_entry_imports_a_function(name):
    command = COMMANDS[name]
    assert command.name == name and command.group and command.help and command.synopsis
    assert callable(command.load()), command.target


def _help(*argv: str) -> tuple[int | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    assert not err.getvalue().strip(), err.getvalue()
    return code, out.getvalue()


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in LIGHTNING])
def test_help_of_every_tool_exits_0(name):
    code, out = _help(name, "--help")
    assert code in (0, None)
    if name != "predict":  # without --ckpt, predict is LightningCLI's
        assert out.startswith(f"usage: rnnlab {name}"), out[:200]


def test_help_of_the_lightning_commands_exits_0():
    for name in sorted(LIGHTNING):
        code, out = _help(name, "--help")
        assert code in (0, None) and "--trainer" in out, name
    assert _help("predict", "--ckpt", "x.ckpt", "--help")[1].startswith("usage: rnnlab predict")


def test_lightning_entries_run_their_subcommand():
    assert {COMMANDS[n].target for n in LIGHTNING} == {f"pipelines.cli.lightning:{n}" for n in LIGHTNING}
    assert run.__module__ == "pipelines.cli.lightning"


def test_usage_is_generated_from_the_table():
    code, out = _help("--help")
    assert code == 0 and out.strip() == usage().strip()
    for name, command in COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} .*{re.escape(command.help)}$", out, re.M), name
        assert f"{command.group}:" in out


def test_unknown_command_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab: error: unknown command 'trian'")


def _documented(text: str) -> set[str]:
    # `rnnlab X` and `$(RNNLAB) X` in commands; not paths such as rnnlab/ or words inside other names.
    return set(re.findall(r"(?<![\w/.-])(?:rnnlab|\$\(RNNLAB\)) ([a-z][a-z0-9-]*)", text))


@pytest.mark.parametrize("doc", ["Makefile", "README.md", *sorted(p.relative_to(REPO).as_posix()
                                                                 for p in (REPO / "docs").glob("*.md"))])
def test_every_documented_command_is_registered(doc):
    names = _documented((REPO / doc).read_text(encoding="utf-8"))
    assert names or doc.startswith("docs/"), f"no rnnlab command found in {doc}"
    assert names <= set(COMMANDS), f"{doc} shows unregistered commands: {sorted(names - set(COMMANDS))}"


def test_every_makefile_target_is_phony():
    text = (REPO / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split())
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.M))
    assert targets and targets == phony, f"targets not in .PHONY: {sorted(targets - phony)}; " \
                                         f"not targets: {sorted(phony - targets)}"
