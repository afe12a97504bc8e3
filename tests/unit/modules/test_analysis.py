"""modules/analysis.py: gradient flow, the adding problem, loss slices, gates from fused weights."""

import math

import pytest
import torch
from torch import nn

from modules.analysis import (
    ADDING_CHANCE_MSE,
    RecordingCell,
    SequenceRegressor,
    adding_problem,
    constant_predictor_mse,
    count_spikes,
    filter_normalize,
    filter_normalized_direction,
    gate_saturation,
    geometric_rate,
    gradient_direction,
    hidden_for_budget,
    hidden_gradient_norms,
    loss_slice_1d,
    loss_slice_2d,
    lstm_gates_from_fused,
    make_analysis_cell,
    probe_encoder,
    regressor_parameters,
    restored_parameters,
    train_regressor,
)
from modules.encoders import RecurrentEncoder
from modules.recurrent import RecurrentCell


class LinearCell(RecurrentCell):
    """h_t = W h_{t-1} + U x_t (identity activation, no bias)."""

    kind = "linear"

    def __init__(self, weight_hh: torch.Tensor, input_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=weight_hh.size(0))
        self.weight_hh = nn.Parameter(weight_hh.clone())
        self.weight_ih = nn.Parameter(torch.randn(weight_hh.size(0), input_size, dtype=weight_hh.dtype))
        self.bias_ih = None

    def step(self, x_proj, state):
        (h_prev,) = state
        h = x_proj + h_prev @ self.weight_hh.T
        return h, (h,), {"hidden": h}


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q


@pytest.mark.parametrize("a", [0.7, 1.0, 1.15])
def test_linear_rnn_gradient_norms_follow_a_to_the_distance(a):
    steps, hidden = 25, 6
    cell = LinearCell(a * _orthogonal(hidden, 0), input_size=3)
    x = torch.randn(4, steps, 3, dtype=torch.float64)
    readout = torch.randn(hidden, dtype=torch.float64)
    readout = readout / readout.norm()
    norms = hidden_gradient_norms(cell, x, readout)["h"]
    # dL/dh_t = (W^T)^(T-1-t) r and W = a Q with Q orthogonal: the norm is exactly a^(T-1-t).
    expected = torch.tensor([a ** (steps - 1 - t) for t in range(steps)], dtype=torch.float64)
    torch.testing.assert_close(norms, expected, rtol=1e-10, atol=0)
    assert geometric_rate(norms) == pytest.approx(a, rel=1e-9)


def test_linear_rnn_with_scaled_identity_and_default_readout():
    cell = LinearCell(0.5 * torch.eye(4, dtype=torch.float64), input_size=2)
    norms = hidden_gradient_norms(cell, torch.randn(2, 10, 2, dtype=torch.float64))["h"]
    torch.testing.assert_close(norms, torch.tensor([0.5 ** (9 - t) for t in range(10)], dtype=torch.float64))


