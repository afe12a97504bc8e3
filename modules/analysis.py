"""Numerical probes of recurrent networks: gradient flow through time, long-range synthetic tasks,
loss-surface slices and gate activations recomputed from fused weights.

Pure torch; the command-line tools, plots and reports are in ``pipelines/commands/analyze/``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from modules.encoders import RecurrentEncoder
from modules.recurrent import (
    RecurrentCell,
    ReferenceRNN,
    State,
    load_from_fused,
    make_cell,
)

__all__ = [
    "RecordingCell",
    "ReferenceLayer",
    "state_names",
    "make_analysis_cell",
    "hidden_gradient_norms",
    "probe_encoder",
    "geometric_rate",
    "adding_problem",
    "ADDING_CHANCE_MSE",
    "constant_predictor_mse",
    "SequenceRegressor",
    "regressor_parameters",
    "hidden_for_budget",
    "train_regressor",
    "count_spikes",
    "filter_normalized_direction",
    "filter_normalize",
    "gradient_direction",
    "restored_parameters",
    "loss_slice_1d",
    "loss_slice_2d",
    "reference_lstm_from_fused",
    "lstm_gates_from_fused",
    "capture_module_io",
    "gate_saturation",
]

CELL_ALIASES = {"rnn": "elman", "elman": "elman", "jordan": "jordan", "lstm": "lstm", "gru": "gru"}
_FUSED = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# --------------------------------------------------------------------------- gradient flow through time


def state_names(cell: RecurrentCell) -> tuple[str, ...]:
    """Names of a cell's state tensors: ``("h", "c")`` for LSTM, ``("y",)`` for Jordan, else ``("h",)``."""
    return {"lstm": ("h", "c"), "jordan": ("y",)}.get(cell.kind, ("h",))


def make_analysis_cell(
    name: str, *, input_size: int, hidden_size: int, forget_bias: float = 0.0
) -> RecurrentCell:
    """A reference cell by name (``rnn`` = ``elman``) with torch's default initialisation.

    ``forget_bias`` is added to the LSTM forget-gate bias (``bias_hh`` rows H..2H) or the GRU update-gate bias
    (rows H..2H, which makes ``z`` close to 1, i.e. carry the state); other cells ignore it.
    """
    if name not in CELL_ALIASES:
        raise ValueError(f"cell must be one of {sorted(CELL_ALIASES)}, found {name!r}")
    cell = make_cell(CELL_ALIASES[name], input_size=input_size, hidden_size=hidden_size)
    if forget_bias and cell.kind in ("lstm", "gru"):
        with torch.no_grad():
            cell.bias_hh[hidden_size : 2 * hidden_size] += forget_bias
    return cell


class RecordingCell(RecurrentCell):
    """Wraps a reference cell and keeps every step's new state tensors (in graph), for ``autograd.grad``.

    A state tensor is both emitted and fed to the next step, so the gradient of a loss with respect to the
    recorded ``h_t`` is the total derivative ``dL/dh_t`` (all paths through later steps).
    """

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(input_size=cell.input_size, hidden_size=cell.hidden_size)
        self.inner = cell
        self.kind = cell.kind
        self.output_size = cell.output_size
        self.states: list[State] = []

    def init_state(self, batch_size: int, like: Tensor) -> State:
        return self.inner.init_state(batch_size, like)

    def project_input(self, x: Tensor) -> Tensor:
        return self.inner.project_input(x)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        out, new_state, gates = self.inner.step(x_proj, state)
        self.states.append(new_state)
        return out, new_state, gates

    def gradient_norms(self, loss: Tensor) -> dict[str, Tensor]:
        """``(B, T)`` L2 norms of ``dL/ds_t`` for each state tensor ``s`` of the recorded steps."""
        if not self.states:
            raise ValueError("no steps were recorded")
        flat = [s for state in self.states for s in state]
        grads = torch.autograd.grad(loss, flat, allow_unused=True, retain_graph=True)
        n = len(self.states[0])
        names = state_names(self.inner)
        out: dict[str, Tensor] = {}
        for k in range(n):
            per_step = [
                torch.zeros(flat[i].size(0), dtype=flat[i].dtype, device=flat[i].device)
                if g is None
                else g.flatten(1).norm(dim=1)
                for i, g in enumerate(grads)
                if i % n == k
            ]
            out[names[k]] = torch.stack(per_step, dim=1).detach()
        return out


