"""The sliding-window keyword spotter and the stream resampler: timing, thresholds, chunk-size independence."""

import re

import pytest
import torch
import torchaudio.functional as AF

from modules.streaming import stream_file_chunks
from pipelines.inference.keywords import Detection, KeywordSpotter
from pipelines.serve.streams import StreamResampler
from tests.unit.pipelines.serve.helpers import RATE, FakeKeywords, scene


def spot(spotter: KeywordSpotter, audio: torch.Tensor, chunk: int) -> list[Detection]:
    found = []
    for piece in stream_file_chunks(audio, chunk):
        found += spotter.accept(piece)
    return found + spotter.flush()


def test_windows_every_hop_with_the_refractory_time():
    fake = FakeKeywords("yes", 0.99)
    found = spot(KeywordSpotter(fake, rearm=False), torch.zeros(int(3.6 * RATE)), 3200)
    # First full window at 1.0 s, then every 0.25 s; a detection silences the next 1.0 s.
    assert [(d.label, d.time) for d in found] == [("yes", 1.0), ("yes", 2.0), ("yes", 3.0)]
    assert found[0].score == pytest.approx(0.99)
    assert sum(fake.calls) == 11 + 1  # windows ending at 1.0, 1.25, ..., 3.5 s, then flush() at 3.6 s
    slow = spot(KeywordSpotter(fake, rearm=False, refractory_s=1.6, hop_s=0.5), torch.zeros(4 * RATE), 8000)
    assert [d.time for d in slow] == [1.0, 3.0]


def test_a_held_label_fires_once_and_ignored_or_weak_labels_never():
    audio = torch.zeros(4 * RATE)
    assert [d.time for d in spot(KeywordSpotter(FakeKeywords("yes", 0.99)), audio, 4000)] == [1.0]
    assert spot(KeywordSpotter(FakeKeywords("silence", 0.99)), audio, 4000) == []
    assert spot(KeywordSpotter(FakeKeywords("unknown", 0.99)), audio, 4000) == []
    assert spot(KeywordSpotter(FakeKeywords("yes", 0.6)), audio, 4000) == []
    assert [d.label for d in spot(KeywordSpotter(FakeKeywords("yes", 0.6), threshold=0.5), audio, 4000)] == ["yes"]
    assert [d.label for d in spot(KeywordSpotter(FakeKeywords("silence", 0.99), ignore=()), audio, 4000)] == \
        ["silence"]


def test_chunk_size_does_not_change_the_detections_and_windows_are_batched():
    audio = torch.zeros(3 * RATE)
    one = FakeKeywords("no", 0.9)
    at_once = spot(KeywordSpotter(one, rearm=False), audio, audio.numel())
    assert one.calls == [9]  # the nine windows of one big chunk in one forward call (no flush: nothing after 3.0 s)
    sample_by_sample = spot(KeywordSpotter(FakeKeywords("no", 0.9), rearm=False), audio[: 2 * RATE], 1)
    assert [d.time for d in at_once] == [1.0, 2.0, 3.0]
    assert [d.time for d in sample_by_sample] == [1.0, 2.0]


def test_short_streams_are_classified_at_flush_and_reset_starts_over():
    fake = FakeKeywords("yes", 0.99)
    spotter = KeywordSpotter(fake)
    assert spotter.accept(torch.zeros(RATE // 2)) == []
    assert [(d.label, d.time) for d in spotter.flush()] == [("yes", 0.5)]
    assert spotter.flush() == []  # nothing new
    spotter.reset()
    assert spotter.seconds == 0 and [d.time for d in spot(spotter, torch.zeros(RATE), 800)] == [1.0]
    assert Detection("yes", 0.987654, 1.25).to_dict() == {"label": "yes", "score": 0.9877, "time": 1.25}


def test_the_windows_hold_the_right_audio():
    class Loudness(FakeKeywords):
        """Says "yes" when the window's mean is positive, else "silence"; records each window's length."""

        def forward(self, waveforms, lengths):
            self.calls.append(waveforms.size(1))
            yes = waveforms.mean(1) > 0
            logits = torch.full((waveforms.size(0), 4), -9.0)
            logits[yes, 0] = 9.0
            logits[~yes, 3] = 9.0
            return logits

    audio = torch.zeros(4 * RATE)
    audio[int(2.1 * RATE): int(2.2 * RATE)] = 1.0  # a click at 2.1-2.2 s: in windows ending 2.25 to 3.0 s
    model = Loudness()
    found = spot(KeywordSpotter(model, refractory_s=0.0, rearm=False), audio, 1000)
    assert [d.time for d in found] == [2.25, 2.5, 2.75, 3.0]
    assert set(model.calls) == {RATE}


def test_the_trained_tone_classifier_spots_its_words(models):
    audio = scene([(None, 1.0), ("yes", 0.5), (None, 1.5), ("no", 0.5), (None, 1.0)], seed=5)
    for chunk in (3200, 1001, audio.numel()):
        found = spot(KeywordSpotter(models["keywords"]), audio, chunk)
        assert [d.label for d in found] == ["yes", "no"], chunk
        assert 1.0 < found[0].time <= 2.5 and 3.0 < found[1].time <= 4.5
    quiet = scene([(None, 3.0)], seed=6)
    assert spot(KeywordSpotter(models["keywords"]), quiet, 3200) == []


def test_bad_spotter_settings_are_errors():
    for kw, words in (({"hop_s": 0}, "must be positive"), ({"threshold": 1.5}, "threshold must be in (0, 1]"),
                      ({"refractory_s": -1}, "refractory_s must be >= 0")):
        with pytest.raises(ValueError, match=re.escape(words)):
            KeywordSpotter(FakeKeywords(), **kw)


@pytest.mark.parametrize(("orig", "new"), [(48000, 16000), (44100, 16000), (22050, 16000), (8000, 16000),
                                           (16000, 8000), (16000, 16000)])
def test_the_stream_resampler_equals_resampling_the_whole_signal(orig, new):
    torch.manual_seed(0)
    x = torch.randn(2 * orig + 123)
    ref = AF.resample(x, orig, new) if orig != new else x
    for sizes in ([1, 7, 100, 999], [orig // 5], [x.numel()]):
        r = StreamResampler(orig, new)
        out, i, k = [], 0, 0
        while i < x.numel():
            n = sizes[k % len(sizes)]
            out.append(r.accept(x[i:i + n]))
            i, k = i + n, k + 1
        out.append(r.flush())
        y = torch.cat(out)
        assert y.shape == ref.shape and (y - ref).abs().max() < 1e-5, (orig, new, sizes)
