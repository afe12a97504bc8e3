"""Every numeric option of the models and DataModules the shipped configs build has a range, and ``rnnlab fit``
refuses a value outside it at parse time: exit 2, one line naming the option, the range and the value, no traceback.

The options are read from the classes themselves (their ``__init__`` annotations, following ``**kwargs`` to the
class they are forwarded to), so a new numeric option fails :func:`test_every_numeric_option_has_a_range` until its
annotation is a range type (:mod:`data.ranges`) or :data:`UNBOUNDED` says why it has none. Each out-of-range value
(below the range, and above it where it has an upper end; in a list or tuple, one item) is parsed in-process by
:class:`RnnlabCLI` with ``--print_config`` (nothing is built or trained), its parser built once. Values that only
another option bounds are checked in ``__init__``: a few of those, and the issue's two commands as a user runs
them, go through the whole command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import types
import typing
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module

import pytest
import torch

from data.ranges import bounds, describe
from pipelines.cli import main
from pipelines.cli.lightning import CONFIG_DIR, RnnlabCLI, _resolve_config_names
from pipelines.training.runconfig import read_configs
from tests.integration.helpers import rnnlab

# The top-level config combinations the Makefile trains (`make train-*`), and those of pipelines without a target.
COMBOS = {
    "ctc": ["ctc"],
    "rnnt": ["ctc", "rnnt"],
    "seq2seq": ["seq2seq"],
    "slots": ["slots"],
    "g2p": ["g2p"],
    "autoencoder": ["autoencoder"],
    "digits": ["digits"],
    "keywords": ["digits", "keywords"],
    "siamese": ["siamese"],
}
# Numeric options without a natural range, and why.
UNBOUNDED = {"seed": "any int seeds the generators (samplers mix it with the epoch modulo 2**63)"}


class _ParserOnce(RnnlabCLI):
    """RnnlabCLI whose parser is built on the first call and reused (a parse then takes ~0.1 s instead of ~0.3 s)."""

    cached = None

    def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs) -> None:
        if _ParserOnce.cached is None:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            _ParserOnce.cached = (self.parser, self._subcommand_method_arguments)
        self.parser, self._subcommand_method_arguments = _ParserOnce.cached


def _print_config(argv: list[str]) -> tuple[int, str, str]:
    """``rnnlab fit ARGV --print_config`` in this process: (exit status, stdout, stderr)."""
    argv = ["fit", *argv, "--print_config"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        try:
            _ParserOnce(args=_resolve_config_names(argv), command=argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _configs(combo: list[str]) -> list[str]:
    return [a for name in ["defaults", *combo] for a in ("-c", name)]


def _classes(combo: list[str]) -> dict[str, type]:
    """``{"model": class, "data": class}`` that the configs of ``combo`` build (the last ``class_path`` wins)."""
    paths = {}
    for name in combo:
        cfg = read_configs(CONFIG_DIR / f"{name}.yaml")
        paths.update({key: cfg[key]["class_path"] for key in ("model", "data") if "class_path" in cfg.get(key, {})})
    return {key: getattr(import_module(path.rpartition(".")[0]), path.rpartition(".")[2])
            for key, path in paths.items()}


def init_options(cls: type) -> dict[str, tuple[object, type]]:
    """``name -> (annotation, class whose __init__ declares it)`` of every keyword of ``cls.__init__``, following
    ``**kwargs`` up the MRO (as jsonargparse does); a nested group of options (a dataclass, as ``encoder``) gives
    one ``group.name`` per field."""
    options: dict[str, tuple[object, type]] = {}
    for klass in inspect.getmro(cls):
        init = vars(klass).get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                tp = hints.get(p.name)
                if dataclasses.is_dataclass(tp):
                    fields = typing.get_type_hints(tp)
                    for f in dataclasses.fields(tp):
                        options.setdefault(f"{p.name}.{f.name}", (fields[f.name], klass))
                else:
                    options.setdefault(p.name, (tp, klass))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return options


def _members(tp) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _is_number(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, int | float) and not issubclass(tp, bool)


def _numbers(tp) -> list[tuple[object, int | None]]:
    """The number types of an annotation: ``(type, None)`` for a scalar (maybe Optional), ``(type, i)`` for the
    i-th item of a tuple, ``(type, -1)`` for the items of a list or a variable-length tuple."""
    found = []
    for member in _members(tp):
        if _is_number(member):
            found.append((member, None))
        elif typing.get_origin(member) in (list, tuple):
            args = typing.get_args(member)
            if typing.get_origin(member) is tuple and Ellipsis not in args:
                found += [(a, i) for i, a in enumerate(args) if _is_number(a)]
            else:
                found += [(a, -1) for a in args if _is_number(a)]
    return found


def _outside(tp) -> list:
    """Values just outside a range type: below it (at an excluded end, else 1 below) and above it if it ends."""
    base, low, low_in, high, high_in = bounds(tp)
    values = []
    if low is not None:
        values.append(low - 1 if low_in else low)
    if high is not None:
        values.append(high + 1 if high_in else high)
    return [base(v) for v in values]


def _inside(tp) -> int | float:
    base, low, low_in, high, _ = bounds(tp)
    return base(low if low_in else (low + high) / 2 if high is not None else low + 1)


def _cases() -> list:
    cases, seen = [], set()
    for combo_name, combo in COMBOS.items():
        for key, cls in _classes(combo).items():
            if cls in seen:  # options depend on the class only
                continue
            seen.add(cls)
            forwarded = set()
            for name, (tp, owner) in init_options(cls).items():
                if owner in forwarded:  # through **kwargs to a class walked already: one option of it is enough
                    continue
                for number, item in _numbers(tp):
                    if bounds(number) is None:
                        continue
                    if owner in seen and owner is not cls:
                        forwarded.add(owner)
                    for bad in _outside(number):
                        if item is None:
                            value = bad
                        elif item == -1:
                            value = [bad]
                        else:
                            value = [_inside(a) for a in typing.get_args(_members(tp)[0])]
                            value[item] = bad
                        cases.append(pytest.param(combo, key, name, number, bad, value,
                                                  id=f"{combo_name}-{key}.{name}={json.dumps(value)}"))
    return cases


def test_every_numeric_option_has_a_range():
    missing = []
    for combo in COMBOS.values():
        for cls in _classes(combo).values():
            for name, (tp, _) in init_options(cls).items():
                numbers = _numbers(tp)
                if numbers and name not in UNBOUNDED and any(bounds(n) is None for n, _ in numbers):
                    missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}: {tp}")
    assert not missing, "numeric options without a range type (data.ranges) or an UNBOUNDED reason:\n" + "\n".join(
        sorted(set(missing)))


CASES = _cases()


@pytest.mark.parametrize(("combo", "key", "name", "range_type", "bad", "value"), CASES)
def test_out_of_range_value_is_one_line(combo, key, name, range_type, bad, value):
    option = f"--{key}.init_args.{name}"
    code, out, err = _print_config([*_configs(combo), f"{option}={json.dumps(value)}"])
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}\n{err[-2000:]}"
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert lines[0].startswith(f"rnnlab fit: error: {option}: expected {describe(range_type)}"), lines[0]
    assert f"got {json.dumps(bad)}" in lines[0], lines[0]


def test_cases_cover_every_class_and_both_ends():
    classes = {c for combo in COMBOS.values() for c in _classes(combo).values()}
    assert {f"{c.__module__}.{c.__qualname__}" for c in classes} == {
        "pipelines.ctc.CTCSpeechRecognizer", "pipelines.transducer.TransducerSpeechRecognizer",
        "pipelines.seq2seq.LASRecognizer", "pipelines.seq2seq.G2PModel", "pipelines.slot_filling.SlotFillingModule",
        "pipelines.autoencoder.AudioAutoencoder", "pipelines.classifier.UtteranceClassifier",
        "pipelines.word_embedding.SiameseWordEmbedder",
        "data.speech.SpeechDataModule", "data.slots.SlotFillingDataModule", "data.words.WordDataModule",
        "data.g2p.G2PDataModule"}
    ids = [c.id for c in CASES]
    assert "slots-data.batch_size=0" in ids and "slots-model.encoder.hidden_size=0" in ids
    assert "ctc-model.encoder.num_layers=9" in ids and "ctc-model.dropout=1.0" in ids
    assert "ctc-model.frontend.stack_frames=9" in ids and "ctc-model.encoder.dropout=1.0" in ids  # nested options
    assert "rnnt-model.ctc_weight=1.0" in ids and "rnnt-model.frontend.sample_rate=0" in ids  # one through **kwargs
    assert "ctc-data.embedded_size=[1, -1, 0]" in ids and "digits-model.frontend.speed_perturb=[3.0]" in ids


def test_values_in_range_still_parse():
    # The edges that are part of the ranges: 0 dropout, 0 workers, a CTC weight of 0, 8 layers, no test split.
    code, _, err = _print_config([*_configs(["ctc", "rnnt"]), "--model.init_args.dropout=0",
                                  "--model.init_args.encoder.num_layers=8", "--model.init_args.ctc_weight=0",
                                  "--data.init_args.num_workers=0", "--data.init_args.embedded_size=[10, 2, 0]",
                                  "--model.init_args.frontend.speed_perturb=[0.5, 2.0]"])
    assert code in (0, None), err


# Values bounded by another option: checked in __init__, still one line (the rest of the command never runs).
INIT_CHECKS = [
    (["seq2seq"], ["--model.init_args.encoder.num_layers=3", "--model.init_args.encoder.pyramid_layers=3"],
     "rnnlab fit: error: --model.init_args.encoder.pyramid_layers must be below encoder.num_layers = 3"),
    (["g2p"], ["--data.init_args.val_fraction=0.5", "--data.init_args.test_fraction=0.6"],
     "rnnlab fit: error: --data.init_args.test_fraction must be in [0, 1 - val_fraction = 0.5)"),
    (["ctc"], ["--data.init_args.min_duration=30"],
     "rnnlab fit: error: --data.init_args.min_duration must be below max_duration = 20.0, got 30.0"),
]


@pytest.mark.parametrize(("combo", "args", "line"), INIT_CHECKS, ids=["pyramid", "g2p-fractions", "durations"])
def test_value_bounded_by_another_option_is_one_line(combo, args, line, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    try:
        code = main(["fit", *_configs(combo), *args, f"--run.root={tmp_path}", "--run.wandb=disabled"])
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    assert code == 2, err[-2000:]
    assert err.strip().splitlines() == [err.strip()] and err.startswith(line), out + err
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_issue_commands_as_a_user_runs_them():
    commands = [["fit", "-c", "defaults", "-c", "slots", "--data.init_args.batch_size=0"],
                ["fit", "-c", "defaults", "-c", "slots", "--model.init_args.encoder.hidden_size=-4"]]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda argv: rnnlab(*argv, check=False, timeout=120), commands))
    lines = [p.stderr.strip().splitlines() for p in procs]
    assert [p.returncode for p in procs] == [2, 2], lines
    assert lines == [
        ["rnnlab fit: error: --data.init_args.batch_size: expected int > 0, got 0 (see rnnlab fit --help)"],
        ["rnnlab fit: error: --model.init_args.encoder.hidden_size: expected int > 0, got -4 (see rnnlab fit --help)"]]
    assert not any(p.stdout for p in procs)


def test_parsed_values_are_saved_as_plain_numbers(tmp_path):
    # A parsed option is an instance of its range type; the checkpoint holds plain numbers and loads with
    # weights_only (here a model built with such values, as load_from_checkpoint builds one through jsonargparse).
    import lightning as L

    from data.ranges import PositiveInt, UnitIntervalRightOpen
    from pipelines.slot_filling import SlotFillingModule

    vocab = {"words": {"itos": ["<pad>", "<unk>", "fly"]}, "tags": ["O"], "intents": ["atis_flight"]}
    model = SlotFillingModule(vocab=vocab, embedding_dim=PositiveInt(4), encoder={"hidden_size": PositiveInt(4)},
                              dropout=UnitIntervalRightOpen(0.1))
    assert type(model.hparams.encoder["hidden_size"]) is PositiveInt
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    hparams = torch.load(tmp_path / "m.ckpt", weights_only=True)["hyper_parameters"]
    assert type(hparams["encoder"]["hidden_size"]) is int and type(hparams["dropout"]) is float
    loaded = SlotFillingModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert loaded.hparams.encoder["hidden_size"] == 4


def test_python_callers_pass_plain_numbers():
    # The annotations are only types: a direct call takes plain numbers, and a range check in __init__ still
    # raises ValueError for one.
    from data.g2p import G2PDataModule
    from data.slots import SlotFillingDataModule

    assert SlotFillingDataModule(batch_size=3).hparams.batch_size == 3
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        SlotFillingDataModule(batch_size=0)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        G2PDataModule(val_fraction=0.5, test_fraction=0.6)