def hidden_gradient_norms(cell: RecurrentCell, x: Tensor, readout: Tensor | None = None) -> dict[str, Tensor]:
    """Mean over the batch of ``||dL/ds_t||`` for every step ``t`` and state tensor ``s``.

    The loss reads the last step's output through a fixed vector: ``L = sum_b readout . out_{T-1, b}``, so
    ``dL/dout_{T-1} = readout`` for every example (norm 1 with the default ``ones / sqrt(O)``) and the
    values at earlier steps show how the gradient shrinks or grows with distance in time.

    Args:
        cell: a reference cell (any ``RecurrentCell``), in the dtype of ``x``.
        x: ``(B, T, I)`` input.
        readout: ``(O,)`` vector; default ``ones(O) / sqrt(O)``.

    Returns:
        ``{state name: (T,) tensor}``, e.g. ``h`` and ``c`` for an LSTM.
    """
    if x.dim() != 3 or x.size(1) < 1:
        raise ValueError(f"x must have shape (B, T, I) with T >= 1, found {tuple(x.shape)}")
    rec = RecordingCell(cell)
    if readout is None:
        readout = x.new_ones(cell.output_size) / math.sqrt(cell.output_size)
    with torch.enable_grad():
        x_proj = rec.project_input(x)
        state = rec.init_state(x.size(0), x)
        out = x_proj
        for t in range(x.size(1)):
            out, state, _ = rec.step(x_proj[:, t], state)
        loss = (out * readout).sum()
        norms = rec.gradient_norms(loss)
    return {k: v.mean(0) for k, v in norms.items()}


def geometric_rate(norms: Tensor, *, floor: float = 1e-300) -> float:
    """Per-step factor of a geometric fit ``norm_t ~ A * r**(T-1-t)`` (least squares on log norms).

    ``r < 1``: the gradient vanishes with distance in time; ``r > 1``: it explodes. Steps with a norm at or
    below ``floor`` are left out; NaN when fewer than two remain.
    """
    norms = norms.detach().double().flatten()
    dist = torch.arange(norms.numel() - 1, -1, -1, dtype=torch.float64)
    keep = norms > floor
    if int(keep.sum()) < 2:
        return float("nan")
    d, y = dist[keep], norms[keep].log()
    slope = ((d - d.mean()) * (y - y.mean())).sum() / ((d - d.mean()) ** 2).sum()
    return float(slope.exp())


class ReferenceLayer(nn.Module):
    """Stands in for a single-layer unidirectional ``batch_first`` torch RNN inside an encoder.

    Runs the equivalent reference cell (weights copied from the fused module) through a ``RecordingCell``,
    so the per-step states of that layer can be differentiated. Called like the fused module:
    ``layer(x) -> (out (B, T, H), final state)``.
    """

    def __init__(self, fused: nn.RNNBase) -> None:
        super().__init__()
        if fused.num_layers != 1 or fused.bidirectional or not fused.batch_first:
            raise ValueError("ReferenceLayer replaces single-layer unidirectional batch_first modules only")
        ref = ReferenceRNN(
            cell=_fused_kind(fused),
            input_size=fused.input_size,
            hidden_size=fused.hidden_size,
            nonlinearity="relu" if fused.mode == "RNN_RELU" else "tanh",
        )
        ref = ref.to(device=fused.weight_hh_l0.device, dtype=fused.weight_hh_l0.dtype)
        load_from_fused(ref, fused)
        self.recorder = RecordingCell(ref.cells[0][0])

    def forward(self, x, hx=None):
        if not isinstance(x, Tensor):
            raise TypeError("ReferenceLayer needs a padded tensor, not a PackedSequence")
        if hx is not None:
            raise ValueError("ReferenceLayer starts from the zero state only")
        rec = self.recorder
        x_proj = rec.project_input(x)
        state = rec.init_state(x.size(0), x)
        outs = []
        for t in range(x.size(1)):
            out, state, _ = rec.step(x_proj[:, t], state)
            outs.append(out)
        final = tuple(s.unsqueeze(0) for s in state)
        return torch.stack(outs, dim=1), final if len(final) > 1 else final[0]


