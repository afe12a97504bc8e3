"""The ``rnnlab`` command: LightningCLI for fit/validate/test/predict plus checkpoint tools (predict, transcribe).

Examples:
    rnnlab fit -c defaults -c slots --data.data_dir ../shared/data/atis
    rnnlab fit -c defaults -c slots --print_config
    rnnlab test --ckpt runs/slots-.../checkpoints/best.ckpt [--data.test_file test.jsonl]
    echo "i want to fly from boston to denver" | rnnlab predict --ckpt runs/.../best.ckpt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Literal

from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from data.errors import DataError
from pipelines.base import RnnlabModule
from pipelines.callbacks import (
    ExactResume,
    KeepBest,
    LoggedSaveConfig,
    MetricsJSON,
    NonFiniteGuard,
    NonFiniteTrainingError,
    RunSummary,
    SaveOnPreemption,
)
from pipelines.checkpointing import AtomicCheckpointIO
from pipelines.tracking import make_loggers, make_run_dir

CONFIG_DIR = Path(__file__).parent / "configs"


class RnnlabCLI(LightningCLI):
    """LightningCLI with rnnlab's run directories, loggers, checkpointing and the data -> model vocab link."""

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", LoggedSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(RnnlabModule, None, subclass_mode_model=True, subclass_mode_data=True, args=args, run=run,
                         **kwargs)

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
        if ckpt and ckpt not in ("last", "best", "hpc", "registry") and Path(ckpt).is_file():
            p = Path(ckpt).resolve().parent
            return p.parent if p.name == "checkpoints" else p
        prefix = getattr(self.model, "run_prefix", "run")
        return make_run_dir(cfg.run.root, prefix, cfg.run.name)

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand]
        trainer_cfg = cfg["trainer"]
        run_dir = self._run_dir()
        self.run_dir = run_dir
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
            callbacks.append(SaveOnPreemption(run_dir / "checkpoints"))
            n_avg = cfg.run.get("average_best") or 0
            if n_avg == 1 or n_avg < 0:
                raise DataError(f"run.average_best: {n_avg}: give 0 (off) or the number of checkpoints to average (>= 2)")
            if n_avg:
                callbacks.append(KeepBest(f"{ckpt_dir}/best-{n_avg}", monitor, mode, n_avg))
        callbacks += [MetricsJSON(cfg.run.metrics_file), RunSummary(), ExactResume(),
                      NonFiniteGuard(cfg.run.get("max_bad_steps") or 25)]
        # Checkpoints are written atomically (temp file, fsync, rename): a kill mid-save keeps the old one.
        plugins = trainer_cfg.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        if kwargs.get("logger") or trainer_cfg.get("logger"):
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)


    def after_fit(self) -> None:
        n_avg = self.config[self.subcommand].run.get("average_best") or 0
        if n_avg:
            self._average_best(n_avg)

    def _average_best(self, n_avg: int) -> None:
        """Averages the kept best checkpoints into ``checkpoints/averaged.ckpt`` and validates it."""
        from pipelines.averaging import average_checkpoints

        trainer = self.trainer
        keep = next((c for c in trainer.checkpoint_callbacks if isinstance(c, KeepBest)), None)
        if keep is None or not keep.best_k_models:
            print("[rnnlab] run.average_best: no checkpoints were kept; nothing averaged", flush=True)
            return
        reverse = keep.mode == "max"
        ranked = sorted(keep.best_k_models.items(), key=lambda kv: float(kv[1]), reverse=reverse)
        paths = [p for p, _ in ranked]
        out = Path(keep.dirpath).parent / "averaged.ckpt"
        if trainer.is_global_zero:
            average_checkpoints(paths, out)
            scores = ", ".join(f"{Path(p).stem}: {float(s):.4g}" for p, s in ranked)
            print(f"[rnnlab] averaged the {len(paths)} best checkpoints by {keep.monitor} ({scores}) -> {out}",
                  flush=True)
        trainer.strategy.barrier("average_best")
        results = trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=str(out), verbose=False)
        if trainer.is_global_zero and results:
            metrics = {k: float(v) for k, v in results[0].items()}
            summary_path = Path(trainer.default_root_dir) / "summary.json"
            if summary_path.is_file():
                summary = json.loads(summary_path.read_text())
                summary["averaged"] = {"checkpoint": str(out), "from": paths, **metrics}
                summary_path.write_text(json.dumps(summary, indent=2) + "\n")
            print("[rnnlab] averaged checkpoint, validation: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val/")), flush=True)


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
                    raise SystemExit(f"rnnlab: error: config {name!r} not found (neither a file nor one of "
                                     f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))} in {CONFIG_DIR})")
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


