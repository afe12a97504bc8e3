"""Every shipped config composes and type-checks (parse only: no data, no network)."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.cli.lightning import CONFIG_DIR

COMBOS = [
    ["slots"],
    ["slots", "slots-local"],
    ["slots", "slots-snips"],
    ["slots", "slots-spoken", "slots-local"],
    ["tiny/slots.yaml"],
    ["ctc"],
    ["ctc", "speech-arctic", "ctc-arctic"],
    ["ctc", "speech-english", "ctc-english"],
    ["ctc", "speech-english", "ctc-english", "ctc-english-stream"],
    ["ctc", "speech-digits-voices", "ctc-digits-voices"],
    ["ctc", "speech-arctic", "ctc-arctic", "ctc-english", "ctc-finetune"],
    ["ctc", "speech-librispeech-100", "ctc-librispeech-100"],
    ["ctc", "speech-librispeech-960", "ctc-librispeech-100", "ctc-librispeech-960"],
    ["ctc", "speech-fsdd-digits", "ctc-fsdd-digits"],
    ["ctc", "speech-atis-synth", "ctc-atis-synth"],
    ["tiny/ctc.yaml"],
    ["ctc", "rnnt"],
    ["tiny/ctc.yaml", "tiny/rnnt.yaml"],
    ["seq2seq"],
    ["seq2seq", "speech-arctic", "seq2seq-arctic"],
    ["seq2seq", "speech-fsdd-digits"],
    ["seq2seq", "speech-librispeech-100"],
    ["tiny/seq2seq.yaml"],
    ["g2p"],
    ["tiny/g2p.yaml"],
    ["autoencoder"],
    ["autoencoder", "autoencoder-denoising"],
    ["autoencoder", "autoencoder-correspondence"],
    ["tiny/autoencoder.yaml"],
    ["siamese"],
    ["tiny/siamese.yaml"],
    ["digits"],
    ["digits", "keywords"],
    ["digits", "keywords", "keywords-english"],
    ["tiny/digits.yaml"],
]


def _print_config(*args: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code in (0, None)
    return yaml.safe_load(buf.getvalue())


@pytest.mark.parametrize("names", COMBOS, ids=lambda n: "+".join(Path(x).stem for x in n))
def test_shipped_config_parses(names):
    args = ["-c", "defaults"]
    for n in names:
        args += ["-c", n]
    cfg = _print_config(*args)
    assert cfg["model"]["class_path"].startswith("pipelines.")
    assert cfg["data"]["class_path"].startswith("data.")
    assert cfg["trainer"]["gradient_clip_val"] == 5.0


def test_every_yaml_is_covered():
    shipped = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")} - {"defaults.yaml"}
    covered = {n if n.endswith(".yaml") else f"{n}.yaml" for combo in COMBOS for n in combo}
    assert shipped <= covered, f"configs without a parse test: {sorted(shipped - covered)}"


def test_typo_in_choice_fails_with_choices():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(["fit", "-c", "defaults", "-c", "ctc", "--model.init_args.encoder.cell=lstn", "--print_config"])
    assert e.value.code != 0
    assert "lstn" in err.getvalue() and "gru" in err.getvalue()


def test_unknown_config_name_is_one_line():
    with pytest.raises(SystemExit, match="config 'nope' not found"):
        main(["fit", "-c", "nope"])
