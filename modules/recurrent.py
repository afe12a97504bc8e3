"""From-scratch reference recurrent cells (Elman, Jordan, LSTM, GRU), a multi-layer stack and weight copying."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RecurrentCell",
    "ElmanCell",
    "JordanCell",
    "LSTMCell",
    "GRUCell",
    "ReferenceRNN",
    "load_from_fused",
    "copy_to_fused",
    "count_parameters",
    "lengths_to_mask",
    "reverse_padded",
]

CellName = Literal["elman", "jordan", "lstm", "gru"]
CELL_CHOICES: tuple[str, ...] = ("elman", "jordan", "lstm", "gru")
NONLINEARITY_CHOICES: tuple[str, ...] = ("tanh", "relu")

State = tuple[Tensor, ...]


from modules import sequence as _sequence  # noqa: E402 - shared padded-batch helpers, re-exported below

check_choice, check_dropout = _sequence.check_choice, _sequence.check_dropout
check_padded_input, check_positive_int = _sequence.check_padded_input, _sequence.check_positive_int
lengths_to_mask, reverse_padded = _sequence.lengths_to_mask, _sequence.reverse_padded


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- cells


class RecurrentCell(nn.Module):
    """Base class of the reference cells: one time step of a recurrent layer.

    A cell splits a step into ``project_input`` (the part depending only on ``x_t``, computed for all
    steps at once by ``ReferenceRNN``) and ``step`` (the recurrence). ``forward`` chains both for a single
    step, like ``nn.LSTMCell``.

    Shapes:
        B: batch size, I: input size, H: hidden size, O: output size (``output_size``),
        S: the sizes of the state tensors (see ``init_state``).

    Attributes:
        kind: cell name, one of ``elman``, ``jordan``, ``lstm``, ``gru``.
        input_size: I.
        hidden_size: H.
        output_size: O, the width of what the cell emits each step.
    """

    kind: str = ""
    num_gates: int = 1

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch does for its recurrent modules."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def init_state(self, batch_size: int, like: Tensor) -> State:
        """Zero initial state (tuple of ``(B, S)`` tensors with the dtype and device of ``like``)."""
        return (like.new_zeros(batch_size, self.hidden_size),)

    def project_input(self, x: Tensor) -> Tensor:
        """Input part of the pre-activations: ``x (..., I) -> (..., G*H)``."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        """One recurrence step.

        Args:
            x_proj: ``(B, G*H)`` output of ``project_input`` for this step.
            state: previous state.

        Returns:
            ``(output (B, O), new_state, gates)`` where ``gates`` maps names to ``(B, H)`` tensors.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step from the raw input.

        Args:
            x: ``(B, I)`` input at time t.
            state: previous state, zeros when None.

        Returns:
            ``(output (B, O), new_state)``.
        """
        if state is None:
            state = self.init_state(x.size(0), x)
        output, new_state, _ = self.step(self.project_input(x), state)
        return output, new_state

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"


class ElmanCell(RecurrentCell):
    """Elman (simple) recurrent cell: the previous hidden state is fed back.

    ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with ``act`` tanh or relu. Parameters use the
    layout of ``nn.RNN`` (``weight_ih (H, I)``, ``weight_hh (H, H)``, ``bias_ih (H,)``, ``bias_hh (H,)``),
    so weights can be copied to and from it.

    Shapes:
        B: batch size, I: input size, H: hidden size. State: ``(h,)`` with ``h (B, H)``; output ``h_t (B, H)``.

    Args:
        input_size: I.
        hidden_size: H.
        nonlinearity: ``tanh`` or ``relu``.
    """

    kind = "elman"
    num_gates = 1

    def __init__(
        self, *, input_size: int, hidden_size: int, nonlinearity: Literal["tanh", "relu"] = "tanh"
    ) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        check_choice("nonlinearity", nonlinearity, NONLINEARITY_CHOICES)
        self.nonlinearity = nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        (h_prev,) = state
        pre = x_proj + F.linear(h_prev, self.weight_hh, self.bias_hh)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return h, (h,), {"hidden": h}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"


class JordanCell(RecurrentCell):
    """Jordan recurrent cell: the network's previous OUTPUT (not its hidden state) is fed back.

    ``h_t = act(W_ih x_t + W_yh y_{t-1} + b_h)`` and ``y_t = tanh(W_ho h_t + b_o)``, with ``y_{-1} = 0``
    and ``act`` tanh or relu. The state carried between steps is ``y`` only; ``h_{t-1}`` is never used.
    The cell emits ``y_t`` (size ``output_size``, default ``hidden_size``), and ``h_t`` is reported as a
    gate value. Unlike Elman, the fed-back signal passes through the output layer ``W_ho``, so changing
    ``W_ho`` changes ``h_t`` for ``t >= 1``.

    Parameters: ``weight_ih (H, I)``, ``weight_yh (H, O)``, ``bias_ih (H,)`` (= ``b_h``),
    ``weight_ho (O, H)``, ``bias_ho (O,)`` (= ``b_o``), i.e. ``H*I + H*O + H + O*H + O`` scalars
    (``H * (I + 2H + 2)`` when ``O == H``, against ``H * (I + H + 2)`` for Elman).

    Shapes:
        B: batch size, I: input size, H: hidden size, O: output size. State: ``(y,)`` with ``y (B, O)``;
        output ``y_t (B, O)``.

    Args:
        input_size: I.
        hidden_size: H.
        output_size: O; defaults to H.
        nonlinearity: hidden activation, ``tanh`` or ``relu`` (the output activation is always tanh).
    """

    kind = "jordan"
    num_gates = 1

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        check_choice("nonlinearity", nonlinearity, NONLINEARITY_CHOICES)
        if output_size is None:
            output_size = hidden_size
        check_positive_int("output_size", output_size)
        self.output_size = output_size
        self.nonlinearity = nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_yh = nn.Parameter(torch.empty(hidden_size, output_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.weight_ho = nn.Parameter(torch.empty(output_size, hidden_size))
        self.bias_ho = nn.Parameter(torch.empty(output_size))
        self.reset_parameters()

    def init_state(self, batch_size: int, like: Tensor) -> State:
        return (like.new_zeros(batch_size, self.output_size),)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        (y_prev,) = state
        pre = x_proj + F.linear(y_prev, self.weight_yh)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        y = torch.tanh(F.linear(h, self.weight_ho, self.bias_ho))
        return y, (y,), {"hidden": h, "output": y}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, output_size={self.output_size}, nonlinearity={self.nonlinearity!r}"


class LSTMCell(RecurrentCell):
    """Long short-term memory cell, optionally with peephole connections (Gers & Schmidhuber).

    With ``P = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` split into gate order i, f, g, o (as ``nn.LSTM``)::

        i_t = sigmoid(P_i + w_ci * c_{t-1})      (input gate)
        f_t = sigmoid(P_f + w_cf * c_{t-1})      (forget gate)
        g_t = tanh(P_g)                          (candidate)
        c_t = f_t * c_{t-1} + i_t * g_t          (memory cell)
        o_t = sigmoid(P_o + w_co * c_t)          (output gate)
        h_t = o_t * tanh(c_t)

    The peephole terms (diagonal weights ``weight_ci, weight_cf, weight_co``, each ``(H,)``, i.e. 3*H extra
    parameters) exist only when ``peephole=True``. Without them the cell matches ``nn.LSTM``, whose
    parameter layout it shares: ``weight_ih (4H, I)``, ``weight_hh (4H, H)``, ``bias_ih (4H,)``,
    ``bias_hh (4H,)``.

    Shapes:
        B: batch size, I: input size, H: hidden size. State: ``(h, c)``, both ``(B, H)``; output ``h_t (B, H)``.

    Args:
        input_size: I.
        hidden_size: H.
        peephole: add the diagonal peephole connections.
    """

    kind = "lstm"
    num_gates = 4

    def __init__(self, *, input_size: int, hidden_size: int, peephole: bool = False) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.peephole = bool(peephole)
        g = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        if self.peephole:
            self.weight_ci = nn.Parameter(torch.empty(hidden_size))
            self.weight_cf = nn.Parameter(torch.empty(hidden_size))
            self.weight_co = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def init_state(self, batch_size: int, like: Tensor) -> State:
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros.clone()

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        h_prev, c_prev = state
        pre = x_proj + F.linear(h_prev, self.weight_hh, self.bias_hh)
        p_i, p_f, p_g, p_o = pre.chunk(4, dim=-1)
        if self.peephole:
            p_i = p_i + self.weight_ci * c_prev
            p_f = p_f + self.weight_cf * c_prev
        i = torch.sigmoid(p_i)
        f = torch.sigmoid(p_f)
        g = torch.tanh(p_g)
        c = f * c_prev + i * g
        if self.peephole:
            p_o = p_o + self.weight_co * c
        o = torch.sigmoid(p_o)
        h = o * torch.tanh(c)
        gates = {"input_gate": i, "forget_gate": f, "output_gate": o, "candidate": g, "cell": c, "hidden": h}
        return h, (h, c), gates

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, peephole={self.peephole}"


class GRUCell(RecurrentCell):
    """Gated recurrent unit in torch's formulation (gate order r, z, n as ``nn.GRU``).

    ::

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)            (reset gate)
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)            (update gate)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))       (candidate)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Parameters: ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, ``bias_ih (3H,)``, ``bias_hh (3H,)``.

    Shapes:
        B: batch size, I: input size, H: hidden size. State: ``(h,)`` with ``h (B, H)``; output ``h_t (B, H)``.

    Args:
        input_size: I.
        hidden_size: H.
    """

    kind = "gru"
    num_gates = 3

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        g = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        (h_prev,) = state
        x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
        h_r, h_z, h_n = F.linear(h_prev, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h_prev
        return h, (h,), {"reset_gate": r, "update_gate": z, "candidate": n, "hidden": h}


def make_cell(
    cell: CellName,
    *,
    input_size: int,
    hidden_size: int,
    peephole: bool = False,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
) -> RecurrentCell:
    """Build one reference cell by name (``peephole`` only for lstm, ``relu`` only for elman/jordan)."""
    check_choice("cell", cell, CELL_CHOICES)
    check_choice("nonlinearity", nonlinearity, NONLINEARITY_CHOICES)
    if peephole and cell != "lstm":
        raise ValueError(f"peephole=True needs cell='lstm', found cell={cell!r}")
    if nonlinearity != "tanh" and cell not in ("elman", "jordan"):
        raise ValueError(
            f"nonlinearity={nonlinearity!r} needs cell in ['elman', 'jordan'], found cell={cell!r}"
        )
    if cell == "elman":
        return ElmanCell(input_size=input_size, hidden_size=hidden_size, nonlinearity=nonlinearity)
    if cell == "jordan":
        return JordanCell(input_size=input_size, hidden_size=hidden_size, nonlinearity=nonlinearity)
    if cell == "lstm":
        return LSTMCell(input_size=input_size, hidden_size=hidden_size, peephole=peephole)
    return GRUCell(input_size=input_size, hidden_size=hidden_size)


# --------------------------------------------------------------------------- multi-layer stack


def _run_direction(
    cell: RecurrentCell, x: Tensor, mask: Tensor, *, return_gates: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``cell`` left to right over ``x (B, T, I)``; the state freezes where ``mask (B, T)`` is False.

    Returns ``(out (B, T, O), gates)`` with zeros at masked steps; ``gates`` maps to ``(B, T, H)`` tensors
    (empty unless ``return_gates``).
    """
    batch, steps = x.shape[:2]
    x_proj = cell.project_input(x)
    state = cell.init_state(batch, x)
    valid = mask.unsqueeze(-1).to(x.dtype)
    outputs: list[Tensor] = []
    gate_steps: list[dict[str, Tensor]] = []
    for t in range(steps):
        out, new_state, gates = cell.step(x_proj[:, t], state)
        keep = mask[:, t].unsqueeze(-1)
        state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True))
        outputs.append(out)
        if return_gates:
            gate_steps.append(gates)
    if steps == 0:
        return x.new_zeros(batch, 0, cell.output_size), {}
    out = torch.stack(outputs, dim=1) * valid
    stacked: dict[str, Tensor] = {}
    if return_gates:
        for name in gate_steps[0]:
            stacked[name] = torch.stack([g[name] for g in gate_steps], dim=1) * valid
    return out, stacked


class ReferenceRNN(nn.Module):
    """Multi-layer, optionally bidirectional stack of reference cells with exact length handling.

    Every layer runs each direction with a plain Python time loop over one of ``ElmanCell``,
    ``JordanCell``, ``LSTMCell`` or ``GRUCell``. The state is not updated past a sequence's length, and
    the backward direction reverses every sequence within its own length (it starts at that sequence's
    last valid step), so a sequence gives the same output alone as inside a padded batch. Outputs are
    zero at padded positions. Dropout is applied to the outputs of every layer but the last. With
    ``cell="jordan"`` each direction emits its output ``y_t`` (size H), not its hidden state.

    Weight layout of lstm/gru/elman cells equals ``nn.LSTM/nn.GRU/nn.RNN``; see ``load_from_fused`` and
    ``copy_to_fused``.

    Shapes:
        B: batch size, T: padded length, F: input size, H: hidden size, D: 2 if bidirectional else 1.
        Input ``x (B, T, F)``, ``lengths (B,)`` int64; output ``(B, T, D*H)``, ``lengths (B,)``.

    Args:
        cell: ``elman``, ``jordan``, ``lstm`` or ``gru``.
        input_size: F.
        hidden_size: H.
        num_layers: number of stacked layers.
        bidirectional: add a backward direction to each layer.
        dropout: dropout probability between layers.
        peephole: LSTM peephole connections (``cell="lstm"`` only).
        nonlinearity: ``tanh`` or ``relu`` hidden activation (``elman``/``jordan`` only).
    """

    def __init__(
        self,
        *,
        cell: CellName = "lstm",
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        peephole: bool = False,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
    ) -> None:
        super().__init__()
        check_choice("cell", cell, CELL_CHOICES)
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_dropout(dropout)
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.peephole = bool(peephole)
        self.nonlinearity = nonlinearity
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.num_directions * hidden_size
            self.cells.append(
                nn.ModuleList(
                    make_cell(
                        cell,
                        input_size=layer_input,
                        hidden_size=hidden_size,
                        peephole=peephole,
                        nonlinearity=nonlinearity,
                    )
                    for _ in range(self.num_directions)
                )
            )
        self.dropout = nn.Dropout(dropout)

    @property
    def output_size(self) -> int:
        """Width of the output features, ``D * H``."""
        return self.num_directions * self.hidden_size

    def layer_direction_units(self) -> list[list[nn.Module]]:
        """Cells as ``[layer][direction]`` (direction 1 is backward), used by the weight-copy helpers."""
        return [list(layer) for layer in self.cells]

    def forward(
        self, x: Tensor, lengths: Tensor, return_gates: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[list[dict[str, Tensor]]]]:
        """Run the stack.

        Args:
            x: ``(B, T, F)`` padded input.
            lengths: ``(B,)`` int64 valid lengths.
            return_gates: also return per-step gate values.

        Returns:
            ``(out (B, T, D*H), lengths)``, plus, when ``return_gates``, a list ``[layer][direction]`` of
            dicts of ``(B, T, H)`` tensors in input time order, zero at padded steps: lstm ``input_gate,
            forget_gate, output_gate, candidate, cell, hidden``; gru ``reset_gate, update_gate,
            candidate, hidden``; elman ``hidden``; jordan ``hidden, output``.
        """
        check_padded_input(x, lengths, self.input_size)
        mask = lengths_to_mask(lengths.to(x.device), x.size(1))
        all_gates: list[list[dict[str, Tensor]]] = []
        h = x
        for index, layer in enumerate(self.cells):
            outs: list[Tensor] = []
            layer_gates: list[dict[str, Tensor]] = []
            for direction, cell in enumerate(layer):
                if direction == 0:
                    out, gates = _run_direction(cell, h, mask, return_gates=return_gates)
                else:
                    out, gates = _run_direction(
                        cell, reverse_padded(h, lengths), mask, return_gates=return_gates
                    )
                    out = reverse_padded(out, lengths)
                    gates = {name: reverse_padded(v, lengths) for name, v in gates.items()}
                outs.append(out)
                layer_gates.append(gates)
            h = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            if index < self.num_layers - 1:
                h = self.dropout(h)
            all_gates.append(layer_gates)
        if return_gates:
            return h, lengths, all_gates
        return h, lengths

    def extra_repr(self) -> str:
        return (
            f"cell={self.cell!r}, input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, peephole={self.peephole}, "
            f"nonlinearity={self.nonlinearity!r}"
        )


# --------------------------------------------------------------------------- weight copying

_TORCH_MODES = {
    "LSTM": ("lstm", "tanh"),
    "GRU": ("gru", "tanh"),
    "RNN_TANH": ("elman", "tanh"),
    "RNN_RELU": ("elman", "relu"),
}
_FUSED_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _Unit:
    """One layer-direction of a recurrent module: its kind and its parameters under canonical names."""

    def __init__(self, kind: str, nonlinearity: str, params: dict[str, Tensor], where: str) -> None:
        self.kind = kind
        self.nonlinearity = nonlinearity
        self.params = params
        self.where = where


def _torch_unit(module: nn.RNNBase, layer: int, direction: int, where: str) -> _Unit:
    if module.mode not in _TORCH_MODES:
        raise ValueError(f"unsupported torch recurrent mode {module.mode!r} ({where})")
    if not module.bias:
        raise ValueError(f"torch recurrent module needs bias=True to match reference cells ({where})")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"torch LSTM with proj_size > 0 has no reference counterpart ({where})")
    kind, nonlinearity = _TORCH_MODES[module.mode]
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    params = {name: getattr(module, name + suffix) for name in _FUSED_NAMES}
    return _Unit(kind, nonlinearity, params, where)


def _unit(module: nn.Module, where: str) -> _Unit:
    if isinstance(module, RecurrentCell):
        nonlinearity = getattr(module, "nonlinearity", "tanh")
        return _Unit(module.kind, nonlinearity, dict(module.named_parameters()), where)
    if isinstance(module, nn.RNNBase):
        if module.num_layers != 1 or module.bidirectional:
            raise ValueError(f"a per-direction unit must be a single-layer unidirectional module ({where})")
        return _torch_unit(module, 0, 0, where)
    raise TypeError(f"unsupported recurrent unit {type(module).__name__} ({where})")


def _grid(module: nn.Module, role: str) -> list[list[_Unit]]:
    """Units of ``module`` as ``[layer][direction]``.

    Supported: ``nn.LSTM/nn.GRU/nn.RNN`` (any number of layers, uni- or bidirectional), and any module
    with a ``layer_direction_units()`` method returning reference cells or single-layer unidirectional
    torch modules (``ReferenceRNN``, ``modules.encoders.RecurrentEncoder``).
    """
    if isinstance(module, nn.RNNBase):
        directions = 2 if module.bidirectional else 1
        return [
            [_torch_unit(module, layer, d, f"{role} layer {layer} direction {d}") for d in range(directions)]
            for layer in range(module.num_layers)
        ]
    units = getattr(module, "layer_direction_units", None)
    if units is None:
        raise TypeError(
            f"{role} must be nn.LSTM/nn.GRU/nn.RNN or have layer_direction_units(), found {type(module).__name__}"
        )
    return [
        [_unit(unit, f"{role} layer {layer} direction {d}") for d, unit in enumerate(row)]
        for layer, row in enumerate(units())
    ]


def _copy_recurrent(src: nn.Module, dst: nn.Module) -> None:
    """Copy every layer-direction's parameters from ``src`` into ``dst`` after checking they match."""
    src_grid, dst_grid = _grid(src, "source"), _grid(dst, "destination")
    src_shape = (len(src_grid), len(src_grid[0]) if src_grid else 0)
    dst_shape = (len(dst_grid), len(dst_grid[0]) if dst_grid else 0)
    if src_shape != dst_shape:
        raise ValueError(
            f"layers x directions differ: expected {dst_shape} (destination), found {src_shape} (source)"
        )
    pairs = [
        (s, d)
        for src_row, dst_row in zip(src_grid, dst_grid, strict=True)
        for s, d in zip(src_row, dst_row, strict=True)
    ]
    for s, d in pairs:
        if (s.kind, s.nonlinearity) != (d.kind, d.nonlinearity):
            raise ValueError(
                f"cell mismatch at {d.where}: expected {d.kind}/{d.nonlinearity}, found {s.kind}/{s.nonlinearity}"
            )
        if set(s.params) != set(d.params):
            raise ValueError(
                f"parameter names differ at {d.where}: expected {sorted(d.params)}, found {sorted(s.params)}"
                " (peephole and jordan weights exist only in the reference implementation)"
            )
        for name, p in d.params.items():
            if p.shape != s.params[name].shape:
                raise ValueError(
                    f"shape of {name} differs at {d.where}: expected {tuple(p.shape)}, "
                    f"found {tuple(s.params[name].shape)}"
                )
    with torch.no_grad():
        for s, d in pairs:
            for name, p in d.params.items():
                p.copy_(s.params[name])


def load_from_fused(ref_module: nn.Module, fused_module: nn.Module) -> None:
    """Copy weights from a fused module into a reference one, in place.

    Args:
        ref_module: ``ReferenceRNN`` (or any module with ``layer_direction_units()``, such as a
            ``RecurrentEncoder``) whose layer-direction parameters are overwritten.
        fused_module: ``nn.LSTM/nn.GRU/nn.RNN`` (uses ``weight_ih_l{k}[_reverse]`` etc.) or a
            ``RecurrentEncoder`` (its per-layer per-direction single-layer torch modules).

    Only recurrent weights are copied (not an encoder's projection). Raises ValueError when cell type,
    nonlinearity, number of layers/directions, parameter names (peephole) or shapes differ.
    """
    _copy_recurrent(fused_module, ref_module)


def copy_to_fused(ref_module: nn.Module, fused_module: nn.Module) -> None:
    """Copy weights from a reference module into a fused one, in place (inverse of ``load_from_fused``)."""
    _copy_recurrent(ref_module, fused_module)
