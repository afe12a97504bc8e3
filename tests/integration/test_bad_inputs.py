"""Bad inputs through the real `rnnlab` entry: each is one named line (or a named skip), never a traceback.

One table, one row per case: ``(id, argv, files, exit_code, expected_substring)``. ``argv`` may hold ``{name}``
placeholders for the files the row asks for (built by the makers in :data:`MAKERS`) and ``{ckpt}`` / ``{run}``
for the tiny slot-filling run trained once for this module. A file named ``stdin_*`` is fed to stdin instead.
The expected text is looked for in stderr; whatever the row, stderr holds no traceback and none of the noise
that used to come with every run.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipelines.cli import main

TINY = ["-c", "defaults", "-c", "tiny/slots.yaml"]
GOOD = {"tokens": ["fly", "to", "boston"], "tags": ["O", "O", "B-toloc.city_name"], "intent": "atis_flight"}


class _Payload:
    """Pickles to a call that would create a directory: what a malicious checkpoint smuggles in."""

    def __reduce__(self):
        return (os.makedirs, ("/tmp/rnnlab-test-pwned",))


def _jsonl(rows: list, tail: bytes = b"") -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode() + tail


def _with_class(ckpt: Path, class_path: str) -> bytes:
    state = torch.load(ckpt, weights_only=True)
    state["rnnlab"]["class_path"] = class_path
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _code_ckpt() -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "x": _Payload()}, buf)
    return buf.getvalue()


def _latin1_training_copy(run: dict, path: Path) -> None:
    """The training data with one Latin-1 line appended to train.jsonl (line 97, after 96 sentences)."""
    path.mkdir()
    for f in run["data"].iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    with open(path / "train.jsonl", "ab") as f:
        f.write(b'{"tokens": ["fly", "to", "caf\xe9"], "tags": ["O", "O", "O"], "intent": "atis_flight"}\n')


def _file(content: Callable[[dict], bytes]) -> Callable[[dict, Path], None]:
    return lambda run, path: path.write_bytes(content(run)) and None


# name -> (file name, writer(trained run, path))
MAKERS = {
    "code": ("code.ckpt", _file(lambda run: _code_ckpt())),
    "raw_pickle": ("raw.ckpt", _file(lambda run: pickle.dumps({"x": _Payload()}, protocol=2))),
    "truncated": ("truncated.ckpt", _file(lambda run: run["ckpt"].read_bytes()[:3000])),
    "random": ("random.ckpt", _file(lambda run: bytes(range(256)) * 16)),
    "text": ("notes.ckpt", _file(lambda run: b"hello, this is not a checkpoint\n")),
    "empty": ("empty.ckpt", _file(lambda run: b"")),
    "other_kind": ("ctc.ckpt", _file(lambda run: _with_class(run["ckpt"], "pipelines.ctc.CTCSpeechRecognizer"))),
    "no_tokens": ("no_tokens.jsonl", _file(lambda run: _jsonl([GOOD, {"tags": ["O"], "intent": "atis_flight"}]))),
    "no_tags": ("no_tags.jsonl", _file(lambda run: _jsonl([GOOD, GOOD, {"tokens": ["to", "denver"]}]))),
    "latin1_jsonl": ("latin1.jsonl", _file(lambda run: _jsonl([GOOD, GOOD]) + b'{"tokens": ["caf\xe9"]}\n')),
    "latin1_txt": ("latin1.txt", _file(lambda run: b"fly to boston\nfly to caf\xe9 denver\n")),
    "stdin_latin1": ("stdin.txt", _file(lambda run: b"fly to caf\xe9 denver\nfly to boston\n")),
    "latin1_train": ("data", _latin1_training_copy),
}

CASES = [
    # Checkpoints that are not usable: named, never loaded with code, never a traceback.
    ("test-code-ckpt", ["test", "--ckpt", "{code}"], ["code"], 2,
     "rnnlab test: error: {code}: not a readable checkpoint: it holds code (it names os.makedirs"),
    ("test-truncated-ckpt", ["test", "--ckpt", "{truncated}"], ["truncated"], 2,
     "rnnlab test: error: {truncated}: not a readable checkpoint: a truncated or damaged checkpoint archive"),
    ("test-random-bytes", ["test", "--ckpt", "{random}"], ["random"], 2,
     "{random}: not a readable checkpoint: unrecognised content"),
    ("test-text-file", ["test", "--ckpt", "{text}"], ["text"], 2, "{text}: not a readable checkpoint: a text file"),
    ("test-empty-file", ["test", "--ckpt", "{empty}"], ["empty"], 2,
     "{empty}: not a readable checkpoint: an empty file"),
    ("test-missing-ckpt", ["test", "--ckpt", "{run}/nope.ckpt"], [], 2, "rnnlab test: error: checkpoint not found"),
    ("validate-raw-pickle", ["validate", "--ckpt", "{raw_pickle}"], ["raw_pickle"], 2,
     "rnnlab validate: error: {raw_pickle}: not a readable checkpoint: it holds code (it names os.makedirs"),
    ("fit-resume-truncated", ["fit", *TINY, "--data.init_args.data_dir={data}", "--ckpt_path", "{truncated}"],
     ["truncated"], 2, "rnnlab fit: error: {truncated}: not a readable checkpoint: a truncated"),
    ("test-other-pipeline", ["test", "-c", "{run}/config.yaml", "--ckpt_path", "{other_kind}"], ["other_kind"], 2,
     "rnnlab test: error: {other_kind}: a CTCSpeechRecognizer checkpoint, but the config builds a SlotFillingModule"),
    ("predict-code-ckpt", ["predict", "--ckpt", "{code}", "-"], ["code"], 2,
     "rnnlab predict: error: {code}: not a readable checkpoint: it holds code"),
    ("predict-text-ckpt", ["predict", "--ckpt", "{text}", "-"], ["text"], 2,
     "rnnlab predict: error: {text}: not a readable checkpoint: a text file"),
    ("transcribe-code-ckpt", ["transcribe", "--ckpt", "{code}", "x.wav"], ["code"], 2,
     "rnnlab transcribe: error: {code}: not a readable checkpoint: it holds code"),
    ("transcribe-slots-ckpt", ["transcribe", "--ckpt", "{ckpt}", "x.wav"], [], 2,
     "{ckpt} is a SlotFillingModule checkpoint, not a speech recogniser"),
    # Slot data: a bad row is skipped and named by file and 1-based line; `strict: true` makes it the error.
    ("test-row-without-tokens", ["test", "--ckpt", "{ckpt}", "--data.init_args.test_file={no_tokens}"],
     ["no_tokens"], 0, "{no_tokens}: skipped line 2: no 'tokens' value"),
    ("test-row-without-tags", ["test", "--ckpt", "{ckpt}", "--data.init_args.test_file={no_tags}"],
     ["no_tags"], 0, "{no_tags}: skipped line 3: no 'tags' value"),
    ("test-latin1-row", ["test", "--ckpt", "{ckpt}", "--data.init_args.test_file={latin1_jsonl}"],
     ["latin1_jsonl"], 0, "{latin1_jsonl}: skipped line 3: not UTF-8 text (byte 0xe9)"),
    ("test-latin1-row-strict", ["test", "--ckpt", "{ckpt}", "--data.init_args.test_file={latin1_jsonl}",
                                "--data.init_args.strict=true"], ["latin1_jsonl"], 2,
     "error: {latin1_jsonl} line 3: not UTF-8 text (byte 0xe9)"),
    ("fit-latin1-train-row", ["fit", *TINY, "--data.init_args.data_dir={latin1_train}", "--trainer.max_epochs=1",
                              "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                              "--run.root={tmp}/runs"], ["latin1_train"], 0,
     "{latin1_train}/train.jsonl: skipped line 97: not UTF-8 text (byte 0xe9)"),
    ("predict-latin1-file", ["predict", "--ckpt", "{ckpt}", "{latin1_txt}"], ["latin1_txt"], 1,
     "rnnlab predict: warning: skipped {latin1_txt} line 2: not UTF-8 text (byte 0xe9)"),
    ("predict-latin1-stdin", ["predict", "--ckpt", "{ckpt}", "-"], ["stdin_latin1"], 1,
     "rnnlab predict: warning: skipped <stdin> line 1: not UTF-8 text (byte 0xe9)"),
    ("predict-data-latin1-file", ["predict", "-c", "{run}/config.yaml", "--ckpt_path", "{ckpt}",
                                  "--data.init_args.predict_file={latin1_txt}"], ["latin1_txt"], 0,
     "{latin1_txt}: skipped line 2: not UTF-8 text (byte 0xe9)"),
]

# Printed by earlier versions on every run: Lightning's advert, datasets' progress bar for a 100-line file.
NOISE = ("litlogger", "Generating train split", "Generating test split", "weights_only=False` will likely")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny slot-filling run (one epoch), trained in-process once for the whole table."""
    from tests.fixtures.slot_corpus import write_slot_corpus

    root = tmp_path_factory.mktemp("bad-inputs")
    data = write_slot_corpus(root / "data")
    try:
        code = main(["fit", *TINY, f"--data.init_args.data_dir={data}", "--trainer.max_epochs=1",
                     f"--run.root={root / 'runs'}", "--run.name=tiny"])
    finally:
        os.environ.pop("RNNLAB_RUN_NAME", None)
        os.environ.pop("RNNLAB_WANDB_ID", None)
    assert code == 0
    run = root / "runs" / "tiny"
    return {"root": root, "data": data, "run": run, "ckpt": run / "checkpoints" / "last.ckpt"}


