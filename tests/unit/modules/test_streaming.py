"""Streaming greedy CTC transcription: chunk by chunk equals offline (batch of one), log-probs and text."""


import pytest
import soundfile as sf
import torch

from data.text import CharTokenizer
from modules.streaming import StreamingTranscriber, stream_file_chunks
from pipelines.commands.transcribe import main as transcribe_main
from pipelines.ctc import CTCSpeechRecognizer
from tests.fixtures.checkpoints import save_checkpoint
from tests.unit.pipelines.serve.helpers import speechlike

RATE = 16000
TOL = 1e-4


def tiny_model(*, normalize: str = "utterance", bidirectional: bool = False, stack_frames: int = 3, cell="lstm"):
    """Random weights; the output layer is scaled up so that greedy decoding emits many different tokens."""
    torch.manual_seed(0)
    model = CTCSpeechRecognizer(vocab=CharTokenizer().to_dict(), n_mels=40, stack_frames=stack_frames,
                                hidden_size=32, num_layers=2, cell=cell, bidirectional=bidirectional, dropout=0.2,
                                spec_augment=True, normalize="global" if normalize == "global" else "utterance")
    model.model.frontend.normalize = normalize
    if normalize == "global":  # statistics as training would leave them: not zero mean / unit variance
        fe = model.model.frontend
        fe.feat_mean.copy_(torch.linspace(-8.0, -2.0, 40))
        fe.feat_var.copy_(torch.linspace(2.0, 6.0, 40))
    with torch.no_grad():
        model.model.head.proj.weight.mul_(10.0)
    return model.eval()


def offline(model, wav):
    with torch.no_grad():
        lp, n = model(wav[None], torch.tensor([wav.numel()]))
    return lp[0, : n[0]], model.decode_greedy(lp, n)[0]


def stream(model, wav, chunk):
    st = StreamingTranscriber(model)
    pieces = [st.accept(c) for c in stream_file_chunks(wav, chunk)]
    before_finish = (st.log_probs.clone(), st.text, "".join(pieces))
    return st, before_finish, st.finish()


CLIPS = [(0.3, 1), (1.0, 2), (2.7, 3)]
CHUNKS = [int(0.037 * RATE), int(0.2 * RATE), 1001]  # 37 ms, 200 ms, an odd size; none a multiple of the hop


@pytest.mark.parametrize("normalize", ["none", "global", "utterance"])
def test_streaming_equals_offline_for_lengths_and_chunk_sizes(normalize):
    model = tiny_model(normalize=normalize)
    for seconds, seed in CLIPS:
        wav = speechlike(seconds, seed)
        ref_lp, ref_text = offline(model, wav)
        assert ref_text  # the check is not vacuous
        for chunk in CHUNKS:
            st, (partial_lp, partial_text, appended), final = stream(model, wav, chunk)
            assert st.log_probs.shape == ref_lp.shape
            assert (st.log_probs - ref_lp).abs().max() <= TOL
            assert final == ref_text == st.text
            assert appended == partial_text
            if normalize in ("none", "global"):
                # Exact as it goes: what was produced before finish() is already the offline prefix.
                assert st.exact_partials and partial_lp.size(0) >= ref_lp.size(0) - 2
                assert (partial_lp - ref_lp[: partial_lp.size(0)]).abs().max() <= TOL
                assert ref_text.startswith(partial_text)


def test_single_samples_on_a_very_short_clip_and_stacking_remainder():
    for stack in (1, 2, 3):
        model = tiny_model(normalize="none", stack_frames=stack)
        wav = speechlike(0.05, 7)  # 800 samples: 6 frames, not a multiple of 4
        ref_lp, ref_text = offline(model, wav)
        st, _, final = stream(model, wav, 1)
        assert (st.log_probs - ref_lp).abs().max() <= TOL and final == ref_text
    model = tiny_model()
    wav = speechlike(0.02, 8)  # 320 samples, just over the 257 the reflect padding needs
    ref_lp, ref_text = offline(model, wav)
    st, _, final = stream(model, wav, 1)
    assert (st.log_probs - ref_lp).abs().max() <= TOL and final == ref_text


def test_gru_and_reuse_after_reset():
    model = tiny_model(normalize="none", cell="gru")
    st = StreamingTranscriber(model)
    for seconds, seed in CLIPS[:2]:
        wav = speechlike(seconds, seed)
        ref_lp, ref_text = offline(model, wav)
        st.reset()
        for c in stream_file_chunks(wav, 700):
            st.accept(c)
        assert st.finish() == ref_text and (st.log_probs - ref_lp).abs().max() <= TOL
    with pytest.raises(RuntimeError, match="reset"):
        st.accept(torch.zeros(10))


def test_too_short_audio_and_bidirectional_model_are_errors():
    st = StreamingTranscriber(tiny_model())
    st.accept(torch.zeros(200))
    with pytest.raises(ValueError, match="too short"):
        st.finish()
    with pytest.raises(ValueError, match="bidirectional=false"):
        StreamingTranscriber(tiny_model(bidirectional=True))


def test_transcribe_stream_prints_the_offline_line(tmp_path, capsys):
    ckpt = save_checkpoint(tiny_model(), tmp_path / "uni.ckpt")
    files = []
    for seconds, seed in CLIPS[:2]:
        files.append(tmp_path / f"clip{seed}.wav")
        sf.write(files[-1], speechlike(seconds, seed).numpy(), RATE, subtype="FLOAT")
    assert transcribe_main(["--ckpt", ckpt, *map(str, files), "--batch-size", "1"]) == 0
    offline_out = capsys.readouterr().out
    assert transcribe_main(["--ckpt", ckpt, *map(str, files), "--stream", "--chunk-ms", "37"]) == 0
    captured = capsys.readouterr()
    assert captured.out == offline_out
    assert "[partial]" in captured.err and "RTF" in captured.err


def test_transcribe_stream_with_a_bidirectional_model_is_a_one_line_error(tmp_path, capsys):
    ckpt = save_checkpoint(tiny_model(bidirectional=True), tmp_path / "bi.ckpt")
    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(0.3, 1).numpy(), RATE)
    with pytest.raises(SystemExit) as exc:
        transcribe_main(["--ckpt", ckpt, str(wav), "--stream"])
    assert exc.value.code == 2  # an error the user must fix
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("rnnlab transcribe: error:")
    assert "bidirectional=false" in message


def test_transcribe_stream_with_an_attention_model_is_a_one_line_error(tmp_path, capsys):
    from pipelines.seq2seq import LASRecognizer

    ckpt = save_checkpoint(LASRecognizer(vocab=CharTokenizer().to_dict(), frontend={"n_mels": 16},
                                         encoder={"hidden_size": 8, "num_layers": 2, "pyramid_layers": 1},
                                         speller_hidden=8, embed_size=8, attention_size=8),
                           tmp_path / "las.ckpt")
    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(0.3, 1).numpy(), RATE)
    with pytest.raises(SystemExit) as exc:
        transcribe_main(["--ckpt", ckpt, str(wav), "--stream"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"rnnlab transcribe: error: --stream needs a CTC or transducer checkpoint; {ckpt} is a " \
                                      "LASRecognizer checkpoint\n"