def test_lstm_reports_cell_state_and_forget_bias_keeps_the_carousel_open():
    x = torch.randn(3, 40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rates = {}
    for bias in (0.0, 6.0):
        torch.manual_seed(0)
        cell = make_analysis_cell("lstm", input_size=2, hidden_size=8, forget_bias=bias).double()
        norms = hidden_gradient_norms(cell, x)
        assert set(norms) == {"h", "c"} and norms["c"].shape == (40,)
        rates[bias] = geometric_rate(norms["c"])
    # f = sigmoid(~0) = 0.5 halves the memory path each step; f = sigmoid(~6) ~ 0.998 nearly keeps it.
    assert rates[0.0] < 0.8 < 0.95 < rates[6.0] <= 1.0


def test_make_analysis_cell_names():
    assert make_analysis_cell("rnn", input_size=2, hidden_size=3).kind == "elman"
    assert make_analysis_cell("jordan", input_size=2, hidden_size=3).kind == "jordan"
    with pytest.raises(ValueError, match="cell must be one of"):
        make_analysis_cell("lstn", input_size=2, hidden_size=3)


def test_adding_problem_chance_baseline_and_marked_positions():
    g = torch.Generator().manual_seed(0)
    x, y, pos = adding_problem(200_000, 30, generator=g, dtype=torch.float64)
    assert x.shape == (200_000, 30, 2) and y.shape == (200_000, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2) and torch.all((markers == 0) | (markers == 1))
    assert torch.all(pos[:, 0] < 15) and torch.all(pos[:, 1] >= 15)
    # The target is exactly the sum of the values at the two marked steps.
    torch.testing.assert_close(y[:, 0], (x[..., 0] * markers).sum(1), rtol=0, atol=1e-12)
    # Chance (predict the mean): analytic Var(u1 + u2) = 1/6; empirical on held-out targets agrees.
    assert ADDING_CHANCE_MSE == pytest.approx(1 / 6)
    assert float(y.var()) == pytest.approx(1 / 6, abs=0.003)
    _, y_test, _ = adding_problem(50_000, 30, generator=g)
    assert constant_predictor_mse(y, y_test) == pytest.approx(ADDING_CHANCE_MSE, abs=0.004)


def test_adding_problem_target_ignores_unmarked_values():
    x, y, pos = adding_problem(64, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rows = torch.arange(64)
    # Changing every unmarked value leaves the target as it is; changing a marked value changes it 1:1.
    x2 = x.clone()
    unmarked = x2[..., 1] == 0
    x2[..., 0][unmarked] = torch.rand(int(unmarked.sum()), dtype=torch.float64)
    torch.testing.assert_close((x2[..., 0] * x2[..., 1]).sum(1, keepdim=True), y)
    x3 = x.clone()
    x3[rows, pos[:, 0], 0] += 0.25
    torch.testing.assert_close((x3[..., 0] * x3[..., 1]).sum(1, keepdim=True), y + 0.25)
    with pytest.raises(ValueError, match="length"):
        adding_problem(2, 1)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hidden_for_budget_matches_parameter_counts(cell):
    budget = 4641
    hidden = hidden_for_budget(cell, budget, input_size=2)
    model = SequenceRegressor(cell, input_size=2, hidden_size=hidden)
    n = sum(p.numel() for p in model.parameters())
    assert n == regressor_parameters(cell, input_size=2, hidden_size=hidden)
    # The nearest size: one unit more or less is at least as far from the budget.
    for other in (hidden - 1, hidden + 1):
        assert abs(regressor_parameters(cell, input_size=2, hidden_size=other) - budget) >= abs(n - budget)
    assert abs(n - budget) / budget < 0.05


def test_train_regressor_clipping_bounds_the_update_and_reports_the_raw_norm():
    torch.manual_seed(0)
    x, y, _ = adding_problem(16, 8, generator=torch.Generator().manual_seed(0))
    y = y * 100  # a large error, hence a large gradient
    updates = {}
    for clip in (None, 0.5):
        torch.manual_seed(0)
        model = SequenceRegressor("rnn", input_size=2, hidden_size=5)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        hist = train_regressor(
            model, lambda _s: (x, y), steps=1, lr=0.1, clip_norm=clip, optimizer="sgd", momentum=0.0
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        updates[clip] = (float((after - before).norm()), hist["grad_norm"][0])
    raw_step, raw_norm = updates[None]
    clipped_step, clipped_raw_norm = updates[0.5]
    assert raw_norm == pytest.approx(clipped_raw_norm) and raw_norm > 0.5
    assert raw_step == pytest.approx(0.1 * raw_norm, rel=1e-4)
    assert clipped_step == pytest.approx(0.1 * 0.5, rel=1e-4)


def test_count_spikes():
    flat = [1.0] * 60
    assert count_spikes(flat) == []
    losses = flat.copy()
    losses[30] = 5.0
    losses[31] = 4.0  # the same spike continues
    losses[45] = float("nan")
    losses[10] = 100.0  # inside the warm-up window: not counted
    assert count_spikes(losses, window=20, factor=3.0) == [30, 45]


def _quadratic_module():
    m = nn.Module()
    m.w = nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64))
    m.b = nn.Parameter(torch.tensor([0.5, -0.5], dtype=torch.float64))
    return m


def test_filter_normalize_scales_each_row_to_the_weight_row():
    m = _quadratic_module()
    d = filter_normalize(
        [torch.ones(2, 2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)], list(m.parameters())
    )
    torch.testing.assert_close(d[0].norm(dim=1), m.w.detach().norm(dim=1))
    assert torch.all(d[1] == 0)  # biases are not perturbed
    rnd = filter_normalized_direction(m, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rnd[0].norm(dim=1), m.w.detach().norm(dim=1))


def test_loss_slices_are_exact_and_restore_the_weights():
    m = _quadratic_module()
    w0 = m.w.detach().clone()

    def loss():
        return (m.w**2).sum() + (m.b**2).sum()

    d = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
    alphas = torch.tensor([-1.0, 0.0, 0.5])
    values = loss_slice_1d(m, loss, d, alphas)
    expected = [float(((w0 + a * d[0]) ** 2).sum() + 0.5) for a in alphas.tolist()]
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64))
    e = [torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)]
    grid = loss_slice_2d(m, loss, d, e, alphas, torch.tensor([0.0, 1.0]))
    assert grid.shape == (3, 2)
    assert float(grid[1, 1]) == pytest.approx(float((w0**2).sum() + 1.5**2 + 0.5**2))
    assert torch.equal(m.w, w0) and torch.equal(m.b, torch.tensor([0.5, -0.5], dtype=torch.float64))


