"""``rnnlab degrade``: degraded copies of an audiofolder split keep every row and degrade as asked."""

import json

import numpy as np
import pytest
import soundfile as sf

from pipelines.commands.degrade import main as degrade_main

RATE = 16000


def _corpus(root, n=3):
    split = root / "validation"
    split.mkdir(parents=True)
    t = np.arange(RATE) / RATE
    rows = []
    for i in range(n):
        sf.write(split / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * (1000 + 50 * i) * t)).astype("float32"), RATE)
        rows.append({"file_name": f"u{i}.wav", "text": f"utterance {i}", "speaker": "s"})
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _noise_corpus(root):
    split = root / "validation"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(split / f"n{i}.wav", (0.05 * rng.standard_normal(RATE)).astype("float32"), RATE)
    rows = [{"file_name": f"n{i}.wav", "label": "silence"} for i in range(2)]
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_copy_has_the_asked_snr_and_every_row(tmp_path, snr, capsys):
    rows = _corpus(tmp_path / "c")
    _noise_corpus(tmp_path / "noise")
    assert degrade_main([str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--kind", "noise", "--snr", str(snr),
                         "--noise-dir", str(tmp_path / "noise")]) == 0
    out_rows = [json.loads(x) for x in (tmp_path / "o/validation/metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in out_rows] == [r["text"] for r in rows]
    assert all(r["file_name"].endswith(".flac") for r in out_rows)
    for r, o in zip(rows, out_rows, strict=True):
        clean, _ = sf.read(tmp_path / "c/validation" / r["file_name"])
        noisy, sr = sf.read(tmp_path / "o/validation" / o["file_name"])
        assert sr == RATE and noisy.shape == clean.shape
        measured = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
        assert abs(measured - snr) < 0.2  # 16-bit rounding
    assert "3 files with noise at" in capsys.readouterr().out


def test_codec_is_band_limited_and_reverb_spreads(tmp_path):
    _corpus(tmp_path / "c", n=1)
    assert degrade_main([str(tmp_path / "c"), "--out", str(tmp_path / "tel"), "--kind", "codec"]) == 0
    tel, _ = sf.read(tmp_path / "tel/validation/u0.flac")
    spec = np.abs(np.fft.rfft(tel))
    assert spec[4500:].max() < 0.01 * spec.max()  # nothing above the 4 kHz of an 8 kHz channel
    assert degrade_main([str(tmp_path / "c"), "--out", str(tmp_path / "rev"), "--kind", "reverb", "--rt60", "0.3"]) == 0
    rev, _ = sf.read(tmp_path / "rev/validation/u0.flac")
    clean, _ = sf.read(tmp_path / "c/validation/u0.wav")
    assert not np.allclose(rev, clean, atol=1e-2)


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        degrade_main([str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--kind", "codec"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"rnnlab degrade: error: no {tmp_path / 'none/validation/metadata.jsonl'} " \
                                      "(an audiofolder split with metadata.jsonl)\n"
    _corpus(tmp_path / "c", n=1)
    with pytest.raises(SystemExit):
        degrade_main([str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--kind", "noise",
                      "--noise-dir", str(tmp_path / "nowhere")])
    assert "noise directory not found" in capsys.readouterr().err
