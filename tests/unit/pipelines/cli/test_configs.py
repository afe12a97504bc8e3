"""Every shipped config composes and type-checks (parse only: no data, no network)."""

import contextlib
import inspect
import io
import subprocess
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.cli.lightning import CONFIG_DIR
from pipelines.training.runconfig import parse_yaml

COMBOS = [
    ["slots"],
    ["slots", "slots-local"],
    ["slots", "slots-snips"],
    ["slots", "slots-spoken", "slots-local"],
    ["slots", "slots-local", "slots-plain"],
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
# The `make compare-slots` rows (configs/slots-variants/NAME.yaml) and what each changes in the plain tagger
# (slots.yaml + slots-plain.yaml), as the Makefile's shell `case` passed them before they were files.
SLOT_VARIANTS = {
    "base": {},
    "window": {"context_window": 1},
    "crf": {"crf": True},
    "chars": {"char_features": "cnn"},
    "wdrop": {"word_dropout": 0.05},
    "attention": {"joint": "attention"},
    "gated": {"joint": "slot_gated"},
    "intent": {"intent_pooling": "attention", "select_by": "joint"},
    "intent2": {"intent_weight": 2.0},
    "combo": {"char_features": "cnn", "crf": True, "word_dropout": 0.05},
    "all": {"crf": True, "char_features": "cnn", "joint": "slot_gated", "word_dropout": 0.05, "select_by": "joint"},
}
PLAIN_TAGGER = {"char_features": "none", "crf": False, "word_dropout": 0.0, "context_window": 0, "joint": "pooled",
                "intent_pooling": "max", "select_by": "slot_f1", "intent_weight": 1.0}
REPO = CONFIG_DIR.parents[1]


def _print_config(*args: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code in (0, None)
    return parse_yaml(buf.getvalue())


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
    covered |= {f"slots-variants/{v}.yaml" for v in SLOT_VARIANTS}  # test_slot_variant_changes_only_its_options
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


def _make(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", *argv], capture_output=True,
                          text=True, timeout=60)


def _make_variable(name: str) -> list[str]:
    proc = _make("--eval", "print-%: ; @echo $($*)", f"print-{name}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("variant", list(SLOT_VARIANTS))
def test_slot_variant_changes_only_its_options(variant):
    """Composed as compare-slots composes it, a variant is the plain tagger with its own options changed, and the
    bench's slots section builds the same options from the same file."""
    from pipelines.commands.bench.slots import variants
    from pipelines.slot_filling import SlotFillingModule

    cfg = _print_config("-c", "defaults", "-c", "slots", "-c", "slots-local", "-c", "slots-plain",
                        "-c", f"slots-variants/{variant}")
    assert cfg["model"]["class_path"] == "pipelines.slot_filling.SlotFillingModule"
    expected = {**PLAIN_TAGGER, **SLOT_VARIANTS[variant]}
    assert {k: cfg["model"]["init_args"][k] for k in PLAIN_TAGGER} == expected
    bench = variants()[variant]
    defaults = inspect.signature(SlotFillingModule).parameters
    assert {k: bench.get(k, defaults[k].default) for k in PLAIN_TAGGER} == expected
    encoder = cfg["model"]["init_args"]["encoder"]
    assert {k: encoder[k] for k in bench["encoder"]} == bench["encoder"]  # BiLSTM-200 of slots.yaml


def test_makefile_and_bench_see_the_same_slot_variants():
    from pipelines.commands.bench.slots import variants

    known = _make_variable("KNOWN_SLOT_VARIANTS")
    assert set(known) == set(variants()) == set(SLOT_VARIANTS)
    default = _make_variable("SLOT_VARIANTS")
    assert default == ["base", "window", "crf", "chars", "attention", "gated", "intent", "all"]
    assert next(iter(variants())) == "base"  # the row the bench's ratios divide by
    fits = [line for line in _make_lines("compare-slots", "SLOT_VARIANT_DATA=atis") if line[0] == "fit"]
    assert [line[line.index("slots-plain") + 2] for line in fits] == [f"slots-variants/{v}" for v in default]


def test_unknown_slot_variant_is_one_line_naming_the_known_ones():
    proc = _make("-n", "compare-slots", "SLOT_VARIANTS=base nope")
    assert proc.returncode != 0 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "compare-slots: unknown variant(s) nope (known: all attention base chars combo crf gated intent intent2 " \
           "wdrop window)" in line
    with pytest.raises(SystemExit, match=r"'slots-variants/nope' not found .*'intent2', 'wdrop', 'window'"):
        main(["fit", "-c", "slots-variants/nope"])


PRESETS = [("train-ctc", d) for d in ("english", "arctic", "fsdd-digits", "atis-synth", "digits-voices",
                                      "librispeech-100")] + [("train-rnnt", "english"), ("train-seq2seq", "arctic")]


@pytest.mark.parametrize("target, data", PRESETS)
def test_the_data_preset_sets_the_batch_size(target, data):
    """`make TARGET DATA=x` trains with the batch size of speech-x.yaml: the model settings for that data
    (<pipeline>-x.yaml) leave it to the data preset."""
    from pipelines.training.runconfig import read_configs

    (line,) = [line for line in _make_lines(target, f"DATA={data}") if line[0] == "fit"]
    names = [line[i + 1] for i, a in enumerate(line) if a == "-c"]
    assert f"speech-{data}" in names
    setters = [n for n in names if "batch_size" in (read_configs(CONFIG_DIR / f"{n}.yaml").get("data") or {})
               .get("init_args", {})]
    assert setters[-1] == f"speech-{data}", f"{target} DATA={data}: batch_size set by {setters}"
    cfg = _print_config(*line[1:])
    preset = read_configs(CONFIG_DIR / f"speech-{data}.yaml")["data"]["init_args"]["batch_size"]
    assert cfg["data"]["init_args"]["batch_size"] == preset


def _make_lines(*argv: str) -> list[list[str]]:
    from tests.integration.helpers import make_lines

    return make_lines(["-o", ".venv/.installed", *argv])