def test_slice_restores_every_parameter_bit_for_bit_even_after_an_error():
    torch.manual_seed(0)
    model = SequenceRegressor("lstm", input_size=2, hidden_size=4)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    x, y, _ = adding_problem(8, 6, generator=torch.Generator().manual_seed(0))
    calls = {"n": 0}

    def loss():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return nn.functional.mse_loss(model(x), y)

    direction = filter_normalized_direction(model, generator=torch.Generator().manual_seed(1))
    # Steps that are not exactly representable: restoring by subtraction would not give the same bits.
    with pytest.raises(RuntimeError, match="boom"):
        loss_slice_1d(model, loss, direction, torch.linspace(-0.37, 0.91, 7))
    assert calls["n"] == 3
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert model.training  # the mode is restored too
    calls["n"] = -100
    loss_slice_2d(
        model, loss, direction, direction, torch.linspace(-0.3, 0.7, 3), torch.linspace(-0.1, 0.9, 3)
    )
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_restored_parameters_context_manager():
    m = _quadratic_module()
    with pytest.raises(ValueError), restored_parameters(m):
        with torch.no_grad():
            m.w.add_(1.0)
        raise ValueError
    assert torch.equal(m.w, torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64))


def test_gradient_direction_is_minus_the_gradient_and_leaves_grad_alone():
    m = _quadratic_module()
    direction, norm = gradient_direction(m, lambda: (m.w**2).sum() + (m.b**2).sum(), normalize=False)
    torch.testing.assert_close(direction[0], -2 * m.w.detach())
    torch.testing.assert_close(direction[1], -2 * m.b.detach())
    assert norm == pytest.approx(2 * math.sqrt(float((m.w.detach() ** 2).sum() + (m.b.detach() ** 2).sum())))
    assert m.w.grad is None and m.b.grad is None


def test_gates_from_fused_lstm_reproduce_its_output_float64():
    torch.manual_seed(0)
    fused = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    with torch.no_grad():
        full, _ = fused(x)
        single = nn.LSTM(3, 5, bidirectional=True, batch_first=True).double()
        for name, p in single.named_parameters():
            p.copy_(getattr(fused, name))  # layer 0 has the same parameter names
        layer0, _ = single(x)
    fwd, gates = lstm_gates_from_fused(fused, x, layer=0, direction=0)
    torch.testing.assert_close(fwd, layer0[..., :5], rtol=0, atol=1e-12)
    bwd, _ = lstm_gates_from_fused(fused, x.flip(1), layer=0, direction=1)
    torch.testing.assert_close(bwd.flip(1), layer0[..., 5:], rtol=0, atol=1e-12)
    top, _ = lstm_gates_from_fused(fused, layer0, layer=1, direction=0)
    torch.testing.assert_close(top, full[..., :5], rtol=0, atol=1e-12)
    # The gates are the LSTM's: c_t = f c_{t-1} + i g and h_t = o tanh(c_t).
    i, f, o, g, c = (gates[k] for k in ("input_gate", "forget_gate", "output_gate", "candidate", "cell"))
    c_prev = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)
    torch.testing.assert_close(c, f * c_prev + i * g)
    torch.testing.assert_close(fwd, o * torch.tanh(c))
    assert all(
        float(gates[k].min()) >= 0 and float(gates[k].max()) <= 1 for k in ("input_gate", "forget_gate")
    )
    with pytest.raises(TypeError):
        lstm_gates_from_fused(nn.GRU(3, 5), x)


def test_gate_saturation_fractions():
    v = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])
    s = gate_saturation(v)
    assert s["open"] == pytest.approx(0.4) and s["closed"] == pytest.approx(0.4)
    assert s["mean"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "implementation,cell", [("fused", "lstm"), ("fused", "gru"), ("reference", "jordan")]
)
def test_probe_encoder_records_states_without_changing_the_encoder(implementation, cell):
    torch.manual_seed(0)
    enc = (
        RecurrentEncoder(
            input_size=3,
            hidden_size=4,
            num_layers=2,
            cell=cell,
            bidirectional=True,
            implementation=implementation,
        )
        .double()
        .eval()
    )
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 5, 2])
    with torch.no_grad():
        plain, _ = enc(x, lengths)
    units_before = [list(layer.modules()) for layer in enc.layers]
    with probe_encoder(enc, layer=1, direction=0) as rec:
        assert isinstance(rec, RecordingCell)
        out, _ = enc(x, lengths)
        norms = rec.gradient_norms(out[:, 0].sum())
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-12)
    name = "y" if cell == "jordan" else "h"
    assert norms[name].shape == (3, 7)
    # Output at t=0 only: the forward state at t > 0 cannot influence it (causality).
    assert torch.all(norms[name][:, 1:] == 0) and torch.all(norms[name][:, 0] > 0)
    assert [list(layer.modules()) for layer in enc.layers] == units_before
    assert enc.length_handling == "reverse"
    with pytest.raises(ValueError, match="layer"), probe_encoder(enc, layer=2):
        pass
