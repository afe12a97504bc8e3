"""RnnlabCLI (LightningCLI for fit/validate/test/predict) and the rewriting of its command line.

Usage: rnnlab fit|validate|test|predict -c CONFIG... [--trainer.* --model.* --data.* --run.* --decode.*]

Examples:
    rnnlab fit -c defaults -c slots --data.data_dir ../shared/data/atis
    rnnlab fit -c defaults -c slots --print_config
    rnnlab test --ckpt runs/slots-.../checkpoints/best.ckpt [--data.test_file test.jsonl]

``-c NAME`` finds ``pipelines/configs/NAME.yaml``; ``test|validate --ckpt CKPT`` evaluates a run's checkpoint
with the config saved beside it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Literal

import jsonargparse.typing
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from data.errors import DataError
from data.ranges import describe
from pipelines.base import RnnlabModule
from pipelines.commands._common import NON_FINITE, SIGTERM, USER_ERROR, fail, run_config_for
from pipelines.training import signals
from pipelines.training.averaging import average_best
from pipelines.training.callbacks import (
    AgreeOnSignals,
    ExactResume,
    KeepBest,
    LoggedSaveConfig,
    MetricsJSON,
    NonFiniteGuard,
    NonFiniteTrainingError,
    RunSummary,
    SaveOnPreemption,
)
from pipelines.training.checkpointing import (
    AtomicCheckpointIO,
    NothingToResume,
    check_checkpoint,
    find_last_checkpoint,
    quiet_resume_warnings,
)
from pipelines.training.tracking import make_loggers, make_run_dir, quiet_logger_advert

CONFIG_DIR = Path(__file__).parent.parent / "configs"


class _ParseError(SystemExit):
    """A command-line or config error found by the parser; :class:`RnnlabCLI` prints it as one line (status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(USER_ERROR)
        self.message = message


class _InitError(_ParseError):
    """A ValueError from the model's or data module's ``__init__``: a value its options' types cannot check (one
    bounded by another option, say); :class:`RnnlabCLI` prints it as one line (status 2)."""


def _init_error(error: BaseException | None) -> tuple[str, type, BaseException] | None:
    """``("model" | "data", class, the ValueError)`` when ``error`` is, or wraps, a ValueError raised by the
    model's or data module's ``__init__`` (jsonargparse wraps it in its own); None for any other error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__ if isinstance(error, ValueError) else None
        while tb is not None:  # outermost frame first: the class built, not a parent's or a part's __init__
            me = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "__init__" else None
            if isinstance(me, RnnlabModule | LightningDataModule):
                return ("model" if isinstance(me, RnnlabModule) else "data"), type(me), error
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return None


def init_error_line(key: str, cls: type, error: Exception) -> str:
    """A ValueError from ``cls.__init__`` as one line: ``--model.init_args.NAME must ...`` when its message starts
    with one of the class's options, else ``--model: CLASS: message``."""
    message = " ".join(str(error).split())
    names = {name for klass in inspect.getmro(cls) if "__init__" in vars(klass)
             for name in inspect.signature(klass.__init__).parameters} - {"self", "args", "kwargs"}
    first = re.match(r"\w+", message)
    if first and first.group(0) in names:
        return f"--{key}.init_args.{message}"
    return f"--{key}: {cls.__module__}.{cls.__qualname__}: {message}"


_SEED_LOG = logging.getLogger("lightning.fabric.utilities.seed")


class _HeldRecords(logging.Filter):
    """Keeps the log records that reach it instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


class _OneLineErrorParser(LightningArgumentParser):
    """jsonargparse reports a bad option with the whole usage (60 lines) before the error: raise it instead."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse's own trial parses, which it catches
            super().error(message, ex)
        raise _ParseError(message)


def parse_error_line(message: str) -> str:
    """jsonargparse's (multi-line) error as one line naming the option, the value and what was expected."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    cls = re.search(r"Problem with given class_path '([^']+)':\s*(.*)", message)
    option = None
    if keys:  # a subclass's argument (model/data init_args) is reported as its own key inside the outer one
        option = f"--{keys[0]}" + (f".init_args.{keys[-1]}" if cls and len(keys) > 1 else "")
    if option and (line := _range_error(message)):
        return f"{option}: {line}"
    unknown = (re.search(r"Option '([^']+)' is not accepted", message)
               or re.search(r"unrecognized arguments: --([\w.]+)", message)
               or re.search(r"Group '([\w.]+)' does not accept option '([^']+)'", message))
    if unknown and cls:  # a nested group's (encoder.hiden_size) as its own
        name = ".".join(g for g in unknown.groups() if g)
        return f"unknown option --{keys[0]}.init_args.{name} ({cls.group(1)} has no such argument)"
    if option and (m := re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)$", message, re.M)):
        choices = ", ".join(str(c) for c in ast.literal_eval(f"[{m.group(1)}]"))
        return f"{option}: {m.group(2).strip()!r} is not one of {choices}"
    if option and (m := re.search(r"Expected a <class '(\w+)'>\. Got value: (.*)$", message, re.M)):
        return f"{option}: expected {m.group(1)}, got {m.group(2).strip()!r}"
    if option and not cls and (m := re.search(r"Given value: (.*)$", message, re.M)):
        types = [t.replace("NoneType", "null") for t in re.findall(r"Expected a <class '(\w+)'>", message)]
        return f"{option}: expected {' or '.join(types) or 'another value'}, got {m.group(1).strip()!r}"
    if option and cls:
        return f"{option}: {cls.group(1)}: {cls.group(2).strip() or 'cannot be used'}"
    return " ".join(message.split())[:300]


def _range_error(message: str) -> str | None:
    """``expected int > 0, got 0``: jsonargparse's refusal of a value outside its range type (:mod:`data.ranges`),
    ``or null`` where the option may be null, and the list or tuple that holds the value; None for other errors."""
    m = re.search(r"Not of type (\w+): (?:(.*?) ?does not conform to restriction (.*)|(?:invalid literal for \w+\(\) "
                  r"with base 10|could not convert string to \w+): (.*))$", message, re.M)
    if m is None:
        return None
    name, value, restriction, not_a_number = m.groups()
    expected = describe(getattr(jsonargparse.typing, name, None)) or f"a value with {restriction}"
    # The values tried, the innermost first (an option's own, then the NestedArg or dict holding it).
    given = [re.sub(r"^NestedArg\(key='[^']*', val=(.*)\)$", r"\1", g.strip())
             for g in re.findall(r"Given value: (.*)$", message, re.M)]
    if any(f"<class 'jsonargparse.typing.{name}'>" in s and "NoneType" in s
           for s in re.findall(r"Subtypes: \[(.*)\]$", message, re.M)):
        expected += " or null"
    if not_a_number is not None:
        return f"expected {expected}, got {not_a_number.strip()}"
    value = value or (given[0] if given else "another value")
    within = next((g for g in given if g[:1] in "[(" and g != value), None)
    return f"expected {expected}, got {value}" + (f" (in {within})" if within else "")


def _check_training_length(trainer) -> None:
    """``max_epochs=-1`` (Lightning's "no limit") is refused unless ``max_time`` or ``max_steps`` bounds the run."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    bounded = (steps is not None and steps > 0) or bool(trainer.get("max_time"))
    if epochs is not None and epochs < -1:
        fail("fit", f"--trainer.max_epochs={epochs}: give a number of epochs >= 0 (or -1 together with "
                    f"--trainer.max_time or --trainer.max_steps)")
    if epochs == -1 and not bounded:
        fail("fit", "--trainer.max_epochs=-1 trains until stopped: bound it with --trainer.max_time=DD:HH:MM:SS "
                    "or --trainer.max_steps=N, or give a number of epochs")


class RnnlabCLI(LightningCLI):
    """LightningCLI with rnnlab's run directories, loggers, checkpointing and the data -> model vocab link."""

    def __init__(self, args=None, run: bool = True, command: list[str] | None = None, **kwargs) -> None:
        self.command = command  # the arguments as given, for the command that resumes a stopped run
        kwargs.setdefault("save_config_callback", LoggedSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        kwargs.setdefault("parser_class", _OneLineErrorParser)
        try:
            super().__init__(RnnlabModule, None, subclass_mode_model=True, subclass_mode_data=True, args=args,
                             run=run, **kwargs)
        except _ParseError as e:
            given = list(sys.argv[1:] if args is None else args)
            command = next((a for a in given if a in self.subcommands()), None)
            if isinstance(e, _InitError):
                fail(command, e.message)
            fail(command, f"{parse_error_line(e.message)} (see rnnlab {command or 'COMMAND'} --help)")

    def _set_seed(self) -> None:
        # Seeded before the classes are built, as Lightning does; its line ("Seed set to N") is logged once they are,
        # so that an error in the model's or data module's options is the only line printed.
        held = _HeldRecords()
        _SEED_LOG.addFilter(held)
        try:
            super()._set_seed()
        finally:
            _SEED_LOG.removeFilter(held)
        self._seed_records = held.records

    def instantiate_classes(self) -> None:
        # A ValueError from the model's or data module's __init__ is one line naming the option, not the traceback
        # of jsonargparse's error around it (every subtype tried, the whole config).
        try:
            super().instantiate_classes()
        except ValueError as e:
            if (found := _init_error(e)) is None:
                raise
            raise _InitError(init_error_line(*found)) from None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        self._integer_limits(list(sys.argv[1:] if args is None else args))
        if self.config.get("subcommand") == "fit":  # before anything runs (seeding prints a line)
            _check_training_length(self.config.fit.trainer)
        self._check_ckpt_path()
        self._check_init_from()

    def _integer_limits(self, given: list) -> None:
        # `--trainer.limit_train_batches=1` means one batch (Lightning: int = batches, float = fraction), but the
        # parser turns "1" into 1.0, which Lightning reads as 100%. A number written without a point stays an int.
        self._int_limits = {}
        for i, arg in enumerate(str(a) for a in given):
            for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
                opt = f"--trainer.{key}"
                text = arg[len(opt) + 1:] if arg.startswith(opt + "=") else (
                    str(given[i + 1]) if arg == opt and i + 1 < len(given) else None)
                if text is not None and text.strip().isdigit():
                    self._int_limits[key] = int(text)  # applied when the trainer is built

    def _check_init_from(self) -> None:
        # --model.init_args.init_from: the same one-line refusal as --ckpt_path, before anything is built.
        command = self.config.get("subcommand")
        cfg = self.config[command] if command else None
        init = (cfg.get("model") or {}).get("init_args", {}).get("init_from") if cfg is not None else None
        if command != "fit" or not init:
            return
        from pipelines.inference import InferenceError, resolve_checkpoint

        try:
            # Another pipeline's checkpoint may share an encoder (a CTC model's for a keyword classifier): what
            # matters is that some weights match, which the model checks when it copies them (one line if none).
            check_checkpoint(resolve_checkpoint(init))
        except (FileNotFoundError, ValueError, InferenceError) as e:
            fail(command, f"--model.init_args.init_from: {e}")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run.root", type=str, default="runs", help="Directory that holds run directories.")
        parser.add_argument("--run.name", type=str | None, default=None,
                            help="Run directory name (default: <pipeline>-<timestamp>).")
        parser.add_argument("--run.wandb", type=Literal["auto", "online", "offline", "disabled"], default="auto",
                            help="W&B mode; auto = online with an API key and a reachable server, else offline.")
        parser.add_argument("--run.project", type=str, default="rnnlab", help="W&B project.")
        parser.add_argument("--run.log_model", type=bool, default=False, help="Upload checkpoints as W&B artifacts.")
        parser.add_argument("--run.last_every_n_steps", type=int | None, default=None,
                            help="Also refresh checkpoints/last.ckpt every N training steps (not only at epoch end).")
        parser.add_argument("--run.average_best", type=int, default=0,
                            help="Keep the N best checkpoints (checkpoints/best-N/) and at the end of fit write "
                                 "checkpoints/averaged.ckpt with their mean weights, then validate it (0 = off).")
        parser.add_argument("--run.max_bad_steps", type=int, default=25,
                            help="Stop after this many consecutive steps with a non-finite loss or gradient "
                                 "(each such step is skipped and counted).")
        parser.add_argument("--run.metrics_file", type=str | None, default=None,
                            help="Where test/validate write their metrics JSON (default: in the run dir).")
        parser.add_argument("--decode.beam_size", type=int, default=1,
                            help="validate/test decoding for CTC models: prefix beam size (1 = greedy)")
        parser.add_argument("--decode.lm", type=str | None, default=None, help="word n-gram LM (ARPA) for decoding")
        parser.add_argument("--decode.lm_weight", type=float, default=0.5)
        parser.add_argument("--decode.word_bonus", type=float, default=0.0)
        parser.add_argument("--decode.ctc_weight", type=float | None, default=None,
                            help="attention models: CTC weight in joint beam search (default: the model's)")
        parser.link_arguments("data.vocab", "model.init_args.vocab", apply_on="instantiate")

    def _check_ckpt_path(self, ckpt: str | None = None) -> None:
        # A bad --ckpt_path is one line naming the file, before Lightning opens it (for its hyperparameters).
        command = self.config.get("subcommand")
        cfg = self.config[command] if command else None
        ckpt = ckpt or (cfg.get("ckpt_path") if cfg else None)
        if ckpt and ckpt not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt):
            try:
                check_checkpoint(ckpt, class_path=cfg.model.class_path)
            except (FileNotFoundError, ValueError) as e:
                fail(command, str(e))

    def _set_eval_decoder(self) -> None:
        cfg = self.config[self.subcommand].decode
        if hasattr(self.model, "make_decoder"):
            if cfg.lm and not Path(cfg.lm).is_file():
                raise DataError(f"language model not found: {cfg.lm}")
            kw = {"beam_size": cfg.beam_size, "lm_path": cfg.lm, "lm_weight": cfg.lm_weight,
                  "word_bonus": cfg.word_bonus}
            if cfg.get("ctc_weight") is not None:
                kw["ctc_weight"] = cfg.ctc_weight
            try:
                self.model.eval_decoder = self.model.make_decoder(**kw)
            except (TypeError, ValueError) as e:
                raise DataError(f"decoding options: {e}") from None

    def before_test(self) -> None:
        self._set_eval_decoder()

    def before_validate(self) -> None:
        self._set_eval_decoder()

    def _run_dir(self) -> Path:
        cfg = self.config[self.subcommand]
        ckpt = cfg.get("ckpt_path")
        if ckpt == "last" and self.subcommand == "fit":
            ckpt = self._last_checkpoint(cfg.run)
        if ckpt and ckpt not in ("last", "best", "hpc", "registry") and Path(ckpt).is_file():
            p = Path(ckpt).resolve().parent
            from pipelines.inference.shipped import roots

            if any(p.parent == r.resolve() for r in roots()):
                # A shipped model: its folder is package data, never written to; evaluations go to the runs root.
                return Path(cfg.run.root) / f"{p.name}-{self.subcommand}"
            if self.subcommand == "fit" and p.name == "checkpoints":
                self._refuse_or_keep_finished(Path(ckpt).resolve())
            return p.parent if p.name == "checkpoints" else p
        prefix = getattr(self.model, "run_prefix", "run")
        return make_run_dir(cfg.run.root, prefix, cfg.run.name)

    def _last_checkpoint(self, run_cfg) -> str:
        """``fit --ckpt_path last``: the checkpoint of the run to resume (the rule: `find_last_checkpoint`)."""
        try:
            last = find_last_checkpoint(run_cfg.root, getattr(self.model, "run_prefix", "run"),
                                        run_cfg.name or os.environ.get("RNNLAB_RUN_NAME"))
        except NothingToResume as e:
            fail(self.subcommand, str(e))
        self._check_ckpt_path(str(last))
        os.environ["RNNLAB_RUN_NAME"] = last.parent.parent.name  # DDP processes started later resume the same
        self.config_init[self.subcommand]["ckpt_path"] = str(last)
        return str(last)

    def _refuse_or_keep_finished(self, last: Path) -> None:
        """A finished run (``summary.json`` written, its epochs or steps all done) is left as it is: one line, exit
        0. With a larger ``max_epochs``/``max_steps`` it is extended, and what it recorded (``summary.json``,
        ``checkpoints/averaged.ckpt``) is first copied to ``previous-<time>/`` in the run directory."""
        run_dir = last.parent.parent
        if not (run_dir / "summary.json").is_file():
            return  # stopped before the end: an ordinary resume
        from pipelines.training.checkpointing import read_checkpoint

        ckpt = read_checkpoint(last, mmap=True)
        done = int(ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
                   .get("processed", ckpt.get("epoch", 0) + 1))
        steps = int(ckpt.get("global_step", 0))
        trainer = self.config[self.subcommand].trainer
        max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps") or -1
        more = (max_epochs is not None and max_epochs > done) or (max_steps > 0 and max_steps > steps)
        if not more:
            print(f"rnnlab fit: {run_dir} is finished ({done} epochs, --trainer.max_epochs={max_epochs}); nothing "
                  f"to resume and nothing changed. To train it further, give a larger --trainer.max_epochs",
                  file=sys.stderr, flush=True)
            raise SystemExit(0)
        import shutil
        import time

        keep = run_dir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        keep.mkdir(exist_ok=True)
        for f in (run_dir / "summary.json", run_dir / "checkpoints" / "averaged.ckpt"):
            if f.is_file():
                shutil.copy2(f, keep / f.name)
        print(f"[rnnlab] extending the finished run {run_dir} from {done} to {max_epochs} epochs; its summary and "
              f"averaged checkpoint are kept in {keep}", flush=True)

    def instantiate_trainer(self, **kwargs):
        for record in getattr(self, "_seed_records", ()):  # the model and data module are built (_set_seed)
            _SEED_LOG.handle(record)
        self._seed_records = []
        cfg = self.config_init[self.subcommand]
        trainer_cfg = cfg["trainer"]
        for key, value in getattr(self, "_int_limits", {}).items():
            trainer_cfg[key] = value
        run_dir = self._run_dir()
        self.run_dir = run_dir
        if cfg.get("ckpt_path") and Path(cfg.ckpt_path).resolve().parent == (run_dir / "checkpoints").resolve():
            quiet_resume_warnings(run_dir / "checkpoints")  # resuming into its own run directory
        kwargs["default_root_dir"] = str(run_dir)
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = make_loggers(run_dir, project=cfg.run.project, mode=cfg.run.wandb,
                                            log_model=cfg.run.log_model, stage=self.subcommand)
        callbacks = list(trainer_cfg.get("callbacks") or [])
        if trainer_cfg.get("enable_checkpointing", True) is not False and not any(
                isinstance(c, ModelCheckpoint) for c in callbacks):
            monitor = getattr(self.model, "monitor", "val/loss")
            mode = getattr(self.model, "monitor_mode", "min")
            ckpt_dir = str(run_dir / "checkpoints")
            callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode,
                                             auto_insert_metric_name=False))
            # last.ckpt after every epoch (and every N steps if asked). Not `save_last` of the best checkpoint:
            # Lightning refreshes that one only in epochs that improve the monitored metric.
            callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                             enable_version_counter=False))
            if cfg.run.get("last_every_n_steps"):
                callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                                 enable_version_counter=False,
                                                 every_n_train_steps=cfg.run.last_every_n_steps))
            callbacks.append(SaveOnPreemption(run_dir / "checkpoints", self.command))
            n_avg = cfg.run.get("average_best") or 0
            if n_avg == 1 or n_avg < 0:
                raise DataError(f"run.average_best: {n_avg}: give 0 (off) or the number of checkpoints to average (>= 2)")
            if n_avg:
                callbacks.append(KeepBest(f"{ckpt_dir}/best-{n_avg}", monitor, mode, n_avg))
        callbacks += [MetricsJSON(cfg.run.metrics_file), RunSummary(), ExactResume(),
                      NonFiniteGuard(cfg.run.get("max_bad_steps") or 25), AgreeOnSignals()]
        # Checkpoints are written atomically (temp file, fsync, rename): a kill mid-save keeps the old one.
        plugins = trainer_cfg.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        if kwargs.get("logger") or trainer_cfg.get("logger"):
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        # SIGTERM and Ctrl-C are only noted when they arrive; the loops act on them between steps (signals.py).
        trainer._signal_connector = signals.signal_connector(trainer)
        return trainer

    def after_fit(self) -> None:
        if self.config[self.subcommand].run.get("average_best"):
            with signals.hold():  # training is over: a signal noted now lets the averaging finish
                average_best(self.trainer, self.model, self.datamodule)


