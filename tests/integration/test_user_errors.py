"""Mistakes a user makes on the command line, one row each: the exit status and the one line that explains it.

Each row is ``Row(id, argv, files, code, line[, stdin])``: ``files`` maps names (made under the test's temporary
directory; ``None`` makes a directory) to their bytes, ``{tmp}``, ``{ctc}`` (a tiny CTC checkpoint) and ``{wav}``
(half a second of audio) in ``argv`` and ``line`` are filled in, and ``line`` must appear on stderr. Status 2
means exactly one stderr line; no row may print a traceback or decoder chatter. Rows run in-process through
:func:`pipelines.cli.main` (the ``rnnlab`` entry), with file descriptor 2 captured.
"""

from __future__ import annotations

import io
import json
from typing import NamedTuple

import pytest
import soundfile as sf
import torch

from pipelines.cli import main


class Row(NamedTuple):
    id: str
    argv: list[str]
    files: dict[str, bytes | None]
    code: int
    line: str
    stdin: str | None = None


TINY_CTC = ["fit", "-c", "defaults", "-c", "tiny/ctc"]
NOT_TEXT = bytes(range(128, 256)) * 8  # not UTF-8 anywhere
TEXT_MP3 = {"notes.mp3": b"hello, these are my notes\n"}

ROWS = [
    # options of the tools
    Row("transcribe-batch-size-0", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--batch-size", "0"], {}, 2,
        "rnnlab transcribe: error: argument --batch-size: must be an integer >= 1, got '0' "
        "(see rnnlab transcribe --help)"),
    Row("transcribe-beam-0", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--beam", "0"], {}, 2,
        "rnnlab transcribe: error: argument --beam: must be an integer >= 1 (1 = greedy), got '0'"),
    Row("transcribe-beam-negative", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--beam=-3"], {}, 2,
        "argument --beam: must be an integer >= 1 (1 = greedy), got '-3'"),
    Row("transcribe-beam-not-a-number", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--beam", "eight"], {}, 2,
        "argument --beam: must be an integer >= 1 (1 = greedy), got 'eight'"),
    Row("transcribe-unknown-option", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--beams", "4"], {}, 2,
        "rnnlab transcribe: error: unrecognized arguments: --beams 4 (see rnnlab transcribe --help)"),
    Row("transcribe-lm-binary", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--lm", "{tmp}/words.bin"],
        {"words.bin": NOT_TEXT}, 2,
        "rnnlab transcribe: error: {tmp}/words.bin: not an ARPA text file (line 1 is not UTF-8 text)"),
    Row("transcribe-lm-missing", ["transcribe", "--ckpt", "{ctc}", "{wav}", "--lm", "{tmp}/none.arpa"], {}, 2,
        "rnnlab transcribe: error: language model not found: {tmp}/none.arpa"),
    Row("export-out-existing-file", ["export", "--ckpt", "{ctc}", "--out", "{wav}"], {}, 2,
        "rnnlab export: error: --out {wav} is an existing file; export writes a directory"),
    Row("export-unknown-format", ["export", "--ckpt", "{ctc}", "--out", "{tmp}/x", "--formats", "tflite"], {}, 2,
        "rnnlab export: error: argument --formats: invalid choice: 'tflite'"),
    Row("build-lm-order-0", ["build-lm", "{tmp}/t.txt", "--order", "0", "--out", "{tmp}/lm.arpa"],
        {"t.txt": b"a b\n"}, 2, "rnnlab build-lm: error: --order must be >= 1, got 0"),
    Row("unknown-command", ["trascribe", "--ckpt", "{ctc}"], {}, 2, "rnnlab: error: unknown command 'trascribe'"),
    # inputs that hold nothing, or not what they claim
    Row("transcribe-empty-directory", ["transcribe", "--ckpt", "{ctc}", "{tmp}/empty"], {"empty": None}, 2,
        "rnnlab transcribe: error: no audio files in {tmp}/empty"),
    Row("transcribe-empty-directory-among-files", ["transcribe", "--ckpt", "{ctc}", "{tmp}/empty", "{wav}"],
        {"empty": None}, 1, "rnnlab transcribe: warning: skipped {tmp}/empty: no audio files in it"),
    Row("transcribe-text-named-mp3", ["transcribe", "--ckpt", "{ctc}", "{tmp}/notes.mp3", "{wav}"], TEXT_MP3, 1,
        "rnnlab transcribe: warning: skipped {tmp}/notes.mp3: not audio (a text file)"),
    Row("transcribe-random-bytes-wav", ["transcribe", "--ckpt", "{ctc}", "{tmp}/r.wav", "{wav}"],
        {"r.wav": NOT_TEXT}, 1, "rnnlab transcribe: warning: skipped {tmp}/r.wav: not audio (format not recognised)"),
    Row("predict-speech-model-on-stdin", ["predict", "--ckpt", "{ctc}"], {}, 2,
        "rnnlab predict: error: {ctc} is a speech model (CTCSpeechRecognizer): give audio files or directories, "
        "not text on stdin ('-')", stdin="hello\n"),
    Row("predict-speech-model-beam-0", ["predict", "--ckpt", "{ctc}", "{wav}", "--beam", "0"], {}, 2,
        "rnnlab predict: error: argument --beam: must be an integer >= 1 (1 = greedy), got '0'"),
    Row("predict-speech-model-empty-directory", ["predict", "--ckpt", "{ctc}", "{tmp}/empty"], {"empty": None}, 2,
        "rnnlab predict: error: no audio files in {tmp}/empty"),
    # fit/validate/test options (LightningCLI): one line naming the option, the value and what it accepts
    Row("fit-bad-choice", [*TINY_CTC, "--model.init_args.cell=lstn"], {}, 2,
        "rnnlab fit: error: --model.init_args.cell: 'lstn' is not one of lstm, gru (see rnnlab fit --help)"),
    Row("fit-bad-choice-separate-value", [*TINY_CTC, "--run.wandb", "of"], {}, 2,
        "rnnlab fit: error: --run.wandb: 'of' is not one of auto, online, offline, disabled"),
    Row("fit-wrong-type", [*TINY_CTC, "--trainer.max_epochs=two"], {}, 2,
        "rnnlab fit: error: --trainer.max_epochs: expected int or null, got 'two'"),
    Row("fit-wrong-type-model-option", [*TINY_CTC, "--model.init_args.hidden_size=big"], {}, 2,
        "rnnlab fit: error: --model.init_args.hidden_size: expected int, got 'big'"),
    Row("fit-unknown-option", [*TINY_CTC, "--trainer.max_epoks=2"], {}, 2,
        "rnnlab fit: error: unrecognized arguments: --trainer.max_epoks=2 (see rnnlab fit --help)"),
    Row("fit-unknown-model-option", [*TINY_CTC, "--model.init_args.hiden_size=8"], {}, 2,
        "rnnlab fit: error: unknown option --model.init_args.hiden_size (pipelines.ctc.CTCSpeechRecognizer has "
        "no such argument)"),
    Row("fit-missing-value", [*TINY_CTC, "--trainer.max_epochs"], {}, 2,
        "rnnlab fit: error: argument --trainer.max_epochs: expected one argument"),
    Row("fit-max-epochs-unbounded", [*TINY_CTC, "--trainer.max_epochs=-1"], {}, 2,
        "rnnlab fit: error: --trainer.max_epochs=-1 trains until stopped: bound it with "
        "--trainer.max_time=DD:HH:MM:SS or --trainer.max_steps=N"),
    Row("fit-max-epochs-negative", [*TINY_CTC, "--trainer.max_epochs=-3"], {}, 2,
        "rnnlab fit: error: --trainer.max_epochs=-3: give a number of epochs >= 0"),
    Row("fit-config-not-found", ["fit", "-c", "defaults", "-c", "tiny/cct"], {}, 2,
        "rnnlab fit: error: config 'tiny/cct' not found"),
]


