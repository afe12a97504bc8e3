"""Spoken slot filling: `rnnlab predict --asr`, `rnnlab evaluate-spoken-slots` and the slot-value scoring."""

import json
import math
from collections import Counter

import pytest
import torch

from pipelines.commands.evaluate_spoken_slots import main as evaluate_main
from pipelines.commands.evaluate_spoken_slots import slot_values, value_f1
from pipelines.commands.predict import main as predict_main


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A speech model that reads any audio as ``a`` and a slot model that tags every word ``B-x``, intent ``i2``.

    Both are tiny real checkpoints whose output layers are set by hand (zero weights, one winning bias), so the
    whole path (audio reading, decoding, tokenising, tagging) runs and every output is known exactly.
    """
    import soundfile as sf

    from data.text import CharTokenizer, Vocabulary
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.slot_filling import SlotFillingModule
    from tests.fixtures.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("spoken")
    torch.manual_seed(0)
    tok = CharTokenizer()
    asr = CTCSpeechRecognizer(vocab=tok.to_dict(), n_mels=16, hidden_size=8, num_layers=1, stack_frames=2,
                              spec_augment=False, dropout=0.0)
    slots = SlotFillingModule(vocab={"words": Vocabulary(["<pad>", "<unk>", "a"], unk="<unk>").to_dict(),
                                     "tags": ["O", "B-x"], "intents": ["i1", "i2"]}, embedding_dim=4,
                              encoder={"hidden_size": 8})
    with torch.no_grad():
        head = asr.model.head.proj
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[tok.encode("a")[0]] = 10.0
        for layer, winner in ((slots.model.tag_head, 1), (slots.model.intent_head, 1)):
            layer.weight.zero_()
            layer.bias.zero_()
            layer.bias[winner] = 5.0
    t = torch.arange(8000) / 16000
    sf.write(root / "a.wav", (0.3 * torch.sin(2 * math.pi * 220 * t)).numpy(), 16000)
    (root / "notes.txt").write_text("not audio\n")
    return {"asr": save_checkpoint(asr, root / "ctc.ckpt"), "slots": save_checkpoint(slots, root / "slots.ckpt"),
            "root": root}


def test_predict_asr_prints_words_tags_intent_and_lists_skipped_files(cascade, capsys):
    wav, txt = cascade["root"] / "a.wav", cascade["root"] / "notes.txt"
    code = predict_main(["--ckpt", cascade["slots"], "--asr", cascade["asr"], str(wav), str(txt), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {"path": str(wav), "transcript": "a", "words": ["a"], "tags": ["B-x"], "intent": "i2"}
    assert rows[1:] == [{"path": str(txt), "error": "not audio (a text file)"}]
    assert err.startswith("rnnlab predict: warning: skipped ") and "notes.txt" in err

    assert predict_main(["--ckpt", cascade["slots"], "--asr", cascade["asr"], str(wav), "--beam", "4"]) == 0
    assert capsys.readouterr().out == f"{wav}\ta/B-x\ti2\n"


@pytest.mark.parametrize("swap, needle", [
    (True, "is a CTCSpeechRecognizer checkpoint, not a slot filling model"),
    (False, "no such file or directory"),
])
def test_predict_asr_errors_are_one_line(cascade, capsys, swap, needle):
    ckpt, asr = (cascade["asr"], cascade["slots"]) if swap else (cascade["slots"], cascade["asr"])
    with pytest.raises(SystemExit) as e:
        predict_main(["--ckpt", ckpt, "--asr", asr, str(cascade["root"] / "missing.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("rnnlab predict: error: ") and needle in err[0]


def test_evaluate_spoken_slots_scores_text_and_speech_exactly(cascade, tmp_path, capsys):
    data = tmp_path / "validation.jsonl"
    rows = [{"tokens": ["fly", "to", "boston"], "tags": ["O", "O", "B-x"], "intent": "i2"},
            {"tokens": ["at", "5", "pm"], "tags": ["O", "B-x", "I-x"], "intent": "i1"},
            {"tokens": ["never", "read"], "tags": ["O", "O"], "intent": "i1"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    argv = ["--ckpt", cascade["slots"], "--asr", cascade["asr"], "--data", str(data), "--limit", "2",
            "--workers", "1", "--synth-dir", str(tmp_path / "audio"), "--out", str(out)]
    assert evaluate_main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    result = json.loads(out.read_text())
    assert result["sentences"] == 2 and len(list((tmp_path / "audio" / "validation").glob("*.flac"))) == 2
    # Text: every word tagged B-x -> 6 one-word values, of which (x, boston) is right; gold (x, boston),
    # (x, five pm). Conlleval agrees here: 1 correct chunk of 6 predicted and 2 gold.
    assert result["text"]["slot_value"] == pytest.approx({"precision": 100 / 6, "recall": 50.0, "f1": 25.0})
    assert result["text"]["slot_conlleval"]["f1"] == pytest.approx(25.0)
    assert result["text"]["intent_acc"] == 50.0
    # Speech: "a" for each sentence: (x, a) is never right; 1 substitution + 2 deletions of 3 words, twice.
    assert result["speech"]["slot_value"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert result["speech"]["wer"] == pytest.approx(100.0) and result["speech"]["intent_acc"] == 50.0
    assert result["examples"][1]["reference"] == "at five pm" and result["examples"][1]["transcript"] == "a"
    assert table[2] == "| text (reference words) | 0.0 | 25.00 | 25.00 | 50.00 |"
    assert table[3] == "| speech (eSpeak NG, evaluation voices) | 100.0 | 0.00 | - | 50.00 |"


def test_evaluate_spoken_slots_bad_data_is_one_line(cascade, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": ["a", "b"], "tags": ["O"], "intent": "i1"}\n')
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--ckpt", cascade["slots"], "--asr", cascade["asr"], "--data", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"rnnlab evaluate-spoken-slots: error: {bad}:1: expected tokens, tags and intent")


def test_slot_values_are_typed_spoken_form_multisets():
    assert slot_values(["from", "st.", "louis", "at", "5", "pm"], ["O", "B-from", "I-from", "O", "B-t", "I-t"]) \
        == Counter({("from", "saint louis"): 1, ("t", "five pm"): 1})
    # The same value twice under one type is counted twice; a chunk opened by I- counts as conlleval reads it.
    assert slot_values(["boston", "and", "boston"], ["B-c", "O", "I-c"]) == Counter({("c", "boston"): 2})
    assert slot_values(["no", "slots"], ["O", "O"]) == Counter()


def test_value_f1_hand_made_cases():
    ref = [Counter({("city", "boston"): 1, ("time", "five pm"): 1}), Counter({("city", "denver"): 2})]
    # One right of two predicted in sentence 1; one of the two (city, denver) pairs found in sentence 2.
    hyp = [Counter({("city", "boston"): 1, ("time", "five"): 1}), Counter({("city", "denver"): 1})]
    assert value_f1(ref, hyp) == pytest.approx({"precision": 200 / 3, "recall": 50.0, "f1": 400 / 7})
    # Right value under the wrong type scores nothing; nothing predicted gives zeros, not a division error.
    assert value_f1([Counter({("city", "boston"): 1})], [Counter({("state", "boston"): 1})])["f1"] == 0.0
    assert value_f1([Counter()], [Counter()]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="1 predicted sentences but 2 references"):
        value_f1(ref, hyp[:1])


@pytest.fixture(scope="module")
def spoken_slots(tmp_path_factory):
    """A slot checkpoint built from spoken-form data (``data.spoken_form``) that tags every word ``B-x``."""
    from data.slots import SlotFillingDataModule
    from pipelines.slot_filling import SlotFillingModule
    from tests.fixtures.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("spoken-form")
    row = json.dumps({"tokens": ["at", "5", "pm", "st.", "louis"], "tags": ["O", "B-x", "I-x", "B-y", "I-y"],
                      "intent": "i1"})
    for split in ("train", "validation"):
        (root / f"{split}.jsonl").write_text(row + "\n")
    vocab = SlotFillingDataModule(dataset=None, data_dir=str(root), spoken_form=True).vocab
    torch.manual_seed(0)
    model = SlotFillingModule(vocab=vocab, embedding_dim=4, encoder={"hidden_size": 8})
    with torch.no_grad():
        model.model.tag_head.weight.zero_()
        model.model.tag_head.bias.zero_()
        model.model.tag_head.bias[model.tags.index("B-x")] = 5.0
    return save_checkpoint(model, root / "slots.ckpt")


def test_spoken_form_flag_reaches_predict_from_the_checkpoint(spoken_slots, cascade, tmp_path, capsys):
    from pipelines.commands._common import load_checkpoint
    from pipelines.commands.spoken import tag_transcripts

    typed = tmp_path / "typed.txt"
    typed.write_text("At 5 pm\n")
    assert predict_main(["--ckpt", spoken_slots, str(typed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == ["at", "five", "pm"]  # typed text in spoken form
    assert predict_main(["--ckpt", cascade["slots"], str(typed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == ["at", "5", "pm"]  # a model trained on digits: as typed
    # A recogniser's words reach a spoken-form model as they are; any other model gets the slot data's st.
    spoken, plain = (load_checkpoint("predict", c, kind="slots") for c in (spoken_slots, cascade["slots"]))
    assert spoken.spoken_form and not plain.spoken_form
    assert tag_transcripts(spoken, ["from saint louis"])[0]["words"] == ["from", "saint", "louis"]
    assert tag_transcripts(plain, ["from saint louis"])[0]["words"] == ["from", "st.", "louis"]
    wav = cascade["root"] / "a.wav"
    assert predict_main(["--ckpt", spoken_slots, "--asr", cascade["asr"], str(wav)]) == 0
    assert capsys.readouterr().out == f"{wav}\ta/B-x\ti1\n"


def test_evaluate_spoken_slots_scores_a_spoken_form_model_on_spoken_references(spoken_slots, cascade, tmp_path,
                                                                                capsys):
    data = tmp_path / "validation.jsonl"
    rows = [{"tokens": ["fly", "to", "boston"], "tags": ["O", "O", "B-x"], "intent": "i2"},
            {"tokens": ["at", "5", "pm"], "tags": ["O", "B-x", "I-x"], "intent": "i1"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    assert evaluate_main(["--ckpt", spoken_slots, "--asr", cascade["asr"], "--data", str(data), "--workers", "1",
                          "--synth-dir", str(tmp_path / "audio"), "--out", str(out)]) == 0
    capsys.readouterr()
    text = json.loads(out.read_text())["text"]
    # It tags "at five pm" (3 words, each B-x): conlleval reads the reference tags spread the same way
    # (O B-x I-x), so both scores agree: 1 right chunk, (x, boston), of 6 predicted and 2 gold.
    assert text["slot_value"] == pytest.approx({"precision": 100 / 6, "recall": 50.0, "f1": 25.0})
    assert text["slot_conlleval"]["f1"] == pytest.approx(25.0) and text["intent_acc"] == 50.0
