"""Tests for modules.encoders.RecurrentEncoder: fused vs reference, length handling, pyramid, projection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.encoders import RecurrentEncoder, pyramid_downsample
from modules.recurrent import ReferenceRNN, copy_to_fused, count_parameters, lengths_to_mask, load_from_fused

IN, HID = 3, 4


def _encoder(**kwargs) -> RecurrentEncoder:
    args = {"input_size": IN, "hidden_size": HID, "num_layers": 2, "bidirectional": True, **kwargs}
    return RecurrentEncoder(**args)


PADDING_CASES = [
    {"cell": cell, "implementation": "fused", "length_handling": handling}
    for cell in ("lstm", "gru", "rnn")
    for handling in ("reverse", "packed")
] + [
    {
        "cell": "lstm",
        "implementation": "fused",
        "length_handling": "reverse",
        "pyramid_layers": 1,
        "num_layers": 3,
    },
    {"cell": "gru", "implementation": "fused", "length_handling": "packed", "projection_size": 5},
    {"cell": "elman", "implementation": "reference"},
    {"cell": "jordan", "implementation": "reference"},
    {"cell": "lstm", "implementation": "reference", "peephole": True, "pyramid_layers": 1},
    {"cell": "gru", "implementation": "reference", "projection_size": 5},
]


def _case_id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


@pytest.mark.parametrize("case", PADDING_CASES, ids=[_case_id(c) for c in PADDING_CASES])
def test_padding_invariance(case):
    torch.manual_seed(0)
    encoder = _encoder(**case).eval()
    x = torch.randn(3, 7, IN)  # padded steps hold garbage on purpose
    lengths = torch.tensor([7, 2, 5])
    out, out_lengths = encoder(x, lengths)
    assert out.shape == (3, out.size(1), encoder.output_size)
    mask = lengths_to_mask(out_lengths, out.size(1))
    assert torch.all(out[~mask] == 0)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_lengths = encoder(x[b : b + 1, :n], lengths[b : b + 1])
        assert alone_lengths.item() == out_lengths[b].item()
        m = alone_lengths.item()
        torch.testing.assert_close(out[b : b + 1, :m], alone[:, :m], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pyramid_layers", [0, 1])
def test_reverse_equals_packed_equals_reference_float64(cell, pyramid_layers):
    torch.manual_seed(1)
    kwargs = {"cell": cell, "num_layers": 2, "pyramid_layers": pyramid_layers, "projection_size": 5}
    reverse = _encoder(**kwargs, length_handling="reverse").double()
    packed = _encoder(**kwargs, length_handling="packed").double()
    reference = _encoder(**kwargs, implementation="reference").double()
    packed.load_state_dict(reverse.state_dict())
    load_from_fused(reference, reverse)
    reference.projection.load_state_dict(reverse.projection.state_dict())

    x = torch.randn(3, 6, IN, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 5])
    weight = None
    outputs, grads = [], []
    for encoder in (reverse, packed, reference):
        xi = x.clone().requires_grad_(True)
        out, out_lengths = encoder(xi, lengths)
        if weight is None:
            weight = torch.randn_like(out)
        (out * weight).sum().backward()
        outputs.append((out, out_lengths))
        grads.append(xi.grad)
    for (out, out_lengths), grad in zip(outputs[1:], grads[1:], strict=True):
        assert torch.equal(out_lengths, outputs[0][1])
        torch.testing.assert_close(out, outputs[0][0], atol=1e-10, rtol=0)
        torch.testing.assert_close(grad, grads[0], atol=1e-10, rtol=0)
    for p_rev, p_packed in zip(reverse.parameters(), packed.parameters(), strict=True):
        torch.testing.assert_close(p_rev.grad, p_packed.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("cell", "torch_class"), [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)])
def test_fused_encoder_matches_multilayer_torch_and_reference_rnn(cell, torch_class):
    torch.manual_seed(2)
    encoder = _encoder(cell=cell).double().eval()
    torch_rnn = torch_class(IN, HID, num_layers=2, bidirectional=True, batch_first=True).double()
    copy_to_fused(encoder, torch_rnn)  # encoder acts as a reference-style source here
    stack = ReferenceRNN(
        cell="elman" if cell == "rnn" else cell,
        input_size=IN,
        hidden_size=HID,
        num_layers=2,
        bidirectional=True,
    ).double()
    load_from_fused(stack, encoder)
    x = torch.randn(2, 5, IN, dtype=torch.float64)
    lengths = torch.tensor([5, 5])
    out, _ = encoder(x, lengths)
    torch.testing.assert_close(out, torch_rnn(x)[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(out, stack(x, lengths)[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_parameter_counts_are_gate_multiples(implementation):
    sizes = {"input_size": 5, "hidden_size": 6, "num_layers": 3, "implementation": implementation}
    rnn = count_parameters(RecurrentEncoder(cell="rnn", **sizes))
    lstm = count_parameters(RecurrentEncoder(cell="lstm", **sizes))
    gru = count_parameters(RecurrentEncoder(cell="gru", **sizes))
    # per layer-direction H*(I + H + 2); layer inputs 5, 12, 12; two directions
    assert rnn == 2 * 6 * ((5 + 6 + 2) + 2 * (12 + 6 + 2))
    assert lstm == 4 * rnn
    assert gru == 3 * rnn
    assert count_parameters(RecurrentEncoder(cell="elman", **sizes)) == rnn


def test_implementations_have_equal_parameter_counts():
    for cell in ("lstm", "gru", "rnn"):
        fused = _encoder(cell=cell, pyramid_layers=1, projection_size=3)
        reference = _encoder(cell=cell, pyramid_layers=1, projection_size=3, implementation="reference")
        assert count_parameters(fused) == count_parameters(reference)


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_pyramid_halves_lengths_and_time(implementation):
    torch.manual_seed(3)
    encoder = _encoder(num_layers=2, pyramid_layers=1, implementation=implementation)
    out, out_lengths = encoder(torch.randn(2, 7, IN), torch.tensor([7, 4]))
    assert out_lengths.tolist() == [4, 2]
    assert out_lengths.dtype == torch.long
    assert out.shape == (2, 4, 2 * HID)
    assert torch.all(out[1, 2:] == 0)
    deeper = _encoder(num_layers=3, pyramid_layers=2, implementation=implementation)
    out, out_lengths = deeper(torch.randn(2, 7, IN), torch.tensor([7, 4]))
    assert out_lengths.tolist() == [2, 1]
    assert out.shape == (2, 2, 2 * HID)
    # layers after a pyramid boundary see 2 * D * H input features
    name = "weight_ih_l0" if implementation == "fused" else "weight_ih"
    widths = [getattr(row[0], name).shape[1] for row in deeper.layer_direction_units()]
    assert widths == [IN, 4 * HID, 4 * HID]


def test_pyramid_downsample_pairs_frames():
    x = torch.arange(10.0).reshape(1, 5, 2)
    out, lengths = pyramid_downsample(x, torch.tensor([5]))
    assert lengths.tolist() == [3]
    assert out.tolist() == [[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 0.0, 0.0]]]


def test_output_size_and_projection():
    assert _encoder().output_size == 2 * HID
    assert _encoder(bidirectional=False).output_size == HID
    encoder = _encoder(projection_size=5)
    assert encoder.output_size == 5
    out, _ = encoder(torch.randn(2, 4, IN), torch.tensor([4, 1]))
    assert out.shape == (2, 4, 5)
    assert torch.all(out[1, 1:] == 0)


def test_defaults():
    encoder = RecurrentEncoder(input_size=IN)
    assert (encoder.hidden_size, encoder.num_layers, encoder.cell) == (256, 2, "lstm")
    assert (
        encoder.bidirectional and encoder.implementation == "fused" and encoder.length_handling == "reverse"
    )
    assert isinstance(encoder.layer_direction_units()[0][0], nn.LSTM)
    assert _encoder(cell="elman").cell == "elman"
    assert isinstance(_encoder(cell="rnn").layer_direction_units()[0][1], nn.RNN)


def test_reversing_input_changes_output_unidirectional():
    torch.manual_seed(4)
    for cell in ("lstm", "gru", "rnn"):
        encoder = _encoder(cell=cell, bidirectional=False)
        x = torch.randn(2, 5, IN)
        lengths = torch.tensor([5, 5])
        assert not torch.allclose(
            encoder(x, lengths)[0][:, -1], encoder(x.flip(1), lengths)[0][:, -1], atol=1e-4
        )


def test_dropout_only_in_training():
    torch.manual_seed(5)
    encoder = _encoder(dropout=0.5)
    x, lengths = torch.randn(2, 5, IN), torch.tensor([5, 3])
    encoder.eval()
    a, _ = encoder(x, lengths)
    torch.testing.assert_close(a, encoder(x, lengths)[0], atol=0, rtol=0)
    encoder.train()
    b, _ = encoder(x, lengths)
    assert not torch.allclose(a, b)
    assert torch.all(b[1, 3:] == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "lstn"}, r"cell must be one of \['lstm', 'gru', 'rnn', 'elman', 'jordan'\], found 'lstn'"),
        ({"cell": "gru", "peephole": True, "implementation": "reference"}, "peephole=True needs cell='lstm'"),
        ({"cell": "jordan"}, "implementation='reference'"),
        ({"cell": "lstm", "peephole": True}, "implementation='reference'"),
        ({"implementation": "cudnn"}, r"implementation must be one of \['fused', 'reference'\]"),
        ({"length_handling": "sorted"}, r"length_handling must be one of \['reverse', 'packed'\]"),
        (
            {"pyramid_layers": 2, "num_layers": 2},
            r"pyramid_layers must be an int in \[0, num_layers - 1 = 1\]",
        ),
        ({"pyramid_layers": -1}, "pyramid_layers"),
        ({"projection_size": 0}, "projection_size must be a positive int"),
        ({"dropout": -0.1}, "dropout"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _encoder(**kwargs)


def test_copy_between_encoders_rejects_jordan_to_fused():
    jordan = _encoder(cell="jordan", implementation="reference")
    with pytest.raises(ValueError, match="cell mismatch"):
        copy_to_fused(jordan, _encoder(cell="rnn"))



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("length_handling", ["reverse", "packed"])
def test_fused_encoder_on_gpu_matches_cpu(length_handling, monkeypatch):
    # float32 through cuDNN (no TF32) against the CPU kernels, padding positions included.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    enc = RecurrentEncoder(input_size=12, hidden_size=16, num_layers=3, cell="lstm", bidirectional=True,
                           length_handling=length_handling)
    x = torch.randn(5, 23, 12)
    lengths = torch.tensor([23, 7, 1, 15, 22])
    ref, _ = enc(x, lengths)
    out, out_lengths = enc.cuda()(x.cuda(), lengths.cuda())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-5)
    assert out_lengths.tolist() == lengths.tolist()