# ---------------------------------------------------------------------------------------------------------------------
# Argument rewriting: short config names and `--ckpt` shortcuts


def _resolve_config_names(argv: list[str]) -> list[str]:
    """``-c slots`` -> ``-c <package>/configs/slots.yaml`` when no such file exists in the working directory."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in ("-c", "--config"):
            name = out[i + 1]
            if not Path(name).exists():
                for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
                    if cand.is_file():
                        out[i + 1] = str(cand)
                        break
                else:
                    # Names in a folder (slots-variants/crf) are listed with the other files of that folder.
                    folder = (CONFIG_DIR / name).parent
                    folder = folder if folder.is_dir() else CONFIG_DIR
                    fail(argv[0] if argv else None, f"config {name!r} not found (neither a file nor one of "
                               f"{sorted(p.stem for p in folder.glob('*.yaml'))} in {folder})")
    return out


def _model_class(argv: list[str], configs: dict[int, dict]) -> type | None:
    """The model class the configs and options of ``argv`` name (the last ``class_path`` wins); None if none."""
    path = None
    for i, a in enumerate(argv):
        if i in configs:
            model = configs[i].get("model")
            path = (model.get("class_path") or path) if isinstance(model, dict) else (model or path)
        elif a.startswith(("--model=", "--model.class_path=")):
            path = a.split("=", 1)[1]
        elif a in ("--model", "--model.class_path") and i + 1 < len(argv):
            path = argv[i + 1]
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # the parser names it
    return cls if isinstance(cls, type) and issubclass(cls, RnnlabModule) else None


def _nested_options(argv: list[str]) -> list[str]:
    """Configs and options from before the nested ``frontend``/``encoder`` options read at their nested place.

    A config file whose ``model.init_args`` holds an old flat name (``hidden_size: 256``; a run's saved
    ``config.yaml`` say) is passed on upgraded (``encoder: {hidden_size: 256}``); an old flat option on the
    command line (``--model.init_args.hidden_size=256``) becomes the nested one, named in a one-line note.
    """
    from pipelines.training.runconfig import parse_yaml

    configs: dict[int, dict] = {}
    for i, a in enumerate(argv[:-1]):
        if a in ("-c", "--config") and Path(argv[i + 1]).is_file():
            configs[i + 1] = parse_yaml(Path(argv[i + 1]).read_text(encoding="utf-8"))
    cls = _model_class(argv, configs)
    if cls is None or not cls.legacy_options:
        return argv
    out, moved = list(argv), []
    for i, cfg in configs.items():
        init = (cfg.get("model") or {}).get("init_args") if isinstance(cfg.get("model"), dict) else None
        if isinstance(init, dict) and set(init) & set(cls.legacy_options):
            cfg["model"]["init_args"] = cls.upgrade_options(init)
            out[i] = json.dumps(cfg)  # jsonargparse reads a config given as text as it reads a file
    for i, a in enumerate(out):
        for prefix in ("--model.init_args.", "--model."):
            name, eq, value = a[len(prefix):].partition("=") if a.startswith(prefix) else ("", "", "")
            if name in cls.legacy_options:
                out[i] = f"--model.init_args.{cls.legacy_options[name]}{eq}{value}"
                moved.append(f"{prefix}{name} -> --model.init_args.{cls.legacy_options[name]}")
                break
    if moved and os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"[rnnlab] note: read as nested options: {', '.join(moved)}", file=sys.stderr, flush=True)
    return out


def _pop_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    out, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return value, out


def _ckpt_shortcut(argv: list[str]) -> list[str]:
    """``test|validate --ckpt CKPT [overrides]`` -> ``-c <run>/config.yaml [overrides] --ckpt_path CKPT``."""
    ckpt, rest = _pop_option(argv[1:], "--ckpt")
    if ckpt is None:
        return argv
    try:
        from pipelines.inference import InferenceError, resolve_checkpoint

        try:  # a shipped model's name or hf:// address becomes its file
            ckpt = str(resolve_checkpoint(ckpt))
        except InferenceError as e:
            raise FileNotFoundError(str(e)) from None
        if not any(a.startswith("--print_config") for a in rest):  # printing the config never reads the file
            check_checkpoint(ckpt)  # a damaged file is named as such before its config is looked for
        config = run_config_for(ckpt)
    except (FileNotFoundError, ValueError) as e:
        fail(argv[0], str(e))
    # The saved config names the training run's dir; evaluation writes next to the checkpoint instead.
    return [argv[0], "-c", str(config), *rest, "--ckpt_path", ckpt]


# ---------------------------------------------------------------------------------------------------------------------
# The subcommands


def run(argv: list[str]) -> int:
    """Runs ``argv`` (``fit|validate|test|predict`` and its options) through :class:`RnnlabCLI`; the exit status.

    Bad data, a trainer setting this machine cannot honour and a bad config are one line on stderr and status 2;
    non-finite training 3; SIGTERM 143.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # also when called without pipelines.cli.main
    command = list(argv)
    if argv and argv[0] in ("test", "validate"):
        argv = _ckpt_shortcut(argv)
    argv = _nested_options(_resolve_config_names(argv))
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    # Epoch metrics are torchmetrics objects, already reduced over every rank before they are logged.
    warnings.filterwarnings("ignore", message=".*It is recommended to use `self.log.*sync_dist=True.*")  # lightning 2.6 internal deprecation
    # The CSV log shares the run directory with W&B files; a resumed run logs elsewhere (tracking.make_loggers).
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    quiet_logger_advert()
    # Every error names its subcommand, as the other commands' errors do: "rnnlab fit: error: ...".
    prefix = f"rnnlab {command[0]}: error:" if command else "rnnlab: error:"
    # fit/validate/test only note SIGTERM and Ctrl-C; the loops stop between steps (pipelines/training/signals.py).
    with signals.noting() if command and command[0] in ("fit", "validate", "test") else contextlib.nullcontext():
        return _run_cli(argv, command, prefix)


