"""The one table of ``rnnlab`` subcommands (name -> ``module:function``, group, synopsis, help); usage is made from it.

Every command is a function ``main(argv: list[str]) -> int`` imported only when it runs, so ``rnnlab
transcribe`` does not pay for importing the training stack it does not use. A test imports every entry, runs
``--help`` of each and checks that every ``rnnlab X`` in the Makefile and README is registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

TRAIN = "training and evaluation (LightningCLI; configs in pipelines/configs, e.g. -c defaults -c ctc)"
TOOLS = "checkpoint tools"
EMBEDDINGS = "audio embeddings (autoencoder checkpoints)"
REPORTS = "reports and measurements"


@dataclass(frozen=True)
class Command:
    """One subcommand: ``target`` names ``module:function``, a ``main(argv) -> int``."""

    name: str
    target: str
    group: str
    synopsis: str
    help: str

    def load(self) -> Callable[[list[str]], int]:
        """The command's function (imports its module)."""
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("fit", "pipelines.cli.lightning:fit", TRAIN, "-c CONFIG... [--trainer.* --model.* ...]",
            "train (--print_config shows the resolved config)"),
    Command("validate", "pipelines.cli.lightning:validate", TRAIN, "--ckpt CKPT [--decode.*]",
            "validation metrics of a run's checkpoint (config saved beside it)"),
    Command("test", "pipelines.cli.lightning:test", TRAIN, "--ckpt CKPT [--decode.*]",
            "test metrics of a run's checkpoint (config saved beside it)"),
    Command("predict", "pipelines.cli.lightning:predict", TOOLS, "--ckpt CKPT [INPUT...]",
            "slot filling (sentences), G2P (words): files or - = stdin; speech: audio files; no --ckpt: LightningCLI"),
    Command("models", "pipelines.commands.models:main", TOOLS, "[--json] [--verify]",
            "the shipped models: every --ckpt also takes their names (rnnlab transcribe --ckpt english a.wav)"),
    Command("pack", "pipelines.commands.pack:main", TOOLS, "--ckpt CKPT --name NAME --out DIR",
            "a run's checkpoint as a shippable model: float16 weights, config, manifest entry, model card"),
    Command("transcribe", "pipelines.commands.transcribe:main", TOOLS, "--ckpt CKPT FILE|DIR...",
            "speech to text (--beam N, --lm ARPA, --json; --stream [--chunk-ms MS])"),
    Command("align", "pipelines.commands.align:main", TOOLS, "[--ckpt CKPT] --data NAME=DIR... --out DIR",
            "word tokens cut from read sentences by CTC forced alignment: wav files + metadata.jsonl"),
    Command("export", "pipelines.commands.export:main", TOOLS, "--ckpt CKPT --out DIR",
            "CTC model as waveform -> log-probs, transducer as encoder/predictor/joiner: TorchScript + ONNX"),
    Command("average", "pipelines.commands.average:main", TOOLS, "CKPT... --out F.ckpt",
            "mean weights of checkpoints of one model (see --run.average_best)"),
    Command("synth", "pipelines.commands.synth:main", TOOLS, "[--say TEXT --voice V --out F.wav]",
            "the embedded eSpeak NG corpus, or one sentence spoken to a file"),
    Command("build-lm", "pipelines.commands.build_lm:main", TOOLS, "TEXT|JSONL... --out LM",
            "word n-gram LM (ARPA) for beam search"),
    Command("serve", "pipelines.commands.serve:main", TOOLS, "[--asr M] [--stream M] [--keywords M] [--port N]",
            "local web app: microphone, files, slots, G2P, look inside (JSON + WebSocket API)"),
    Command("embed", "pipelines.commands.embed:main", EMBEDDINGS, "--ckpt CKPT FILE|DIR... --out F.parquet",
            "audio autoencoder embeddings (path, vector)"),
    Command("evaluate-retrieval", "pipelines.commands.evaluate_retrieval:main", EMBEDDINGS,
            "[--ckpt CKPT...] --data DIR",
            "query-by-example MAP / P@k and same-different AP (cross-speaker), MFCC and DTW baselines beside"),
    Command("linear-probe", "pipelines.commands.linear_probe:main", EMBEDDINGS, "--ckpt CKPT --data DIR",
            "linear classifier on frozen embeddings: test accuracy"),
    Command("evaluate-keywords", "pipelines.commands.evaluate_keywords:main", REPORTS, "--ckpt CKPT [--data DIR]",
            "keyword classifier: accuracy, per class and confusion matrix, beside a mean-MFCC baseline"),
    Command("evaluate-spoken-slots", "pipelines.commands.evaluate_spoken_slots:main", REPORTS,
            "--ckpt SLOTS --asr SPEECH --data SPLIT.jsonl", "spoken slot filling on eSpeak NG speech: slot F1, "
            "intent accuracy and WER beside text"),
    Command("summarize", "pipelines.commands.summarize:main", REPORTS, "RUN_DIR... [--group-seeds]",
            "Markdown table of runs"),
    Command("bench", "pipelines.commands.bench:main", REPORTS, "[--only S,S...] [--out F.json]",
            "training/inference speed, FLOP rate, data rate, padding, memory"),
    Command("degrade", "pipelines.commands.degrade:main", REPORTS, "DIR --out OUT --kind noise|codec|reverb",
            "a degraded copy of an audiofolder split (real noise at an SNR, telephone codec, reverberation)"),
    Command("compare-asr", "pipelines.commands.compare_asr:main", REPORTS, "[--ckpt CKPT] --data NAME=DIR...",
            "an rnnlab checkpoint beside pocketsphinx on the same files: CER/WER/RTF per corpus"),
    Command("analyze", "pipelines.commands.analyze:main", REPORTS, "ANALYSIS [options]",
            "RNN analyses (gradient-flow, long-range, loss-surface, gates): PNG plots + summary.md"),
]}


def usage() -> str:
    """The ``rnnlab --help`` text: the commands by group, in table order."""
    groups: dict[str, list[Command]] = {}
    for c in COMMANDS.values():
        groups.setdefault(c.group, []).append(c)
    width = max(len(f"{c.name} {c.synopsis}") for c in COMMANDS.values())
    lines = ["usage: rnnlab COMMAND [options]", ""]
    for group, commands in groups.items():
        lines.append(f"{group}:")
        lines += [f"  {f'{c.name} {c.synopsis}':<{width}}  {c.help}" for c in commands]
    lines.append("'rnnlab COMMAND --help' lists every option of a command.")
    return "\n".join(lines)
