"""RNN transducer: the chunked loss against a brute-force sum over every alignment, chunked gradients, greedy and
beam search agreement, streaming == offline, and the LightningModule's checkpoint round trip."""

import itertools

import pytest
import torch

from modules.transducer import (
    Joiner,
    TransducerBeamDecoder,
    greedy_search,
    lattice_chunks,
    transducer_loss,
)

BLANK = 0


def brute_force_nll(logits: torch.Tensor, target: list[int]) -> float:
    """-log P(target) summed over every alignment: each path is T blanks and U tokens, a blank last, tokens
    emitted at lattice point (t, u) move up, blanks move right."""
    lp = logits.double().log_softmax(-1)  # (T, U + 1, V)
    big_t, big_u = lp.size(0), len(target)
    scores = []
    # Positions of the U tokens among the first T + U - 1 steps (the last step is the final blank).
    for token_steps in itertools.combinations(range(big_t + big_u - 1), big_u):
        t = u = 0
        score = 0.0
        for step in range(big_t + big_u - 1):
            if step in token_steps:
                score += float(lp[t, u, target[u]])
                u += 1
            else:
                score += float(lp[t, u, BLANK])
                t += 1
        scores.append(score + float(lp[big_t - 1, big_u, BLANK]))
    return -float(torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0))


def _random_lattice(seed=0, rows=((4, 2), (3, 3), (5, 1)), joiner_size=6, vocab=5):
    g = torch.Generator().manual_seed(seed)
    joiner = Joiner(encoder_size=joiner_size, prediction_size=joiner_size, joiner_size=joiner_size, vocab_size=vocab)
    t_max, u_max = max(t for t, _ in rows), max(u for _, u in rows)
    enc_p = torch.randn(len(rows), t_max, joiner_size, generator=g)
    pred_p = torch.randn(len(rows), u_max + 1, joiner_size, generator=g)
    targets = torch.randint(1, vocab, (len(rows), u_max), generator=g)
    t_len = torch.tensor([t for t, _ in rows])
    u_len = torch.tensor([u for _, u in rows])
    return joiner, enc_p, pred_p, targets, t_len, u_len


@pytest.mark.parametrize("max_positions", [1, 40, 10_000])
def test_chunked_loss_equals_brute_force_sum_over_alignments(max_positions):
    joiner, enc_p, pred_p, targets, t_len, u_len = _random_lattice()
    got = transducer_loss(joiner, enc_p, t_len, pred_p, targets, u_len, blank=BLANK, max_positions=max_positions)
    want = 0.0
    with torch.no_grad():
        for b in range(enc_p.size(0)):
            t, u = int(t_len[b]), int(u_len[b])
            logits = joiner(enc_p[b, :t, None], pred_p[b, None, : u + 1])
            want += brute_force_nll(logits, targets[b, :u].tolist())
    assert float(got.detach()) == pytest.approx(want, rel=1e-4)


