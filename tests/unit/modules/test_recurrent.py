"""Tests for modules.recurrent: reference cells, ReferenceRNN, weight copying and helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modules.recurrent import (
    ElmanCell,
    GRUCell,
    JordanCell,
    LSTMCell,
    ReferenceRNN,
    copy_to_fused,
    count_parameters,
    lengths_to_mask,
    load_from_fused,
    reverse_padded,
)

IN, HID = 3, 4

TORCH_CASES = [
    ("lstm", "tanh", lambda **kw: nn.LSTM(**kw)),
    ("gru", "tanh", lambda **kw: nn.GRU(**kw)),
    ("elman", "tanh", lambda **kw: nn.RNN(nonlinearity="tanh", **kw)),
    ("elman", "relu", lambda **kw: nn.RNN(nonlinearity="relu", **kw)),
]
TORCH_IDS = ["lstm", "gru", "elman-tanh", "elman-relu"]

ALL_CELLS = [
    {"cell": "elman"},
    {"cell": "elman", "nonlinearity": "relu"},
    {"cell": "jordan"},
    {"cell": "lstm"},
    {"cell": "lstm", "peephole": True},
    {"cell": "gru"},
]
ALL_IDS = ["elman", "elman-relu", "jordan", "lstm", "lstm-peephole", "gru"]


def _pair(cell: str, nonlinearity: str, factory, *, num_layers: int = 2, bidirectional: bool = True):
    torch.manual_seed(0)
    ref = ReferenceRNN(
        cell=cell,
        input_size=IN,
        hidden_size=HID,
        num_layers=num_layers,
        bidirectional=bidirectional,
        nonlinearity=nonlinearity,
    ).double()
    fused = factory(
        input_size=IN, hidden_size=HID, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    ).double()
    load_from_fused(ref, fused)
    return ref, fused


def _grad_pairs(ref: ReferenceRNN, fused: nn.RNNBase):
    for layer in range(ref.num_layers):
        for direction in range(ref.num_directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            cell = ref.cells[layer][direction]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                yield f"{name}{suffix}", getattr(cell, name), getattr(fused, name + suffix)


@pytest.mark.parametrize(("cell", "nonlinearity", "factory"), TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_full_length_outputs_and_gradients(cell, nonlinearity, factory):
    ref, fused = _pair(cell, nonlinearity, factory)
    x = torch.randn(3, 5, IN, dtype=torch.float64)
    lengths = torch.full((3,), 5, dtype=torch.long)
    weight = torch.randn(3, 5, 2 * HID, dtype=torch.float64)

    x_ref = x.clone().requires_grad_(True)
    out_ref, out_lengths = ref(x_ref, lengths)
    (out_ref * weight).sum().backward()
    x_fused = x.clone().requires_grad_(True)
    out_fused, _ = fused(x_fused)
    (out_fused * weight).sum().backward()

    assert torch.equal(out_lengths, lengths)
    torch.testing.assert_close(out_ref, out_fused, atol=1e-8, rtol=0)
    torch.testing.assert_close(x_ref.grad, x_fused.grad, atol=1e-8, rtol=0)
    for name, p_ref, p_fused in _grad_pairs(ref, fused):
        torch.testing.assert_close(p_ref.grad, p_fused.grad, atol=1e-8, rtol=0, msg=name)


@pytest.mark.parametrize(("cell", "nonlinearity", "factory"), TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_packed_variable_lengths(cell, nonlinearity, factory):
    ref, fused = _pair(cell, nonlinearity, factory)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, IN, dtype=torch.float64)
    weight = torch.randn(3, 5, 2 * HID, dtype=torch.float64)

    x_ref = x.clone().requires_grad_(True)
    out_ref, _ = ref(x_ref, lengths)
    (out_ref * weight).sum().backward()
    x_fused = x.clone().requires_grad_(True)
    packed = pack_padded_sequence(x_fused, lengths, batch_first=True, enforce_sorted=False)
    out_fused, _ = pad_packed_sequence(fused(packed)[0], batch_first=True, total_length=5)
    (out_fused * weight).sum().backward()

    torch.testing.assert_close(out_ref, out_fused, atol=1e-8, rtol=0)
    torch.testing.assert_close(x_ref.grad, x_fused.grad, atol=1e-8, rtol=0)
    for name, p_ref, p_fused in _grad_pairs(ref, fused):
        torch.testing.assert_close(p_ref.grad, p_fused.grad, atol=1e-8, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("cell_class", "torch_class"),
    [(LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell), (ElmanCell, nn.RNNCell)],
    ids=["lstm", "gru", "elman"],
)
def test_single_step_cells_match_torch_cells(cell_class, torch_class):
    torch.manual_seed(1)
    cell = cell_class(input_size=IN, hidden_size=HID).double()
    ref = torch_class(IN, HID).double()
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(2, IN, dtype=torch.float64)
    h = torch.randn(2, HID, dtype=torch.float64)
    if cell_class is LSTMCell:
        c = torch.randn(2, HID, dtype=torch.float64)
        out, (h_new, c_new) = cell(x, (h, c))
        h_ref, c_ref = ref(x, (h, c))
        torch.testing.assert_close(c_new, c_ref, atol=1e-12, rtol=0)
    else:
        out, (h_new,) = cell(x, (h,))
        h_ref = ref(x, h)
    torch.testing.assert_close(h_new, h_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(out, h_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("cell", "nonlinearity", "factory"), TORCH_CASES[:3], ids=TORCH_IDS[:3])
def test_copy_to_fused_round_trip(cell, nonlinearity, factory):
    torch.manual_seed(2)
    ref = ReferenceRNN(cell=cell, input_size=IN, hidden_size=HID, num_layers=2, bidirectional=True).double()
    fused = factory(
        input_size=IN, hidden_size=HID, num_layers=2, bidirectional=True, batch_first=True
    ).double()
    copy_to_fused(ref, fused)
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    torch.testing.assert_close(ref(x, torch.tensor([4, 4]))[0], fused(x)[0], atol=1e-10, rtol=0)


def test_copy_rejects_mismatches():
    lstm = nn.LSTM(IN, HID, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="cell mismatch"):
        load_from_fused(
            ReferenceRNN(cell="gru", input_size=IN, hidden_size=HID, num_layers=2, bidirectional=True), lstm
        )
    with pytest.raises(ValueError, match="layers x directions"):
        load_from_fused(ReferenceRNN(cell="lstm", input_size=IN, hidden_size=HID, num_layers=1), lstm)
    with pytest.raises(ValueError, match="shape"):
        load_from_fused(
            ReferenceRNN(cell="lstm", input_size=IN, hidden_size=HID + 1, num_layers=2, bidirectional=True),
            lstm,
        )
    peephole = ReferenceRNN(
        cell="lstm", input_size=IN, hidden_size=HID, num_layers=2, bidirectional=True, peephole=True
    )
    with pytest.raises(ValueError, match="peephole"):
        copy_to_fused(peephole, lstm)
    with pytest.raises(ValueError, match="cell mismatch"):
        load_from_fused(
            ReferenceRNN(cell="elman", input_size=IN, hidden_size=HID, nonlinearity="relu"), nn.RNN(IN, HID)
        )


def _padding_invariance(module, x, lengths, atol):
    module.eval()
    out, out_lengths = module(x, lengths)[:2]
    assert torch.equal(out_lengths, lengths)
    mask = lengths_to_mask(lengths, x.size(1))
    assert torch.all(out[~mask] == 0)
    for b, n in enumerate(lengths.tolist()):
        alone, _ = module(x[b : b + 1, :n], lengths[b : b + 1])[:2]
        torch.testing.assert_close(out[b : b + 1, :n], alone, atol=atol, rtol=0)


@pytest.mark.parametrize("kwargs", ALL_CELLS, ids=ALL_IDS)
def test_padding_invariance_every_cell(kwargs):
    torch.manual_seed(3)
    module = ReferenceRNN(input_size=IN, hidden_size=HID, num_layers=2, bidirectional=True, **kwargs).double()
    x = torch.randn(3, 6, IN, dtype=torch.float64)  # padded steps hold garbage on purpose
    _padding_invariance(module, x, torch.tensor([6, 2, 4]), atol=1e-10)


@pytest.mark.parametrize("kwargs", ALL_CELLS, ids=ALL_IDS)
def test_reversing_input_changes_output(kwargs):
    torch.manual_seed(4)
    module = ReferenceRNN(input_size=IN, hidden_size=HID, **kwargs)
    x = torch.randn(2, 5, IN)
    lengths = torch.tensor([5, 5])
    out, _ = module(x, lengths)
    out_reversed, _ = module(x.flip(1), lengths)
    assert not torch.allclose(out[:, -1], out_reversed[:, -1], atol=1e-4)


def test_parameter_counts_are_gate_multiples():
    sizes = {"input_size": 5, "hidden_size": 7, "num_layers": 2, "bidirectional": True}
    elman = count_parameters(ReferenceRNN(cell="elman", **sizes))
    lstm = count_parameters(ReferenceRNN(cell="lstm", **sizes))
    gru = count_parameters(ReferenceRNN(cell="gru", **sizes))
    # per layer-direction: H*(I + H + 2); layer 0 has I=5, layer 1 has I=2H=14
    assert elman == 2 * (7 * (5 + 7 + 2)) + 2 * (7 * (14 + 7 + 2))
    assert lstm == 4 * elman
    assert gru == 3 * elman
    for cell in ("elman", "lstm", "gru"):
        fused_cls = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        fused = fused_cls(5, 7, num_layers=2, bidirectional=True)
        assert count_parameters(ReferenceRNN(cell=cell, **sizes)) == count_parameters(fused)


def test_count_parameters_trainable_only():
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 8
    assert count_parameters(layer, trainable_only=True) == 6


# ----------------------------------------------------------------------------------------------- Jordan


def test_jordan_matches_its_equations_and_emits_output():
    torch.manual_seed(5)
    cell = JordanCell(input_size=IN, hidden_size=HID, output_size=2).double()
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    y = torch.zeros(2, 2, dtype=torch.float64)
    expected = []
    for t in range(4):
        h = torch.tanh(x[:, t] @ cell.weight_ih.T + y @ cell.weight_yh.T + cell.bias_ih)
        y = torch.tanh(h @ cell.weight_ho.T + cell.bias_ho)
        expected.append(y)
    state = None
    for t in range(4):
        out, state = cell(x[:, t], state)
        assert out.shape == (2, 2)
        torch.testing.assert_close(out, expected[t], atol=1e-12, rtol=0)
    torch.testing.assert_close(state[0], expected[-1], atol=1e-12, rtol=0)


def test_jordan_feedback_goes_through_output_layer():
    torch.manual_seed(6)
    module = ReferenceRNN(cell="jordan", input_size=IN, hidden_size=HID).double()
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    lengths = torch.tensor([4, 4])
    out, _, gates = module(x, lengths, return_gates=True)
    torch.testing.assert_close(out, gates[0][0]["output"], atol=0, rtol=0)
    assert not torch.allclose(gates[0][0]["hidden"], gates[0][0]["output"])
    with torch.no_grad():
        module.cells[0][0].weight_ho.mul_(-0.5)
    _, _, gates_changed = module(x, lengths, return_gates=True)
    hidden, hidden_changed = gates[0][0]["hidden"], gates_changed[0][0]["hidden"]
    torch.testing.assert_close(hidden[:, 0], hidden_changed[:, 0], atol=0, rtol=0)  # y_{-1} = 0
    assert not torch.allclose(hidden[:, 1:], hidden_changed[:, 1:], atol=1e-6)  # fed back through W_ho


def test_jordan_is_not_elman():
    torch.manual_seed(7)
    elman = ReferenceRNN(cell="elman", input_size=IN, hidden_size=HID).double()
    jordan = ReferenceRNN(cell="jordan", input_size=IN, hidden_size=HID).double()
    e_cell, j_cell = elman.cells[0][0], jordan.cells[0][0]
    with torch.no_grad():  # same recurrent weights; Jordan's output layer is identity + tanh, so y != h
        j_cell.weight_ih.copy_(e_cell.weight_ih)
        j_cell.weight_yh.copy_(e_cell.weight_hh)
        j_cell.bias_ih.copy_(e_cell.bias_ih + e_cell.bias_hh)
        j_cell.weight_ho.copy_(torch.eye(HID))
        j_cell.bias_ho.zero_()
    x = torch.randn(2, 5, IN, dtype=torch.float64)
    lengths = torch.tensor([5, 5])
    e_out, _ = elman(x, lengths)
    _, _, j_gates = jordan(x, lengths, return_gates=True)
    torch.testing.assert_close(e_out[:, 0], j_gates[0][0]["hidden"][:, 0], atol=1e-12, rtol=0)
    assert not torch.allclose(e_out[:, 1:], j_gates[0][0]["hidden"][:, 1:], atol=1e-6)


def test_jordan_parameter_count():
    assert (
        count_parameters(JordanCell(input_size=5, hidden_size=7, output_size=3))
        == 7 * 5 + 7 * 3 + 7 + 3 * 7 + 3
    )
    jordan = count_parameters(ReferenceRNN(cell="jordan", input_size=5, hidden_size=7))
    elman = count_parameters(ReferenceRNN(cell="elman", input_size=5, hidden_size=7))
    assert jordan == 7 * (5 + 2 * 7 + 2)
    assert elman == 7 * (5 + 7 + 2)


# ----------------------------------------------------------------------------------------------- gates


def test_peephole_parameters_and_gates():
    sizes = {"cell": "lstm", "input_size": IN, "hidden_size": HID, "num_layers": 2, "bidirectional": True}
    torch.manual_seed(8)
    plain = ReferenceRNN(**sizes).double()
    peep = ReferenceRNN(**sizes, peephole=True).double()
    assert count_parameters(peep) - count_parameters(plain) == 3 * HID * 2 * 2
    load_from_fused(plain, plain)  # no-op self copy is allowed
    for layer in range(2):
        for d in range(2):
            peep.cells[layer][d].load_state_dict(plain.cells[layer][d].state_dict(), strict=False)
    x = torch.randn(2, 5, IN, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    out, _, gates = peep(x, lengths, return_gates=True)
    assert not torch.allclose(out, plain(x, lengths)[0], atol=1e-6)
    mask = lengths_to_mask(lengths, 5)
    assert len(gates) == 2 and all(len(row) == 2 for row in gates)
    for row in gates:
        for d, g in enumerate(row):
            assert set(g) == {"input_gate", "forget_gate", "output_gate", "candidate", "cell", "hidden"}
            for value in g.values():
                assert value.shape == (2, 5, HID)
                assert torch.all(value[~mask] == 0)
            for name in ("input_gate", "forget_gate", "output_gate"):
                assert torch.all((g[name][mask] > 0) & (g[name][mask] < 1))
            cell = g["cell"] if d == 0 else reverse_padded(g["cell"], lengths)  # in processing order
            f, i, cand = (
                g[k] if d == 0 else reverse_padded(g[k], lengths)
                for k in ("forget_gate", "input_gate", "candidate")
            )
            c_prev = torch.cat([torch.zeros_like(cell[:, :1]), cell[:, :-1]], dim=1)
            torch.testing.assert_close(cell[mask], (f * c_prev + i * cand)[mask], atol=1e-12, rtol=0)
            torch.testing.assert_close(
                g["hidden"], g["output_gate"] * torch.tanh(g["cell"]), atol=1e-12, rtol=0
            )
    with torch.no_grad():
        for layer in range(2):
            for d in range(2):
                for name in ("weight_ci", "weight_cf", "weight_co"):
                    getattr(peep.cells[layer][d], name).zero_()
    torch.testing.assert_close(peep(x, lengths)[0], plain(x, lengths)[0], atol=1e-12, rtol=0)


def test_gru_and_elman_gate_shapes():
    torch.manual_seed(9)
    x = torch.randn(2, 4, IN)
    lengths = torch.tensor([4, 2])
    _, _, gates = ReferenceRNN(cell="gru", input_size=IN, hidden_size=HID, bidirectional=True)(
        x, lengths, return_gates=True
    )
    fwd = gates[0][0]
    assert set(fwd) == {"reset_gate", "update_gate", "candidate", "hidden"}
    assert all(v.shape == (2, 4, HID) for v in fwd.values())
    h_prev = torch.cat([torch.zeros_like(fwd["hidden"][:, :1]), fwd["hidden"][:, :-1]], dim=1)
    expected = (1 - fwd["update_gate"]) * fwd["candidate"] + fwd["update_gate"] * h_prev
    torch.testing.assert_close(fwd["hidden"][0], expected[0])
    _, _, gates = ReferenceRNN(cell="elman", input_size=IN, hidden_size=HID, num_layers=3)(
        x, lengths, return_gates=True
    )
    assert len(gates) == 3 and list(gates[2][0]) == ["hidden"]


# ----------------------------------------------------------------------------------------------- misc


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(10)
    module = ReferenceRNN(cell="gru", input_size=IN, hidden_size=HID, num_layers=2, dropout=0.5)
    x = torch.randn(2, 5, IN)
    lengths = torch.tensor([5, 3])
    module.eval()
    a, _ = module(x, lengths)
    torch.testing.assert_close(a, module(x, lengths)[0], atol=0, rtol=0)
    module.train()
    b, _ = module(x, lengths)
    assert not torch.allclose(a, b)
    assert torch.all(b[1, 3:] == 0)


def test_reverse_padded():
    x = torch.arange(8.0).reshape(2, 4, 1)
    out = reverse_padded(x, torch.tensor([4, 2]))
    assert out[:, :, 0].tolist() == [[3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 6.0, 7.0]]
    torch.testing.assert_close(reverse_padded(out, torch.tensor([4, 2])), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "lstn"}, r"cell must be one of \['elman', 'jordan', 'lstm', 'gru'\], found 'lstn'"),
        ({"cell": "gru", "peephole": True}, "peephole"),
        ({"cell": "lstm", "nonlinearity": "relu"}, "nonlinearity"),
        ({"cell": "elman", "nonlinearity": "sigmoid"}, r"nonlinearity must be one of \['tanh', 'relu'\]"),
        ({"cell": "lstm", "hidden_size": 0}, "hidden_size must be a positive int, found 0"),
        ({"cell": "lstm", "num_layers": 0}, "num_layers"),
        ({"cell": "lstm", "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_size": IN, "hidden_size": HID, **kwargs}
    with pytest.raises(ValueError, match=match):
        ReferenceRNN(**args)


def test_bad_forward_inputs():
    module = ReferenceRNN(cell="gru", input_size=IN, hidden_size=HID)
    with pytest.raises(ValueError, match="x must have shape"):
        module(torch.randn(2, 3, IN + 1), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        module(torch.randn(2, 3, IN), torch.tensor([3]))