def _fused_kind(module: nn.RNNBase) -> str:
    kinds = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "elman", "RNN_RELU": "elman"}
    if module.mode not in kinds:
        raise ValueError(f"unsupported torch recurrent mode {module.mode!r}")
    return kinds[module.mode]


@contextlib.contextmanager
def probe_encoder(encoder: RecurrentEncoder, layer: int = 0, direction: int = 0) -> Iterator[RecordingCell]:
    """Records the per-step states of one layer-direction of ``encoder`` while it runs.

    A fused layer is swapped for a ``ReferenceLayer`` with the same weights (``length_handling`` is set to
    ``reverse`` meanwhile, which gives the same numbers as ``packed``); a reference layer's cell is wrapped.
    Everything is put back on exit. Direction 1 (backward) sees each sequence reversed within its length.

    Yields:
        the ``RecordingCell`` whose ``states`` fill up during the forward pass.
    """
    if not 0 <= layer < encoder.num_layers:
        raise ValueError(f"layer must be in [0, {encoder.num_layers - 1}], found {layer}")
    if not 0 <= direction < encoder.num_directions:
        raise ValueError(f"direction must be in [0, {encoder.num_directions - 1}], found {direction}")
    if encoder.implementation == "reference":
        cells = encoder.layers[layer].cells[0]
        original = cells[direction]
        rec = RecordingCell(original)
        cells[direction] = rec
        try:
            yield rec
        finally:
            cells[direction] = original
        return
    units = encoder.layers[layer]
    original = units[direction]
    replacement = ReferenceLayer(original)
    saved_handling = encoder.length_handling
    units[direction] = replacement
    encoder.length_handling = "reverse"
    try:
        yield replacement.recorder
    finally:
        units[direction] = original
        encoder.length_handling = saved_handling


# --------------------------------------------------------------------------- long-range task

ADDING_CHANCE_MSE = 1.0 / 6.0
"""MSE of the best constant prediction (1) on the adding problem: ``Var(u1 + u2) = 2 / 12``, u ~ U(0, 1)."""


