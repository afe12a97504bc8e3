"""Fuzzing the data paths (hypothesis): whatever a corpus contains -- random bytes named .wav, truncated WAV/FLAC,
zero-length or single-sample audio, NaN/inf samples, extreme amplitudes, empty or huge transcripts, mixed
scripts, control characters, wrong column types -- each row ends as a usable utterance, a counted skip whose
message names the row, or a one-line `DataError`; never a crash deep in torch and never non-finite features."""

import io
import logging
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.audio import load_audio
from data.errors import DataError
from data.slots import parse_rows
from data.speech import SkipCounter, SpeechDataset, collate_speech, index_rows
from data.text import CharTokenizer
from modules.frontend import LogMelFrontend

SR = 16000
# RNNLAB_FUZZ_EXAMPLES=1000 for a longer search than the test suite's.
FUZZ = settings(max_examples=int(os.environ.get("RNNLAB_FUZZ_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="rnnlab-fuzz-"))
_FRONTEND = LogMelFrontend(sample_rate=SR, n_mels=40, spec_augment=False).eval()


class _Recorder(SkipCounter):
    def __init__(self):
        super().__init__("fuzz")
        self.messages = []

    def skip(self, reason, message):
        self.messages.append(message)
        super().skip(reason, message)


def _encode(samples: np.ndarray, fmt: str, subtype: str, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav(samples, subtype="FLOAT", sr=SR):
    return _encode(np.asarray(samples, dtype=np.float32 if subtype == "FLOAT" else np.float64), "WAV", subtype, sr)


special = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 3e38, 1e-38, 0.0, 1.0, -1.0])
signal = st.lists(st.one_of(st.floats(-1, 1, width=32), special), min_size=0, max_size=3000)


@st.composite
def audio_bytes(draw):
    kind = draw(st.sampled_from(["random", "truncated", "samples", "stereo"]))
    if kind == "random":
        return draw(st.binary(max_size=4000))
    if kind == "truncated":
        n = draw(st.integers(1, 4000))
        fmt, subtype = draw(st.sampled_from([("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")]))
        sr = draw(st.sampled_from([8000, 16000, 22050, 44100]))
        full = _encode(np.random.default_rng(n).uniform(-0.5, 0.5, n), fmt, subtype, sr)
        return full[: draw(st.integers(0, len(full) - 1))]
    if kind == "stereo":
        n = draw(st.integers(0, 3000))
        return _encode(np.random.default_rng(n).uniform(-1, 1, (n, 2)), "WAV", "PCM_16",
                       draw(st.sampled_from([8000, 44100])))
    return _wav(draw(signal))


def _row_path(data: bytes, suffix: str) -> str:
    path = _DIR / f"f{abs(hash(data)) % 10**12}{suffix}"
    path.write_bytes(data)
    return str(path)


@FUZZ
@given(data=audio_bytes(), suffix=st.sampled_from([".wav", ".flac", ".ogg"]))
def test_any_audio_file_is_used_or_skipped_by_name(data, suffix):
    path = _row_path(data, suffix)
    skips = _Recorder()
    tok = CharTokenizer()
    utts = index_rows([{"audio": path, "text": "hello world"}], where="fuzz", audio_column="audio",
                               text_column="text", id_column=None, duration_column=None, base_dir=None,
                               normalizer="asr_chars", tokenizer=tok, min_duration=0.0, max_duration=30.0,
                               validate=True, skips=skips)
    if not len(utts):
        assert skips.total == 1 and path in skips.messages[0] and "row 1" in skips.messages[0]
        return
    ds = SpeechDataset([utts], tok, sample_rate=SR, skips=skips)
    item = ds[0]
    if item is None:  # the header was fine, decoding was not: counted, named
        assert skips.total == 1 and path in skips.messages[0]
        assert ds[0] is None and skips.total == 1  # remembered, not retried and re-counted
        return
    wav = item["waveform"]
    assert wav.dtype == torch.float32 and wav.dim() == 1 and wav.numel() > 0 and torch.isfinite(wav).all()
    batch = collate_speech([item])
    with torch.no_grad():
        feats, lengths = _FRONTEND(batch["waveforms"], batch["lengths"])
    assert torch.isfinite(feats).all() and int(lengths[0]) >= 1


@FUZZ
@given(samples=signal)
def test_decoder_rejects_non_finite_and_absurd_samples_with_the_file_name(samples):
    path = _row_path(_wav(samples), ".wav")
    from data.audio import AudioRef

    arr = np.asarray(samples, dtype=np.float32)
    try:
        wav = load_audio(AudioRef(path=path), SR)
    except DataError as e:
        assert path in str(e) and "\n" not in str(e)
        assert arr.size == 0 or not np.isfinite(arr).all() or np.abs(arr).max() > 1e3
        return
    assert arr.size > 0 and np.isfinite(arr).all() and np.abs(arr).max() <= 1e3
    assert torch.isfinite(wav).all()


_odd_text = st.one_of(
    st.text(max_size=200),  # every Unicode category: control characters, mixed scripts, combining marks
    st.text(alphabet=st.sampled_from("abc \u00e9\u0416\u4e2d\u0627\u200b\x00\x07\t\n'-"), max_size=50),
    st.just(""), st.just("a" * 20000),
    st.none(), st.integers(), st.floats(), st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(), st.text()),
)


@FUZZ
@given(text=_odd_text, audio=st.one_of(st.just("good"), st.none(), st.integers(), st.just({}), st.text(max_size=20)))
def test_any_transcript_or_column_type_is_used_or_skipped_by_row(text, audio):
    good = _row_path(_wav(np.zeros(1600) + 0.1), ".wav")
    skips = _Recorder()
    tok = CharTokenizer()
    row = {"audio": good if audio == "good" else audio, "text": text}
    try:
        utts = index_rows([row], where="fuzz.jsonl", audio_column="audio", text_column="text", id_column=None,
                                   duration_column=None, base_dir=str(_DIR), normalizer="asr_chars", tokenizer=tok,
                                   min_duration=0.05, max_duration=30.0, validate=True, skips=skips)
    except DataError as e:
        assert "fuzz.jsonl" in str(e) or "row 1" in str(e)
        return
    if not len(utts):
        assert skips.total == 1 and "row 1" in skips.messages[0]
        return
    text = utts.utterance(0).text
    ids = tok.encode(text)
    assert ids and all(0 < i < len(tok) for i in ids)
    assert tok.decode(ids) == text


_cell = st.one_of(st.text(max_size=30), st.lists(st.text(max_size=8), max_size=6), st.none(), st.integers(),
                  st.floats(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"tokens": _cell, "slots": _cell, "intent": _cell}), min_size=1,
                     max_size=5))
def test_slot_rows_parse_or_fail_with_row_and_field(rows):
    try:
        examples = parse_rows(rows, where="train.jsonl", tokens_column="tokens", tags_column="slots",
                              intent_column="intent", lowercase=True)
    except DataError as e:
        msg = str(e)
        assert msg.startswith("train.jsonl line ") and "\n" not in msg
        return
    assert len(examples) == len(rows)
    for ex in examples:
        assert ex.words and all(isinstance(w, str) for w in ex.words)
        assert ex.tags is None or len(ex.tags) == len(ex.words)


@pytest.fixture(autouse=True)
def _quiet_skip_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="data.speech")
