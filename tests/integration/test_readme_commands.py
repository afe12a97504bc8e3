"""Every command the README shows, checked: the cheap ones run on tiny generated checkpoints and files, the rest
are parsed with their real options (``make`` targets expanded to the ``rnnlab`` lines they run, then parsed).

:data:`COMMANDS` lists each README command (from its code blocks and tables) and whether it runs or is parsed;
a command added to or dropped from the README fails :func:`test_every_readme_command_is_known` until the list
says how to check it. :data:`PATHS` stands in generated files for the README's placeholders.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from pipelines.cli import main
from tests.integration.helpers import make_lines

REPO = Path(__file__).resolve().parents[2]
RUN, PARSE = "run", "parse"  # run: executed, exit 0; parse: every rnnlab line parsed with its options, nothing run

COMMANDS = {
    # Set up
    "make train-ctc": PARSE,
    "make test": PARSE,
    # Use it without training (the shipped models)
    "make serve": PARSE,
    "rnnlab models": RUN,
    "rnnlab transcribe --ckpt english my.wav": RUN,
    "rnnlab transcribe --ckpt english-stream my.wav --stream": RUN,
    "rnnlab predict --ckpt keywords my.wav": RUN,
    'echo "play some jazz by miles davis" | rnnlab predict --ckpt snips': RUN,
    # Pipelines table
    "make train-ctc DATA=english": PARSE,
    "make train-ctc DATA=arctic": PARSE,
    "make train-ctc DATA=fsdd-digits": PARSE,
    "make train-ctc DATA=digits-voices": PARSE,
    "make train-ctc DATA=atis-synth": PARSE,
    "make train-ctc DATA=librispeech-100": PARSE,
    "make train-rnnt": PARSE,
    "make train-rnnt DATA=english": PARSE,
    "make train-seq2seq": PARSE,
    "make train-g2p": PARSE,
    "make train-slots": PARSE,
    "make train-slots DATA_DIR=../shared/data/atis": PARSE,
    "make train-slots DATA=snips": PARSE,
    "make train-slots DATA=spoken": PARSE,
    "make train-autoencoder": PARSE,
    "make train-digits": PARSE,
    # Pipelines: overrides and the other targets
    'make train-ctc ARGS="--model.init_args.encoder.num_layers=5 --trainer.max_epochs=20"': PARSE,
    "rnnlab fit -c defaults -c ctc -c my.yaml --model.init_args.encoder.hidden_size=384": PARSE,
    "rnnlab fit -c defaults -c slots --print_config": RUN,
    'make train-seq2seq ARGS="--model.init_args.ctc_weight=0 --model.init_args.attention=additive"': PARSE,
    "make slots-table": PARSE,
    "make compare-rnns": PARSE,
    "make compare-slots": PARSE,
    "make bench": PARSE,
    'make train-autoencoder ARGS="-c autoencoder-denoising"': PARSE,
    "make analyze": PARSE,
    'make retrieval-table RETRIEVAL_CKPTS="ae=AE.ckpt dae=DAE.ckpt"': PARSE,
    "make compare-asr CKPT=runs/ctc-.../checkpoints/best.ckpt": PARSE,
    # Using a trained model
    "rnnlab transcribe --ckpt runs/ctc-.../checkpoints/best.ckpt audio.wav recordings/ "
    "[--beam 8 --lm words.arpa --json]": RUN,
    "rnnlab test --ckpt runs/ctc-.../checkpoints/best.ckpt": PARSE,
    "rnnlab build-lm train/metadata.jsonl --order 3 --holdout validation/metadata.jsonl --out lm.arpa": RUN,
    "rnnlab validate --ckpt runs/ctc-.../checkpoints/best.ckpt --decode.beam_size=8 --decode.lm=lm.arpa": PARSE,
    'echo "i want to fly from boston to denver" | rnnlab predict --ckpt runs/slots-.../checkpoints/best.ckpt': RUN,
    "rnnlab test --ckpt runs/slots-.../checkpoints/best.ckpt --data.init_args.test_file=my_test.jsonl": PARSE,
    "rnnlab predict --ckpt runs/slots-.../checkpoints/best.ckpt --asr runs/ctc-.../checkpoints/best.ckpt audio.wav "
    "[--json]": RUN,
    "rnnlab evaluate-spoken-slots --ckpt SLOTS.ckpt --asr SPEECH.ckpt --data ../shared/data/atis/validation.jsonl":
        PARSE,
    'printf "rnnlab\\nlightning\\n" | rnnlab predict --ckpt runs/g2p-.../checkpoints/best.ckpt [--beam 8 --json]':
        PARSE,
    "rnnlab predict --ckpt runs/seq2seq-.../checkpoints/best.ckpt audio.wav [--beam 8]": PARSE,
    "rnnlab test --ckpt runs/seq2seq-.../checkpoints/best.ckpt --decode.beam_size=8 --decode.ctc_weight=0.3": PARSE,
    "rnnlab export --ckpt runs/ctc-.../checkpoints/best.ckpt --out exported/": RUN,
    "rnnlab average runs/ctc-.../checkpoints/best-5/*.ckpt --out averaged.ckpt": RUN,
    "rnnlab transcribe --ckpt runs/ctc-uni/checkpoints/best.ckpt audio.wav --stream [--chunk-ms 200]": RUN,
    "rnnlab test --ckpt runs/classifier-.../checkpoints/best.ckpt": PARSE,
    "rnnlab embed --ckpt runs/autoencoder-.../checkpoints/best.ckpt a.wav dir/ --out embeddings.parquet": PARSE,
    "rnnlab evaluate-retrieval --ckpt ae=AE.ckpt --ckpt dae=DAE.ckpt --data ../shared/data/fsdd": PARSE,
    "rnnlab linear-probe --ckpt AE.ckpt --data ../shared/data/fsdd": PARSE,
    # Tiny configs
    "rnnlab fit -c defaults -c tiny/slots -c slots-local --data.init_args.data_dir=../shared/data/atis": PARSE,
    "rnnlab fit -c defaults -c tiny/ctc --data.init_args.data_dir=my_corpus/": PARSE,
    # Results table
    'make train-ctc DATA=arctic ARGS="--run.average_best=5"': PARSE,
    "make train-seq2seq DATA=arctic": PARSE,
    'make train-ctc DATA=digits-voices ARGS="--model.init_args.init_from=..."': PARSE,
    'make train-keywords ARGS="-c keywords-english"': PARSE,
    "rnnlab test --ckpt ... --decode.ctc_weight=0.3 --decode.beam_size=4": PARSE,
    "make train-slots DATA=spoken DATA_DIR=...": PARSE,
    "rnnlab test --ckpt ...": PARSE,
    "rnnlab evaluate-retrieval ...": PARSE,
    "rnnlab fit -c defaults -c siamese": PARSE,
    "rnnlab evaluate-spoken-slots ...": PARSE,
}

# README placeholder -> generated file (keys of the `workspace` fixture), longest first when substituted.
PATHS = {
    "runs/ctc-.../checkpoints/best-5/*.ckpt": "{ctc} {ctc_copy}",
    "runs/ctc-.../checkpoints/best.ckpt": "{ctc}",
    "runs/ctc-uni/checkpoints/best.ckpt": "{ctc_uni}",
    "runs/slots-.../checkpoints/best.ckpt": "{slots}",
    "runs/g2p-.../checkpoints/best.ckpt": "{g2p}",
    "runs/seq2seq-.../checkpoints/best.ckpt": "{seq2seq}",
    "runs/classifier-.../checkpoints/best.ckpt": "{classifier}",
    "runs/autoencoder-.../checkpoints/best.ckpt": "{autoencoder}",
    "--ckpt ...": "--ckpt {seq2seq}",
    "evaluate-retrieval ...": "evaluate-retrieval --data {tmp}/fsdd",
    "evaluate-spoken-slots ...": "evaluate-spoken-slots --ckpt {slots} --asr {ctc} --data {tmp}/validation.jsonl",
    "SLOTS.ckpt": "{slots}",
    "SPEECH.ckpt": "{ctc}",
    "CTC.ckpt": "{ctc}",
    "taipei.wav": "{wav}",
    "init_from=...": "init_from={ctc}",
    "audio.wav": "{wav}",
    "my.wav": "{wav}",
    "a.wav": "{wav}",
    "recordings/": "{tmp}/recordings",
    "dir/": "{tmp}/recordings",
    "words.arpa": "{tmp}/words.arpa",
    "lm.arpa": "{tmp}/lm.arpa",
    "train/metadata.jsonl": "{tmp}/train/metadata.jsonl",
    "validation/metadata.jsonl": "{tmp}/validation/metadata.jsonl",
    "my.yaml": "{tmp}/my.yaml",
    "my_test.jsonl": "{tmp}/my_test.jsonl",
    "exported/": "{tmp}/exported",
    "averaged.ckpt": "{tmp}/averaged.ckpt",
    "embeddings.parquet": "{tmp}/embeddings.parquet",
    "AE.ckpt": "{autoencoder}",
    "DAE.ckpt": "{autoencoder}",
}


def readme_commands(text: str) -> list[str]:
    """``rnnlab``/``make`` commands of the README's code blocks (comments dropped) and of its tables' code spans."""
    found = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if re.match(r"(rnnlab|make) |.*\| rnnlab ", line):
                found.append(line)
    for row in (ln for ln in text.splitlines() if ln.startswith("|")):
        found += [c.strip() for c in re.findall(r"`([^`]+)`", row) if re.match(r"(rnnlab|make) ", c)]
    return list(dict.fromkeys(found))


def test_every_readme_command_is_known():
    found = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert not set(found) - set(COMMANDS), f"README commands this test does not check: {set(found) - set(COMMANDS)}"
    assert not set(COMMANDS) - set(found), f"no longer in the README: {set(COMMANDS) - set(found)}"


def _save(model, path: Path) -> str:
    from tests.fixtures.checkpoints import save_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(model, path)


def _run_dir(root: Path, name: str, tiny: str) -> Path:
    """``root/runs/NAME`` with the resolved tiny config (``config.yaml``), as a fit leaves it."""
    run = root / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    code, out, _ = _main(["fit", "-c", "defaults", "-c", f"tiny/{tiny}", "--print_config"])
    assert code == 0
    (run / "config.yaml").write_text(out)
    return run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny (untrained) checkpoints in run directories, audio, transcripts and a config, for the README's paths."""
    from data.text import CharTokenizer, Vocabulary
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.slot_filling import SlotFillingModule
    from tests.unit.pipelines.inference.export_helpers import speechlike

    tmp = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    ctc = dict(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=2, hidden_size=16, num_layers=1)
    files = {"tmp": str(tmp), "ctc": _save(CTCSpeechRecognizer(**ctc), _run_dir(tmp, "ctc-1", "ctc"))}
    files["ctc_copy"] = _save(CTCSpeechRecognizer(**ctc), tmp / "runs" / "ctc-1" / "checkpoints" / "epoch1.ckpt")
    files["ctc_uni"] = _save(CTCSpeechRecognizer(**ctc, bidirectional=False, normalize="none"),
                             tmp / "ctc-uni" / "best.ckpt")
    words = Vocabulary(["<pad>", "<unk>", "i", "want", "to", "fly"], unk="<unk>").to_dict()
    files["slots"] = _save(SlotFillingModule(vocab={"words": words, "tags": ["O", "B-city"], "intents": ["flight"]},
                                             embedding_dim=4, encoder={"hidden_size": 8}), _run_dir(tmp, "slots-1", "slots"))
    for name, tiny in [("seq2seq", "seq2seq"), ("classifier", "digits"), ("g2p", "g2p"),
                       ("autoencoder", "autoencoder")]:
        path = _run_dir(tmp, f"{name}-1", tiny)  # parsed only: any file stands in for the checkpoint
        path.write_bytes(b"")
        files[name] = str(path)
    (tmp / "recordings").mkdir()
    for i, where in enumerate([tmp / "speech.wav", tmp / "recordings" / "b.wav"]):
        sf.write(where, speechlike(0.4 + 0.2 * i, i).numpy(), 16000)
    files["wav"] = str(tmp / "speech.wav")
    for split, texts in [("train", ["the cat sat", "a dog ran", "the dog sat"]), ("validation", ["a cat ran"])]:
        (tmp / split).mkdir()
        (tmp / split / "metadata.jsonl").write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))
    assert _main(["build-lm", str(tmp / "train" / "metadata.jsonl"), "--order", "2",
                  "--out", str(tmp / "words.arpa")])[0] == 0
    (tmp / "my.yaml").write_text("trainer:\n  max_epochs: 1\n")
    stamp, peers = tmp / "stamp", tmp / "peers-stamp"
    for f in (stamp, peers):  # the same time, newer than pyproject.toml: make sees .venv as installed
        f.touch()
        os.utime(f, ns=(time.time_ns(),) * 2 if f is stamp else (stamp.stat().st_mtime_ns,) * 2)
    files["make_stamps"] = [f"STAMP={stamp}", f"PEERS_STAMP={peers}"]
    return files