def _make(name: str, trained: dict, where: Path) -> Path:
    file_name, write = MAKERS[name]
    write(trained, where / file_name)
    return where / file_name


@pytest.mark.parametrize(("argv", "files", "exit_code", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_line(argv, files, exit_code, expected, trained, tmp_path, capfd, caplog,
                                     monkeypatch):
    paths = {name: _make(name, trained, tmp_path) for name in files}
    values = {"ckpt": trained["ckpt"], "run": trained["run"], "data": trained["data"], "tmp": tmp_path, **paths}
    argv = [a.format(**values) for a in argv]
    stdin = next((p for n, p in paths.items() if n.startswith("stdin")), None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.read_bytes() if stdin else b"")))
    monkeypatch.chdir(tmp_path)  # nothing a run writes lands in the repository
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, printed = capfd.readouterr()
    err = printed + caplog.text  # rnnlab's warnings reach stderr through logging; under pytest its handler holds them
    assert code == exit_code, f"exit {code}, expected {exit_code}\n{err[-3000:]}"
    assert expected.format(**values) in err, err[-3000:]
    assert "Traceback" not in err
    assert not [n for n in NOISE if n in out + err], out + err
    assert not Path("/tmp/rnnlab-test-pwned").exists()
    if exit_code == 2:  # one error line, the last thing printed
        errors = [line for line in printed.splitlines() if "error: " in line]
        assert len(errors) == 1 and printed.strip().splitlines()[-1] == errors[0], printed