@pytest.fixture(scope="module")
def ctc_files(tmp_path_factory):
    """A tiny (untrained) CTC checkpoint and half a second of audio."""
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer
    from tests.unit.pipelines.test_export import save_checkpoint, speechlike

    root = tmp_path_factory.mktemp("ctc")
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=2, hidden_size=16,
                                num_layers=1)
    wav = root / "speech.wav"
    sf.write(wav, speechlike(0.5, 1).numpy(), 16000)
    return {"ctc": save_checkpoint(model, root / "ctc.ckpt"), "wav": str(wav)}


def run_cli(argv: list[str], capfd, monkeypatch, stdin: str | None = None) -> tuple[int, str, str]:
    """``rnnlab ARGV`` in this process: (exit status, stdout, stderr), stderr read from file descriptor 2."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_user_error(row: Row, ctc_files, tmp_path, capfd, monkeypatch):
    for name, content in row.files.items():
        if content is None:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content)
    names = {"tmp": str(tmp_path), **ctc_files}
    code, _, err = run_cli([a.format(**names) for a in row.argv], capfd, monkeypatch, row.stdin)
    assert "Traceback" not in err and "Note:" not in err and "possibly a pipe" not in err, err
    assert row.line.format(**names) in err, err
    assert code == row.code, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def test_json_lists_skipped_files_in_place(ctc_files, tmp_path, capfd, monkeypatch):
    (tmp_path / "notes.mp3").write_bytes(TEXT_MP3["notes.mp3"])
    argv = ["transcribe", "--ckpt", ctc_files["ctc"], str(tmp_path / "notes.mp3"), ctc_files["wav"], "--json"]
    code, out, _ = run_cli(argv, capfd, monkeypatch)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert rows[0] == {"path": str(tmp_path / "notes.mp3"), "error": "not audio (a text file)"}
    assert rows[1]["path"] == ctc_files["wav"] and isinstance(rows[1]["text"], str) and "error" not in rows[1]