def adding_problem(
    n: int, length: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015).

    Each step has two features: a value ``u ~ U(0, 1)`` and a marker. Exactly two steps are marked, one in
    the first half (``[0, T//2)``) and one in the second (``[T//2, T)``); the target is the sum of the two
    marked values, so the first one must be remembered over at least ``T - T//2`` steps (``3T/4`` on average).

    Returns:
        ``x (n, T, 2)``, ``y (n, 1)``, ``positions (n, 2)`` (int64 indices of the marked steps).
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, found {length}")
    half = length // 2
    values = torch.rand(n, length, generator=generator, dtype=torch.float64)
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    markers = torch.zeros(n, length, dtype=torch.float64)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    x = torch.stack([values, markers], dim=-1)
    return x.to(dtype), y.to(dtype), torch.stack([first, second], dim=1)


def constant_predictor_mse(y_fit: Tensor, y_eval: Tensor) -> float:
    """Test MSE of the best constant predictor: the mean of ``y_fit``, scored on ``y_eval``."""
    return float(((y_eval.double() - y_fit.double().mean()) ** 2).mean())


class SequenceRegressor(nn.Module):
    """A fused recurrent layer (nn.RNN tanh, nn.LSTM or nn.GRU) and a linear readout of its last step.

    Shapes: input ``(B, T, I)``, output ``(B, O)``.
    """

    def __init__(self, cell: str, *, input_size: int, hidden_size: int, output_size: int = 1) -> None:
        super().__init__()
        kind = CELL_ALIASES.get(cell)
        if kind not in _FUSED:
            raise ValueError(f"cell must be one of rnn, elman, lstm, gru, found {cell!r}")
        self.cell = kind
        self.rnn = _FUSED[kind](input_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.readout(out[:, -1])


def regressor_parameters(cell: str, *, input_size: int, hidden_size: int, output_size: int = 1) -> int:
    """Parameter count of ``SequenceRegressor``: ``G * H * (I + H + 2) + (H + 1) * O`` with G = 1, 4, 3."""
    gates = {"elman": 1, "lstm": 4, "gru": 3}[CELL_ALIASES[cell]]
    return gates * hidden_size * (input_size + hidden_size + 2) + (hidden_size + 1) * output_size


def hidden_for_budget(cell: str, budget: int, *, input_size: int, output_size: int = 1) -> int:
    """Hidden size whose ``SequenceRegressor`` parameter count is closest to ``budget`` (at least 1)."""
    if CELL_ALIASES.get(cell) not in _FUSED:
        raise ValueError(f"cell must be one of rnn, elman, lstm, gru, found {cell!r}")
    best, best_gap = 1, None
    hidden = 1
    while True:
        n = regressor_parameters(cell, input_size=input_size, hidden_size=hidden, output_size=output_size)
        gap = abs(n - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = hidden, gap
        if n > budget:
            return best
        hidden += 1


def train_regressor(
    model: nn.Module,
    make_batch: Callable[[int], tuple[Tensor, Tensor]],
    *,
    steps: int,
    lr: float = 1e-3,
    clip_norm: float | None = None,
    optimizer: str = "adam",
    momentum: float = 0.9,
) -> dict[str, list[float]]:
    """MSE training with a fresh batch per step.

    Args:
        model: maps ``x`` to predictions shaped like ``y``.
        make_batch: ``step -> (x, y)``.
        steps: optimiser steps.
        lr: learning rate.
        clip_norm: clip the global gradient norm to this value (None: no clipping).
        optimizer: ``adam`` or ``sgd`` (with ``momentum``).

    Returns:
        ``{"loss": [...], "grad_norm": [...]}`` per step; the gradient norm is measured before clipping.
    """
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        raise ValueError(f"optimizer must be adam or sgd, found {optimizer!r}")
    model.train()
    losses, norms = [], []
    for step in range(steps):
        x, y = make_batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = clip_norm if clip_norm is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        losses.append(float(loss.detach()))
        norms.append(float(norm))
    return {"loss": losses, "grad_norm": norms}


def count_spikes(losses: Sequence[float], *, window: int = 20, factor: float = 3.0) -> list[int]:
    """Steps where a loss spike starts: ``loss[s] > factor * median(loss[s-window:s])``, the step before not.

    A non-finite loss counts as a spike. The first ``window`` steps are never spikes.
    """
    values = [float(v) for v in losses]
    starts, inside = [], False
    for s in range(window, len(values)):
        recent = sorted(v for v in values[s - window : s] if math.isfinite(v))
        median = recent[len(recent) // 2] if recent else float("inf")
        spike = not math.isfinite(values[s]) or values[s] > factor * median
        if spike and not inside:
            starts.append(s)
        inside = spike
    return starts


# --------------------------------------------------------------------------- loss-surface slices


def _as_params(params: Sequence[Tensor] | nn.Module) -> list[Tensor]:
    if isinstance(params, nn.Module):
        return [p for p in params.parameters() if p.requires_grad]
    return list(params)


def filter_normalize(
    direction: Sequence[Tensor], params: Sequence[Tensor], *, ignore_1d: bool = True
) -> list[Tensor]:
    """Rescales each filter of ``direction`` to the norm of the same filter of ``params`` (Li et al. 2018).

    A filter is a row (dimension 0 slice) of a weight matrix: the incoming weights of one unit (an embedding
    row for an embedding table). 1-D tensors (biases, peepholes) get a zero direction when ``ignore_1d``,
    else are scaled as a whole.
    """
    out = []
    for d, p in zip(direction, params, strict=True):
        d = d.detach().to(p.dtype)
        if p.dim() <= 1:
            if ignore_1d:
                out.append(torch.zeros_like(p))
            else:
                out.append(d * (p.detach().norm() / (d.norm() + 1e-12)))
            continue
        d_rows = d.reshape(d.size(0), -1)
        p_rows = p.detach().reshape(p.size(0), -1)
        scale = p_rows.norm(dim=1, keepdim=True) / (d_rows.norm(dim=1, keepdim=True) + 1e-12)
        out.append((d_rows * scale).reshape_as(p))
    return out


def filter_normalized_direction(
    params: Sequence[Tensor] | nn.Module, *, generator: torch.Generator | None = None, ignore_1d: bool = True
) -> list[Tensor]:
    """A random Gaussian direction in parameter space, filter-normalised (Li et al. 2018)."""
    params = _as_params(params)
    raw = [
        torch.randn(p.shape, generator=generator, dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        for p in params
    ]
    return filter_normalize(raw, params, ignore_1d=ignore_1d)


def gradient_direction(
    module: nn.Module, loss_fn: Callable[[], Tensor], *, ignore_1d: bool = True, normalize: bool = True
) -> tuple[list[Tensor], float]:
    """The descent direction ``-dL/dtheta`` at the current weights (filter-normalised when ``normalize``).

    Uses ``torch.autograd.grad``: the ``.grad`` fields of the parameters are left as they were.

    Returns:
        ``(direction, gradient norm)``.
    """
    params = _as_params(module)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    neg = [-g.detach() for g in grads]
    return (filter_normalize(neg, params, ignore_1d=ignore_1d) if normalize else neg), norm


@contextlib.contextmanager
def restored_parameters(module: nn.Module) -> Iterator[list[Tensor]]:
    """Snapshots every parameter (and the training flag) of ``module``; restores them bit for bit on exit,
    also when the body raises. Yields the snapshot (detached clones)."""
    params = list(module.parameters())
    saved = [p.detach().clone() for p in params]
    was_training = module.training
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        module.train(was_training)


def _evaluate_at(
    module: nn.Module, loss_fn: Callable[[], Tensor], coords: Tensor, directions: Sequence[Sequence[Tensor]]
) -> Tensor:
    """Loss at ``theta0 + sum_k coords[i, k] * directions[k]`` for each row ``i`` of ``coords``."""
    params = _as_params(module)
    values = torch.empty(coords.size(0), dtype=torch.float64)
    with restored_parameters(module) as saved:
        by_id = {id(p): s for p, s in zip(module.parameters(), saved, strict=True)}
        origin = [by_id[id(p)] for p in params]
        module.eval()
        with torch.no_grad():
            for i, row in enumerate(coords.tolist()):
                for j, p in enumerate(params):
                    moved = origin[j].clone()
                    for k, a in enumerate(row):
                        moved.add_(directions[k][j], alpha=a)
                    p.copy_(moved)
                values[i] = float(loss_fn())
    return values


def loss_slice_1d(
    module: nn.Module, loss_fn: Callable[[], Tensor], direction: Sequence[Tensor], alphas: Tensor
) -> Tensor:
    """``L(theta0 + a * d)`` for each ``a`` in ``alphas``; the weights are restored exactly afterwards.

    ``direction`` lists one tensor per trainable parameter, in ``module.parameters()`` order. The module is
    evaluated in eval mode (no dropout) under ``torch.no_grad``.
    """
    return _evaluate_at(module, loss_fn, alphas.double().reshape(-1, 1), [list(direction)])


def loss_slice_2d(
    module: nn.Module,
    loss_fn: Callable[[], Tensor],
    d1: Sequence[Tensor],
    d2: Sequence[Tensor],
    alphas: Tensor,
    betas: Tensor,
) -> Tensor:
    """``L(theta0 + a * d1 + b * d2)`` on the grid ``alphas x betas``: ``(len(alphas), len(betas))``."""
    a, b = torch.meshgrid(alphas.double(), betas.double(), indexing="ij")
    coords = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)
    return _evaluate_at(module, loss_fn, coords, [list(d1), list(d2)]).reshape(len(alphas), len(betas))


# --------------------------------------------------------------------------- gates from fused weights


def reference_lstm_from_fused(fused: nn.LSTM, *, layer: int = 0, direction: int = 0) -> ReferenceRNN:
    """A one-layer unidirectional ``ReferenceRNN`` (``LSTMCell``) holding one layer-direction of ``fused``.

    Works for any ``nn.LSTM`` (stacked, bidirectional) without projections; the copy is in ``fused``'s dtype.
    """
    if not isinstance(fused, nn.LSTM):
        raise TypeError(f"expected nn.LSTM, found {type(fused).__name__}")
    if not 0 <= layer < fused.num_layers:
        raise ValueError(f"layer must be in [0, {fused.num_layers - 1}], found {layer}")
    directions = 2 if fused.bidirectional else 1
    if not 0 <= direction < directions:
        raise ValueError(f"direction must be in [0, {directions - 1}], found {direction}")
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    w_ih = getattr(fused, "weight_ih" + suffix)
    single = nn.LSTM(
        w_ih.size(1), fused.hidden_size, batch_first=True, bias=fused.bias, proj_size=fused.proj_size
    ).to(device=w_ih.device, dtype=w_ih.dtype)
    with torch.no_grad():
        for name, p in single.named_parameters():
            p.copy_(getattr(fused, name.replace("_l0", suffix)))
    ref = ReferenceRNN(cell="lstm", input_size=w_ih.size(1), hidden_size=fused.hidden_size)
    ref = ref.to(device=w_ih.device, dtype=w_ih.dtype)
    load_from_fused(ref, single)
    return ref


def lstm_gates_from_fused(
    fused: nn.LSTM, x: Tensor, *, layer: int = 0, direction: int = 0, dtype: torch.dtype | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Runs one layer-direction of a fused LSTM with the from-scratch ``LSTMCell`` and returns its gates.

    Args:
        fused: the trained ``nn.LSTM``.
        x: ``(B, T, I)`` input of that layer, in the order that direction reads it (reverse it yourself
            for direction 1).
        dtype: compute dtype (default ``x``'s); float64 makes the recomputation itself exact to ~1e-15.

    Returns:
        ``(out (B, T, H), gates)`` with gates ``input_gate, forget_gate, output_gate, candidate, cell,
        hidden``, each ``(B, T, H)``.
    """
    dtype = dtype or x.dtype
    ref = reference_lstm_from_fused(fused, layer=layer, direction=direction).to(dtype)
    lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
    with torch.no_grad():
        out, _, gates = ref(x.to(dtype), lengths, return_gates=True)
    return out, gates[0][0]


def capture_module_io(module: nn.Module, run: Callable[[], object]) -> tuple[object, object]:
    """Calls ``run()`` and returns the first input and the output of ``module``'s first call during it."""
    seen: list[tuple[object, object]] = []

    def hook(_mod, inputs, output):
        if not seen:
            seen.append((inputs[0], output))

    handle = module.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(module).__name__} was not called")
    return seen[0]


def gate_saturation(values: Tensor, *, low: float = 0.1, high: float = 0.9) -> dict[str, float]:
    """Fractions of gate values near open (``> high``) and near closed (``< low``), plus their mean."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        raise ValueError("no gate values")
    return {
        "open": float((v > high).double().mean()),
        "closed": float((v < low).double().mean()),
        "mean": float(v.mean()),
    }