def run_config_for(ckpt: str) -> Path:
    """The ``config.yaml`` saved in the run directory that holds ``ckpt``."""
    p = Path(ckpt).resolve()
    for d in (p.parent, p.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    raise SystemExit(f"rnnlab: error: no config.yaml next to {ckpt} (or its run directory); "
                     f"pass the training config with -c and the checkpoint with --ckpt_path")


def _ckpt_shortcut(argv: list[str]) -> list[str]:
    """``test|validate --ckpt CKPT [overrides]`` -> ``-c <run>/config.yaml [overrides] --ckpt_path CKPT``."""
    ckpt, rest = _pop_option(argv[1:], "--ckpt")
    if ckpt is None:
        return argv
    if not Path(ckpt).is_file():
        raise SystemExit(f"rnnlab: error: checkpoint not found: {ckpt}")
    # The saved config names the training run's dir; evaluation writes next to the checkpoint instead.
    return [argv[0], "-c", str(run_config_for(ckpt)), *rest, "--ckpt_path", ckpt]


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint tools


def predict_tool(argv: list[str]) -> int:
    """``rnnlab predict --ckpt CKPT [INPUT...]``: runs any checkpoint on raw inputs.

    Slot filling and G2P read lines from files or stdin (``-``); speech models take audio files/directories
    (the same as ``rnnlab transcribe``).
    """
    ap = argparse.ArgumentParser(prog="rnnlab predict", description="Run a trained checkpoint on raw inputs: "
                                 "sentences (slot filling), words (G2P, one per line) or audio files (speech).")
    ap.add_argument("--ckpt", required=True, help="checkpoint of an rnnlab run")
    ap.add_argument("inputs", nargs="*", default=["-"], help="text files (or - for stdin), or audio files/dirs")
    ap.add_argument("--json", action="store_true", help="print one JSON object per input")
    ap.add_argument("--beam", type=int, default=None, help="beam size for attention/CTC decoding (default: model's)")
    args, rest = ap.parse_known_args(argv)
    from pipelines.base import load_module

    model = _load_or_exit(load_module, args.ckpt)
    if hasattr(model, "transcribe_waveforms"):
        from pipelines.transcribe import main as transcribe

        extra = (["--json"] if args.json else []) + (["--beam", str(args.beam)] if args.beam else [])
        return transcribe(["--ckpt", args.ckpt, *args.inputs, *extra, *rest])
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    lines: list[str] = []
    for item in args.inputs or ["-"]:
        if item == "-":
            lines += sys.stdin.read().splitlines()
            continue
        try:
            lines += Path(item).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise SystemExit(f"rnnlab predict: error: cannot read {item}: {e.strerror}") from None
    lines = [ln for ln in (x.strip() for x in lines) if ln]
    if hasattr(model, "pronounce"):
        return _pronounce(model, lines, as_json=args.json, beam=args.beam)
    if not hasattr(model, "tag_sentences"):
        raise SystemExit(f"rnnlab predict: error: {args.ckpt}: no predictor for a {type(model).__name__} checkpoint")
    for res in model.tag_sentences(lines):
        if args.json:
            print(json.dumps(res))
        else:
            print(" ".join(f"{w}/{t}" for w, t in zip(res["words"], res["tags"], strict=True)) + f"\t{res['intent']}")
    return 0


def _pronounce(model, words: list[str], *, as_json: bool, beam: int | None) -> int:
    """Prints ``word<TAB>PHONEMES`` per word; a word that cannot be read is named on stderr and skipped."""
    good, failed = [], 0
    for w in words:
        try:
            model.check_word(w)
            good.append(w)
        except ValueError as e:
            failed += 1
            print(f"rnnlab predict: warning: skipped {e}", file=sys.stderr)
    prons = model.pronounce(good, beam_size=beam) if good else []
    for w, p in zip(good, prons, strict=True):
        print(json.dumps({"word": w, "phonemes": p}) if as_json else f"{w}\t{p}")
    return 1 if failed else 0


def _load_or_exit(loader, path):
    try:
        return loader(path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"rnnlab: error: {e}") from None


TOOLS = {"predict": predict_tool}


def _lazy_tool(module: str, fn: str):
    def run(argv):
        import importlib

        return getattr(importlib.import_module(module), fn)(argv)

    return run


TOOLS.update({
    "transcribe": _lazy_tool("pipelines.transcribe", "main"),
    "summarize": _lazy_tool("pipelines.summarize", "main"),
    "build-lm": _lazy_tool("pipelines.transcribe", "build_lm_main"),
    "bench": _lazy_tool("pipelines.commands.bench", "main"),
    "embed": _lazy_tool("pipelines.embed", "embed_main"),
    "evaluate-retrieval": _lazy_tool("pipelines.embed", "evaluate_main"),
    "linear-probe": _lazy_tool("pipelines.embed", "linear_probe_main"),
    "export": _lazy_tool("pipelines.export", "main"),
    "analyze": _lazy_tool("pipelines.commands.analyze", "main"),
    "average": _lazy_tool("pipelines.averaging", "main"),
})


USAGE = """usage: rnnlab COMMAND [options]

training and evaluation (LightningCLI; configs in pipelines/configs, e.g. -c defaults -c ctc):
  fit | validate | test | predict   rnnlab fit -c defaults -c slots [--trainer.* / --model.* / --data.* ...]
  test --ckpt CKPT                  evaluate a run's checkpoint with the config saved beside it
checkpoint tools:
  transcribe --ckpt CKPT FILE|DIR...   speech to text (--beam N, --lm ARPA, --json; --stream [--chunk-ms MS])
  export --ckpt CKPT --out DIR         CTC model as waveform -> log-probs: TorchScript + ONNX (--formats, --opset)
  predict --ckpt CKPT [INPUT...]       slot filling (sentences), G2P (words) or speech (audio files); - = stdin
  average CKPT... --out F.ckpt         mean weights of checkpoints of one model (see --run.average_best)
  build-lm TEXT|JSONL... --out LM      word n-gram LM (ARPA) for beam search
  summarize RUN_DIR...                 Markdown table of runs
  bench                                training/inference speed, FLOP rate, data rate, padding, memory
  analyze gradient-flow|long-range|loss-surface|gates ...   RNN analyses: PNG plots + summary.md
  embed --ckpt CKPT FILE|DIR... --out F.parquet   audio autoencoder embeddings (path, vector)
  evaluate-retrieval [--ckpt CKPT...] --data DIR  query-by-example MAP / P@k, MFCC and DTW baselines beside
  linear-probe --ckpt CKPT --data DIR             linear classifier on frozen embeddings: test accuracy
'rnnlab fit --help' lists every option of a subcommand.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv and argv[0] in TOOLS and (argv[0] != "predict" or any(a.split("=")[0] == "--ckpt" for a in argv)):
        return TOOLS[argv[0]](argv[1:]) or 0
    if argv and argv[0] in ("test", "validate"):
        argv = _ckpt_shortcut(argv)
    argv = _resolve_config_names(argv)
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    # Epoch metrics are torchmetrics objects, already reduced over every rank before they are logged.
    warnings.filterwarnings("ignore", message=".*It is recommended to use `self.log.*sync_dist=True.*")  # lightning 2.6 internal deprecation
    # The CSV log shares the run directory with W&B files; a resumed run logs elsewhere (tracking.make_loggers).
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    try:
        cli = RnnlabCLI(args=argv)
        trainer = getattr(cli, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Every rank reports, so multi-process logs show that no rank was left behind.
            print(f"[rnnlab] rank {trainer.global_rank}/{trainer.world_size} finished {cli.subcommand}", flush=True)
    except DataError as e:
        # Bad input data is the user's to fix: one line naming file/row/field, no traceback from deep inside.
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 2
    except MisconfigurationException as e:
        # Trainer settings this machine cannot honour (e.g. accelerator=gpu without a GPU): one line, no traceback.
        hint = " (no usable GPU here: use --trainer.accelerator=cpu or auto)" if "gpu" in str(e).lower() else ""
        print(f"rnnlab: error: {e}{hint}", file=sys.stderr)
        return 2
    except NonFiniteTrainingError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 3
    except SIGTERMException:
        # Stopped by SIGTERM after a checkpoint (SaveOnPreemption): the conventional 128 + 15 tells a job
        # scheduler that the run did not finish.
        print("[rnnlab] stopped by SIGTERM", file=sys.stderr, flush=True)
        return 143
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
