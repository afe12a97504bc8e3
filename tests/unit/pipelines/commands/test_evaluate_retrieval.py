"""``rnnlab evaluate-retrieval``: same-different AP (all pairs and cross-speaker) and time per pair beside MAP/P@k,
for every baseline, in the table and the JSON rows."""

import json

import pytest

from pipelines.commands.evaluate_retrieval import BASELINES, main
from tests.fixtures.word_audio import write_tone_words


@pytest.fixture
def two_speaker_words(tmp_path):
    """12 tone words (3 labels x 4), recorded alternately by speakers s0 and s1."""
    root = write_tone_words(tmp_path / "words", per_label={"test": 4})
    meta = root / "test" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text().splitlines()]
    meta.write_text("".join(json.dumps({**r, "speaker": f"s{r['index'] % 2}"}) + "\n" for r in rows))
    return root


def test_table_and_json_carry_same_different_ap_and_time_per_pair(two_speaker_words, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["--data", str(two_speaker_words), "--k", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| method | MAP | P@1 | AP | AP cross-speaker | queries | µs/pair | seconds |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == list(BASELINES) == ["mfcc-mean", "dtw", "dtw-cmvn", "mfcc-downsample"]
    for r in rows:
        assert r["pairs"] == 66 and r["positive_pairs"] == 3 * 6 and r["speakers"] == 2
        # 6 tokens per speaker: 36 cross-speaker pairs, 2 x 2 of them per label positive.
        assert r["cross_speaker_pairs"] == 36 and r["cross_speaker_positive_pairs"] == 12
        assert 0 < r["ap"] <= 1 and 0 < r["ap_cross_speaker"] <= 1 and r["us_per_pair"] > 0
        assert f"| {r['method']} | {r['map']:.3f} | {r['p@1']:.3f} | {r['ap']:.3f} | {r['ap_cross_speaker']:.3f} |" \
            in table
    # The tone words are separable: the literature's baselines rank every same-word pair first.
    assert {r["method"]: r["ap"] for r in rows}["dtw-cmvn"] == 1.0


def test_cross_speaker_ap_is_na_without_a_speaker_column(two_speaker_words, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["--data", str(two_speaker_words), "--baselines", "mfcc-downsample", "--speaker-column", "nope",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| n/a |" in printed and "AP cross-speaker n/a: no 'nope' column" in printed
    (row,) = json.loads(out.read_text())["rows"]
    assert row["ap_cross_speaker"] is None and row["speakers"] is None and row["cross_speaker_pairs"] is None
    assert row["ap"] == 1.0
    with pytest.raises(SystemExit, match="unknown baseline"):
        main(["--data", str(two_speaker_words), "--baselines", "dtw-cmvn,nope"])