def test_chunked_recomputed_gradients_equal_one_piece():
    joiner, enc_p, pred_p, targets, t_len, u_len = _random_lattice(seed=3)
    grads = []
    for max_positions, recompute in ((10_000, False), (20, True)):
        joiner.zero_grad()
        e, p = enc_p.clone().requires_grad_(), pred_p.clone().requires_grad_()
        transducer_loss(joiner, e, t_len, p, targets, u_len, blank=BLANK, max_positions=max_positions,
                        recompute=recompute).backward()
        grads.append([e.grad, p.grad, joiner.out.weight.grad.clone()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_lattice_chunks_stay_under_the_cap():
    t = [50, 40, 40, 30, 10, 500]
    u = [20, 25, 10, 5, 3, 100]
    groups = lattice_chunks(t, u, 3000)
    assert sorted(b for g in groups for b in g) == list(range(6))
    for g in groups:
        padded = len(g) * max(t[b] for b in g) * (max(u[b] for b in g) + 1)
        assert padded <= 3000 or len(g) == 1
    assert [5] in groups  # too big on its own: a group of one


def _tiny_recognizer(**kw):
    from data.tokenizers import CharTokenizer
    from pipelines.transducer import TransducerSpeechRecognizer

    torch.manual_seed(0)
    args = dict(vocab=CharTokenizer().to_dict(), n_mels=20, stack_frames=2, hidden_size=16, num_layers=2,
                dropout=0.0, spec_augment=False, pred_embed_size=8, pred_hidden_size=12, joiner_size=10,
                pred_dropout=0.0)
    args.update(kw)
    return TransducerSpeechRecognizer(**args).eval()


def test_greedy_with_one_symbol_per_frame_equals_beam_of_one():
    model = _tiny_recognizer()
    # Push the output layer towards emitting, so hypotheses are not all blank.
    with torch.no_grad():
        model.model.joiner.out.bias[model.tokenizer.blank] -= 1.0
    enc = torch.randn(3, 30, model.model.encoder.output_size)
    lengths = torch.tensor([30, 22, 9])
    greedy = greedy_search(model.model, enc, lengths, max_symbols=1)
    beam = TransducerBeamDecoder(tokens=model.tokenizer.tokens, blank=model.tokenizer.blank, beam_size=1)
    assert beam.decode(model.model, enc, lengths) == greedy
    assert sum(len(g) for g in greedy) > 5  # something was emitted


def test_beam_search_with_a_zero_weight_lm_equals_no_lm(tmp_path):
    from modules.ngram_lm import train_ngram

    model = _tiny_recognizer()
    with torch.no_grad():
        model.model.joiner.out.bias[model.tokenizer.blank] -= 1.0
    enc = torch.randn(2, 25, model.model.encoder.output_size)
    lengths = torch.tensor([25, 18])
    lm = train_ngram(["a cat sat", "the cat"], order=2)
    plain = TransducerBeamDecoder(tokens=model.tokenizer.tokens, blank=model.tokenizer.blank, beam_size=4)
    zero = TransducerBeamDecoder(tokens=model.tokenizer.tokens, blank=model.tokenizer.blank, beam_size=4, lm=lm,
                                 lm_weight=0.0)
    assert plain.decode(model.model, enc, lengths) == zero.decode(model.model, enc, lengths)


@pytest.mark.parametrize("normalize", ["none", "global", "utterance"])
def test_streaming_transducer_equals_offline_greedy(normalize):
    from pipelines.inference import make_streamer

    model = _tiny_recognizer(bidirectional=False, normalize=normalize)
    with torch.no_grad():
        model.model.joiner.out.bias[model.tokenizer.blank] -= 2.0
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(16000 + 1234, generator=g) * 0.1
    offline = model.transcribe_waveforms([wav])[0]
    streamer = make_streamer(model)
    partials = []
    for i in range(0, wav.numel(), 1700):
        streamer.accept(wav[i:i + 1700])
        partials.append(streamer.text)
    final = streamer.finish()
    assert final == offline and len(offline) > 3
    if normalize != "utterance":  # exact as the audio arrives: every partial is a prefix of the final text
        assert all(offline.startswith(p) for p in partials)
    beam = model.make_decoder(beam_size=3)
    assert streamer.decode_final(beam) == model.transcribe_waveforms([wav], decoder=beam)[0]


def test_bidirectional_transducer_refuses_to_stream():
    from pipelines.inference import InferenceError, make_streamer

    with pytest.raises(InferenceError, match="unidirectional"):
        make_streamer(_tiny_recognizer())


def test_checkpoint_round_trip_keeps_the_transducer(tmp_path):
    from pipelines.base import load_module
    from tests.fixtures.checkpoints import save_checkpoint

    model = _tiny_recognizer(joiner_size=14, ctc_weight=0.2)
    save_checkpoint(model, tmp_path / "m.ckpt")
    loaded = load_module(tmp_path / "m.ckpt")
    assert type(loaded).__name__ == "TransducerSpeechRecognizer"
    assert loaded.hparams.joiner_size == 14 and loaded.hparams.ctc_weight == 0.2
    wav = torch.randn(9000) * 0.1
    assert loaded.transcribe_waveforms([wav]) == model.transcribe_waveforms([wav])


@pytest.mark.parametrize("bad, match", [({"ctc_weight": 1.0}, "ctc_weight"), ({"max_symbols": 0}, "max_symbols"),
                                        ({"joiner_size": 0}, "joiner_size"), ({"max_lattice": 0}, "max_lattice")])
def test_bad_options_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        _tiny_recognizer(**bad)


def test_look_inside_a_transducer_shows_its_ctc_head_and_its_own_text():
    from pipelines.inference.inspect import inspect_ctc

    model = _tiny_recognizer()
    with torch.no_grad():
        model.model.joiner.out.bias[model.tokenizer.blank] -= 1.5
    wav = torch.randn(12000, generator=torch.Generator().manual_seed(2)) * 0.1
    out = inspect_ctc(model, wav)
    assert out["posteriors_from"] == "the transducer's auxiliary CTC head"
    assert out["text"] == model.transcribe_waveforms([wav])[0] and out["text"]
    assert len(out["posteriors"]) == out["frames"] > 0
