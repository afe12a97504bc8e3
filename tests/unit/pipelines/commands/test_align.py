"""``rnnlab align``: CTC forced alignment gives the word boundaries of a known path, and the command writes an
audiofolder of word tokens (rows pointing at wav files of their duration), skipping and naming bad rows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from modules.ctc_alignment import AlignmentError, align_words, min_frames, transcript_ids
from pipelines.commands.align import main as align_main

RATE = 16000
TOKENS = ["<blank>", " ", "a", "b"]
AUDIO = Path(__file__).resolve().parents[3] / "fixtures" / "audio"
ARCTIC_TEXT = "Gregson shoved back his chair and rose to his feet."


def _log_probs(path: str, p: float = 0.97) -> torch.Tensor:
    """``(T, V)`` log-probabilities whose best symbol per frame spells ``path`` (``_`` blank, ``|`` space)."""
    ids = [{"_": 0, "|": 1, "a": 2, "b": 3}[c] for c in path]
    probs = torch.full((len(ids), len(TOKENS)), (1 - p) / (len(TOKENS) - 1))
    probs[torch.arange(len(ids)), torch.tensor(ids)] = p
    return probs.log()


def test_words_span_their_characters_frames():
    # frame:  0 1 2 3 4 5 6 7 8 9
    #         _ a a b _ | b _ a _      "ab" = frames [1, 4), "ba" = [6, 9) (the blank inside it included)
    lp = _log_probs("_aab_|b_a_")
    words, chars = align_words(lp, "ab ba", TOKENS)
    assert [(w.text, w.start, w.end) for w in words] == [("ab", 1, 4), ("ba", 6, 9)]
    assert [(c.text, c.start, c.end) for c in chars] == [("a", 1, 3), ("b", 3, 4), (" ", 5, 6), ("b", 6, 7),
                                                         ("a", 8, 9)]
    assert [w.gap for w in words] == [0, 1]  # frames between two characters of the word
    assert words[0].score == pytest.approx(math.log(0.97), abs=1e-5)  # the path's own frames, all at p = 0.97
    assert words[1].score == pytest.approx(math.log(0.97), abs=1e-5)


def test_tail_takes_following_blanks_but_never_the_next_symbol():
    lp = _log_probs("_aab___|b_a___")
    words, _ = align_words(lp, "ab ba", TOKENS, tail=2)
    assert [(w.start, w.end) for w in words] == [(1, 6), (8, 13)]
    words, _ = align_words(lp, "ab ba", TOKENS, tail=5)
    assert [(w.start, w.end) for w in words] == [(1, 7), (8, 14)]  # stopped by "|" at 7 and by the last frame


def test_repeated_letters_need_a_blank_and_too_few_frames_is_one_line():
    assert min_frames(transcript_ids(["abba"], TOKENS)[0]) == 5
    words, chars = align_words(_log_probs("ab_ba"), "abba", TOKENS)
    assert [(c.text, c.start, c.end) for c in chars] == [("a", 0, 1), ("b", 1, 2), ("b", 3, 4), ("a", 4, 5)]
    with pytest.raises(AlignmentError, match="needs at least 5 frames, the audio gives 4"):
        align_words(_log_probs("abba"), "abba", TOKENS)
    with pytest.raises(AlignmentError, match="outside the model's vocabulary: 'c'"):
        align_words(_log_probs("abba"), "abc", TOKENS)


def _tiny_ctc(stack_frames: int = 3):
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer

    torch.manual_seed(0)
    return CTCSpeechRecognizer(vocab=CharTokenizer(" ab").to_dict(), n_mels=16, stack_frames=stack_frames,
                               hidden_size=8, num_layers=1).eval()


def test_frames_become_seconds_with_the_stacked_hop():
    from pipelines.inference.align import WordAligner

    aligner = WordAligner(_tiny_ctc(stack_frames=3))  # 10 ms hop x 3 stacked = 480 samples per frame
    assert aligner.hop == 480 and aligner.tokens == TOKENS
    words = aligner.align(_log_probs("_aab_|b_a_"), "ab ba")
    assert [(w.word, w.start_sample, w.end_sample) for w in words] == [("ab", 480, 1920), ("ba", 2880, 4320)]
    assert [(w.start, w.end) for w in words] == [(0.03, 0.12), (0.18, 0.27)]
    assert [w.gap for w in words] == [0.0, 0.03]
    tailed = aligner.align(_log_probs("_aab_|b_a_"), "ab ba", num_samples=4500, tail=0.06)  # 2 frames
    assert [(w.start_sample, w.end_sample) for w in tailed] == [(480, 2400), (2880, 4500)]  # cut at the audio end


def test_only_character_ctc_models_align():
    from pipelines.inference import InferenceError
    from pipelines.inference.align import WordAligner

    with pytest.raises(InferenceError, match="needs a CTC speech model"):
        WordAligner(torch.nn.Linear(2, 2))


def test_tokens_kept_are_long_enough_words_without_a_pause_inside(tmp_path):
    from pipelines.commands.align import Writer
    from pipelines.inference.align import AlignedWord

    wav = torch.zeros(RATE)
    words = [AlignedWord("short", 0.0, 0.45, 0, 7200, -0.1),  # too short
             AlignedWord("word", 0.0, 0.6, 0, 9600, -0.1),  # too few letters
             AlignedWord("paused", 0.0, 0.9, 0, 14400, -0.1, gap=0.6),  # a pause inside
             AlignedWord("kept's", 0.1, 0.6, 1600, 9600, -0.25, gap=0.5)]
    writer = Writer(tmp_path, RATE, min_duration=0.5, min_letters=5, max_gap=0.5)
    assert writer.add("c", "dir/u.flac", "s", wav, words) == 1
    assert (writer.aligned_words, writer.gapped) == (4, 1)
    assert writer.rows == [{"file_name": "c/dir_u_003_kept_s.wav", "word": "kept's", "speaker": "s", "corpus": "c",
                            "source": "dir/u.flac", "start": 0.1, "end": 0.6, "duration": 0.5, "score": -0.25}]
    assert sf.info(tmp_path / "c/dir_u_003_kept_s.wav").frames == 8000


def _write_corpus(root: Path, rows: list[dict], audio: dict[str, bytes | torch.Tensor]) -> Path:
    split = root / "validation"
    split.mkdir(parents=True)
    for name, content in audio.items():
        if isinstance(content, bytes):
            (split / name).write_bytes(content)
        else:
            sf.write(split / name, content.numpy(), RATE)
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> str:
    from data.text import CharTokenizer
    from pipelines.ctc import CTCSpeechRecognizer
    from tests.fixtures.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=16, stack_frames=2, hidden_size=8,
                                num_layers=1)
    return save_checkpoint(model, tmp_path_factory.mktemp("ctc") / "ctc.ckpt")


def _rows(meta: Path) -> list[dict]:
    return [json.loads(line) for line in meta.read_text().splitlines()]


def test_every_word_of_several_corpora_is_written_with_its_speaker(tiny_ckpt, tmp_path, capsys):
    from tests.unit.pipelines.inference.export_helpers import speechlike

    a = _write_corpus(tmp_path / "a", [{"file_name": "u1.wav", "text": "Hello, world!", "speaker": "s1"},
                                       {"file_name": "u2.wav", "text": "It's 2 o'clock", "speaker": "s2"}],
                      {"u1.wav": speechlike(1.0, 1), "u2.wav": speechlike(1.2, 2)})
    b = _write_corpus(tmp_path / "b", [{"file_name": "x/v1.wav", "text": "good day"}], {})
    (b / "validation" / "x").mkdir()
    sf.write(b / "validation/x/v1.wav", speechlike(0.8, 3).numpy(), RATE)
    out = tmp_path / "words"
    argv = ["--ckpt", tiny_ckpt, "--data", f"a={a}", str(b), "--out", str(out), "--min-duration", "0",
            "--min-letters", "1", "--tail", "0"]
    assert align_main(argv) == 0
    rows = _rows(out / "validation" / "metadata.jsonl")
    assert [(r["word"], r["speaker"], r["corpus"], r["source"]) for r in rows] == [
        ("hello", "s1", "a", "u1.wav"), ("world", "s1", "a", "u1.wav"), ("it's", "s2", "a", "u2.wav"),
        ("two", "s2", "a", "u2.wav"), ("o'clock", "s2", "a", "u2.wav"), ("good", "b", "b", "x/v1.wav"),
        ("day", "b", "b", "x/v1.wav")]
    for r in rows:
        info = sf.info(out / "validation" / r["file_name"])
        assert info.samplerate == RATE and info.subtype == "PCM_16"
        assert abs(info.frames - (r["end"] - r["start"]) * RATE) < 1
        assert r["end"] - r["start"] == pytest.approx(r["duration"], abs=1e-6)
    assert "7 word tokens kept of 7 aligned words" in capsys.readouterr().out
    # A second run into the same folder is refused unless asked; with --overwrite the folder is replaced.
    with pytest.raises(SystemExit) as e:
        align_main(argv)
    assert e.value.code == 2
    assert align_main([*argv[:5], "--out", str(out), "--min-duration", "0", "--overwrite"]) == 0
    assert [r["word"] for r in _rows(out / "validation" / "metadata.jsonl")] == ["hello", "world", "o'clock"]
    assert sorted(p.name for p in (out / "validation" / "a").iterdir()) == [
        "u1_000_hello.wav", "u1_001_world.wav", "u2_002_o_clock.wav"]


def test_output_never_replaces_an_input_corpus(tiny_ckpt, tmp_path, capsys):
    from tests.unit.pipelines.inference.export_helpers import speechlike

    a = _write_corpus(tmp_path / "a", [{"file_name": "u1.wav", "text": "hello"}], {"u1.wav": speechlike(1.0, 1)})
    with pytest.raises(SystemExit) as e:
        align_main(["--ckpt", tiny_ckpt, "--data", str(a), "--out", str(a), "--overwrite"])
    assert e.value.code == 2
    assert "would overwrite an input corpus" in capsys.readouterr().err
    assert (a / "validation" / "u1.wav").is_file()


def _english():
    from pipelines.inference.shipped import available

    if "english" not in available():
        pytest.skip("shipped model 'english' is not installed")
    return "english"


def test_english_cuts_real_words_and_names_bad_rows(tmp_path, capsys):
    ckpt = _english()
    split = tmp_path / "c" / "validation"
    split.mkdir(parents=True)
    shutil.copy(AUDIO / "arctic_a0012.ogg", split / "a0012.ogg")
    sf.write(split / "short.wav", torch.zeros(RATE // 5).numpy(), RATE)  # 0.2 s: 6 frames
    (split / "notes.wav").write_text("not audio\n")
    rows = [{"file_name": "a0012.ogg", "text": ARCTIC_TEXT},
            {"file_name": "notes.wav", "text": "a text file"},
            {"file_name": "short.wav", "text": "far too many words for a fifth of a second"}]
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "words"
    code = align_main(["--ckpt", ckpt, "--data", f"arctic={tmp_path / 'c'}", "--out", str(out),
                       "--min-duration", "0.25", "--min-letters", "4"])
    captured = capsys.readouterr()
    assert code == 1
    meta = split / "metadata.jsonl"
    warnings = [ln for ln in captured.err.splitlines() if "warning" in ln]
    assert len(warnings) == 2, captured.err
    assert f"skipped {meta} line 2 (notes.wav): " in warnings[0] and "not audio" in warnings[0]
    assert f"skipped {meta} line 3 (short.wav): transcript needs at least" in warnings[1]
    assert "3 utterances read, 1 aligned, 2 skipped (1 unreadable audio, 1 too short for its transcript)" in \
        captured.out
    kept = _rows(out / "validation" / "metadata.jsonl")
    words = ARCTIC_TEXT.lower().rstrip(".").split()
    assert kept and {r["word"] for r in kept} <= {w for w in words if len(w) >= 4}
    duration = sf.info(split / "a0012.ogg").duration
    for r in kept:
        assert r["speaker"] == "arctic" and r["source"] == "a0012.ogg"
        assert 0 <= r["start"] < r["end"] <= duration and r["end"] - r["start"] >= 0.25 and r["score"] <= 0
        wav, rate = sf.read(out / "validation" / r["file_name"])
        assert rate == RATE and abs(len(wav) - (r["end"] - r["start"]) * RATE) < 1
    assert [r["start"] for r in kept] == sorted(r["start"] for r in kept)