def _run_cli(argv: list[str], command: list[str], prefix: str) -> int:
    try:
        cli = RnnlabCLI(args=argv, command=command)
        trainer = getattr(cli, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Every rank reports, so multi-process logs show that no rank was left behind.
            print(f"[rnnlab] rank {trainer.global_rank}/{trainer.world_size} finished {cli.subcommand}", flush=True)
        if (by := signals.received()) and (trainer is None or trainer.is_global_zero):
            # Noted once the last epoch was trained (or in the last batch of validate/test): the command finished.
            print(f"[rnnlab] {by} arrived as {command[0]} was finishing; it finished, nothing to resume",
                  file=sys.stderr, flush=True)
    except DataError as e:
        # Bad input data is the user's to fix: one line naming file/row/field, no traceback from deep inside.
        print(f"{prefix} {e}", file=sys.stderr)
        return USER_ERROR
    except MisconfigurationException as e:
        # Trainer settings this machine cannot honour (e.g. accelerator=gpu without a GPU): one line, no traceback.
        hint = " (no usable GPU here: use --trainer.accelerator=cpu or auto)" if "gpu" in str(e).lower() else ""
        print(f"{prefix} {e}{hint}", file=sys.stderr)
        return USER_ERROR
    except NonFiniteTrainingError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return NON_FINITE
    except SIGTERMException:
        # Stopped by SIGTERM (fit: after a checkpoint, SaveOnPreemption): the conventional 128 + 15 tells a job
        # scheduler that the run did not finish; Ctrl-C gives 130 (128 + SIGINT), as a shell reports it.
        by = signals.received() or "SIGTERM"
        print(f"[rnnlab] stopped by {by}", file=sys.stderr, flush=True)
        return 130 if by == "Ctrl-C" else SIGTERM
    return 0


def fit(argv: list[str]) -> int:
    """``rnnlab fit``: trains a model from composed configs."""
    return run(["fit", *argv])


def validate(argv: list[str]) -> int:
    """``rnnlab validate``: validation metrics of a checkpoint (``--ckpt`` uses the run's saved config)."""
    return run(["validate", *argv])


def test(argv: list[str]) -> int:
    """``rnnlab test``: test metrics of a checkpoint (``--ckpt`` uses the run's saved config)."""
    return run(["test", *argv])



def predict(argv: list[str]) -> int:
    """``rnnlab predict``: with ``--ckpt``, a checkpoint on raw inputs (:mod:`pipelines.commands.predict`);
    without, LightningCLI's ``predict`` over a config's data."""
    if any(a.split("=")[0] == "--ckpt" for a in argv):
        from pipelines.commands.predict import main

        return main(argv)
    return run(["predict", *argv])