def _main(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """``rnnlab ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO(stdin))
        try:
            code = main(argv) or 0
        except SystemExit as e:
            code = e.code or 0
    return code, out.getvalue(), err.getvalue()


class _Parsed(Exception):
    """Raised instead of running a tool once its command line has parsed."""


def parse(argv: list[str], tmp: str) -> None:
    """Parses an ``rnnlab`` command line with the command's own parser, without running it."""
    if argv[0] in ("fit", "validate", "test"):  # LightningCLI validates the whole config, then prints it
        code, _, err = _main([*argv, "--print_config"])
        assert code == 0, f"rnnlab {shlex.join(argv)}: {err}"
        return
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = real(self, args, namespace)
        if self.prog.count(" ") == 1:  # the command's own parser, not a subcommand's
            assert not rest, f"rnnlab {shlex.join(argv)}: unknown options {rest}"
            raise _Parsed()
        return ns, rest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        with pytest.raises(_Parsed):
            code, _, err = _main(argv)
            raise AssertionError(f"rnnlab {shlex.join(argv)} did not parse: {code} {err}")


def substitute(command: str, files: dict) -> str:
    for placeholder in sorted(PATHS, key=len, reverse=True):
        command = command.replace(placeholder, PATHS[placeholder].format(**files))
    return re.sub(r"\[([^]]*)\]", r"\1", command)  # optional parts are checked too


@pytest.mark.parametrize("command", list(COMMANDS))
def test_readme_command(command, workspace, tmp_path):
    line = substitute(command, workspace)
    stdin = ""
    if " | rnnlab " in line:
        feed, line = line.split(" | ", 1)
        stdin = "".join(f"{t}\n" for t in shlex.split(feed)[1:]).replace("\\n", "\n")
    argv = shlex.split(line)
    if argv[0] == "make":
        if argv[1:] == ["test"]:  # the suite itself: its target runs pytest over tests/
            dry = subprocess.run(["make", "-n", "-C", str(REPO), "test", *workspace["make_stamps"]],
                                 capture_output=True, text=True, timeout=60)
            assert dry.returncode == 0 and "-m pytest -q tests" in dry.stdout, dry.stdout + dry.stderr
            return
        lines = make_lines([*argv[1:], *workspace["make_stamps"]])
        assert lines, f"{command} runs no rnnlab command"
        for rnnlab_argv in lines:
            parse(rnnlab_argv, workspace["tmp"])
        return
    assert argv[0] == "rnnlab"
    if COMMANDS[command] == PARSE:
        parse(argv[1:], workspace["tmp"])
        return
    code, out, err = _main(argv[1:], stdin=stdin)
    assert code == 0, err
    if argv[1] == "export":
        assert {p.name for p in Path(argv[argv.index("--out") + 1]).iterdir()} >= {"model.ts", "model.onnx",
                                                                                    "tokenizer.json"}
    if argv[1] == "transcribe":
        assert out.strip() and "  " not in out
