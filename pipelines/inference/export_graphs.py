"""The graphs ``rnnlab export`` writes and how it checks them: the exportable CTC model and the transducer's
encoder, predictor step and joiner; greedy decoding driven by exported graphs; parity checks against PyTorch;
the TorchScript and ONNX exporters. A checkpoint's export is :mod:`pipelines.inference.export`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules.frontend import normalize_utterances
from pipelines.inference.errors import first_line, quiet

FORMATS = ("torchscript", "onnx")
DEFAULT_OPSET = 17
INPUT_NAMES = ["waveforms", "lengths"]
OUTPUT_NAMES = ["log_probs", "output_lengths"]
FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
# What an export writes into its --out directory (the formats asked for, then the files that describe them).
OUTPUTS = (*FILES.values(), "tokenizer.json", "export.json", "README.md")
# Largest |exported - PyTorch| accepted on valid frames when an export checks itself (float32 rounding is ~1e-6).
CHECK_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GraphSpec:
    """Names of a graph's inputs and outputs, in order, and their dynamic axes (``{name: {dim: axis name}}``)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: dict[str, dict[int, str]] = field(default_factory=dict)


CTC_GRAPH = GraphSpec(tuple(INPUT_NAMES), tuple(OUTPUT_NAMES),
                      {"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                       "log_probs": {0: "batch", 1: "frames"}, "output_lengths": {0: "batch"}})
# The transducer's three graphs, in the order they are exported and checked.
TRANSDUCER_GRAPHS = {
    "encoder": GraphSpec(("waveforms", "lengths"), ("encoder_out", "output_lengths"),
                         {"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                          "encoder_out": {0: "batch", 1: "frames"}, "output_lengths": {0: "batch"}}),
    "predictor": GraphSpec(("tokens", "h", "c"), ("prediction", "h_out", "c_out"),
                           {"tokens": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"},
                            "prediction": {0: "batch"}, "h_out": {1: "batch"}, "c_out": {1: "batch"}}),
    "joiner": GraphSpec(("encoder_frame", "prediction"), ("logits",),
                        {"encoder_frame": {0: "batch"}, "prediction": {0: "batch"}, "logits": {0: "batch"}}),
}
TRANSDUCER_FILES = {fmt: {name: f"{name}.{ext}" for name in TRANSDUCER_GRAPHS}
                    for fmt, ext in (("torchscript", "ts"), ("onnx", "onnx"))}


class ExportableCTC(nn.Module):
    """The eval-mode CTC acoustic model in ops that trace and export with dynamic batch and time axes.

    Same numbers as :class:`modules.ctc.CTCAcousticModel` in eval mode: reflect-padded STFT (a strided
    ``conv1d`` with the windowed DFT basis), power, mel filterbank, log, the frontend's normalisation over
    valid frames, frame stacking without data-dependent branches, then the model's own encoder (:meth:`encode`)
    and head.

    Shape:
        - waveforms ``(B, S)`` float32 (zero-padded, ``S >= n_fft // 2 + 1``), lengths ``(B,)`` int64 samples
        - log_probs ``(B, T, V)`` float32, output_lengths ``(B,)`` int64 frames (rows are zero past their length
          before the log-softmax, so only the first ``output_lengths[b]`` frames are meaningful)
    """

    def __init__(self, acoustic_model: nn.Module) -> None:
        super().__init__()
        frontend = acoustic_model.frontend
        encoder = copy.deepcopy(acoustic_model.encoder).eval()
        if encoder.implementation != "fused" or encoder.pyramid_layers:
            raise ValueError("export supports fused encoders without pyramid layers")
        if frontend.normalize not in ("utterance", "global", "none"):
            raise ValueError(f"export does not know the frontend normalisation {frontend.normalize!r}")
        encoder.length_handling = "reverse"  # same numbers as "packed", in plain tensor ops
        self.encoder = encoder
        self.head = copy.deepcopy(acoustic_model.head).eval()
        spec = frontend.melspec.spectrogram
        self.n_fft = int(spec.n_fft)
        self.hop_length = int(frontend.hop_length)
        self.stack_frames = int(frontend.stack_frames)
        self.normalize = frontend.normalize
        if self.normalize == "global":
            self.register_buffer("feat_mean", frontend.feat_mean.detach().clone().float(), persistent=False)
            self.register_buffer("feat_std", (frontend.feat_var.detach().float() + 1e-5).sqrt(), persistent=False)
        self.sample_rate = int(frontend.sample_rate)
        window = spec.window.detach().double()
        # torch.stft centres a window shorter than n_fft inside n_fft zeros.
        left = (self.n_fft - window.numel()) // 2
        full = torch.zeros(self.n_fft, dtype=torch.float64)
        full[left:left + window.numel()] = window
        bins = self.n_fft // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64),
                                          torch.arange(self.n_fft, dtype=torch.float64)) / self.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * full  # (2 * bins, n_fft): real, imaginary
        self.register_buffer("dft_basis", basis.float().unsqueeze(1), persistent=False)
        self.register_buffer("mel_fb", frontend.melspec.mel_scale.fb.detach().clone().float(), persistent=False)
        self.eval()

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames ``(B, T, D)`` and their lengths ``(B,)``: the frontend, then the encoder."""
        half = self.n_fft // 2
        x = F.pad(waveforms.float().unsqueeze(1), (half, half), mode="reflect")  # (B, 1, S + n_fft)
        spec = F.conv1d(x, self.dft_basis, stride=self.hop_length)  # (B, 2 * bins, T)
        bins = half + 1
        power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
        feats = torch.matmul(power.transpose(1, 2), self.mel_fb).clamp_min(1e-10).log()  # (B, T, n_mels)
        steps = feats.size(1)
        frame_lengths = torch.clamp(torch.div(lengths, self.hop_length, rounding_mode="floor") + 1, max=steps)
        mask = (torch.arange(steps, device=feats.device)[None, :] < frame_lengths[:, None]).unsqueeze(-1)
        if self.normalize == "utterance":
            feats = normalize_utterances(feats, mask, frame_lengths)
        elif self.normalize == "global":
            feats = (feats - self.feat_mean) / self.feat_std
        feats = feats * mask
        k = self.stack_frames
        if k > 1:
            # Zero-pad to a multiple of k, then concatenate each group of k frames.
            stacked = (steps + k - 1) // k  # traced as a size expression, not a constant
            feats = F.pad(feats, (0, 0, 0, k - 1))[:, : stacked * k]
            feats = feats.reshape(feats.size(0), -1, k * feats.size(2))
            frame_lengths = torch.div(frame_lengths + k - 1, k, rounding_mode="floor")
        return self.encoder(feats, frame_lengths)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, enc_lengths = self.encode(waveforms, lengths)
        return self.head(enc), enc_lengths


class ExportableTransducerEncoder(ExportableCTC):
    """The transducer's ``encoder`` graph: :class:`ExportableCTC`'s frontend and encoder, then the joiner's
    encoder projection (applied once per frame here, so the joiner graph adds the two projections only).

    Shape:
        - waveforms ``(B, S)`` float32, lengths ``(B,)`` int64 samples (as :class:`ExportableCTC`)
        - encoder_out ``(B, T, J)`` float32, output_lengths ``(B,)`` int64 frames (only the first
          ``output_lengths[b]`` frames of a row are meaningful)
    """

    def __init__(self, acoustic_model: nn.Module) -> None:
        super().__init__(acoustic_model)
        del self.head  # the auxiliary CTC head is not part of transducer decoding
        self.enc_proj = copy.deepcopy(acoustic_model.joiner.enc_proj).eval()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, enc_lengths = self.encode(waveforms, lengths)
        return self.enc_proj(enc), enc_lengths


class ExportablePredictor(nn.Module):
    """The transducer's ``predictor`` graph: one step of the prediction network, then the joiner's prediction
    projection.

    Shape:
        - tokens ``(B,)`` int64 (the previous emitted token; the blank id before the first), h and c
          ``(layers, B, H)`` float32 (zeros before the first step)
        - prediction ``(B, J)`` float32, h_out and c_out ``(layers, B, H)`` float32 (the next state)
    """

    def __init__(self, acoustic_model: nn.Module) -> None:
        super().__init__()
        predictor = acoustic_model.predictor
        self.embed = copy.deepcopy(predictor.embed)
        self.lstm = copy.deepcopy(predictor.lstm)
        self.pred_proj = copy.deepcopy(acoustic_model.joiner.pred_proj)
        self.layers = int(self.lstm.num_layers)
        self.hidden_size = int(self.lstm.hidden_size)
        self.eval()

    def forward(self, tokens: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h_out, c_out) = self.lstm(self.embed(tokens).unsqueeze(1), (h, c))
        return self.pred_proj(out[:, 0]), h_out, c_out


class ExportableJoiner(nn.Module):
    """The transducer's ``joiner`` graph on projected inputs: ``out(tanh(encoder_frame + prediction))``.

    Shape:
        - encoder_frame ``(B, J)`` (a frame of the encoder graph's output), prediction ``(B, J)`` float32
        - logits ``(B, V)`` float32 over the tokens (blank included)
    """

    def __init__(self, acoustic_model: nn.Module) -> None:
        super().__init__()
        self.out = copy.deepcopy(acoustic_model.joiner.out)
        self.eval()

    def forward(self, encoder_frame: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(encoder_frame + prediction))


# -- decoding with exported graphs -------------------------------------------------------------------------------

# A graph as a function: numpy arrays in (the graph's inputs, in order), its outputs as a sequence of arrays.
Runner = Callable[..., Sequence[np.ndarray]]


def greedy_with_graphs(run_encoder: Runner, run_predictor: Runner, run_joiner: Runner, waveforms: np.ndarray,
                       lengths: np.ndarray, *, blank: int, max_symbols: int, layers: int,
                       hidden_size: int) -> list[list[int]]:
    """Frame-synchronous greedy transducer decoding driven by the three exported graphs (any backend).

    Each row is decoded on its own: start with the blank token and zero LSTM states; at each valid frame emit
    the joiner's argmax until blank wins or ``max_symbols`` tokens were emitted at that frame; the prediction
    network advances on emitted tokens only. Same tokens as :func:`modules.transducer.greedy_search`.

    Args:
        run_encoder / run_predictor / run_joiner: The graphs (see :func:`onnx_runner`, :func:`torch_runner`).
        waveforms: ``(B, S)`` float32; lengths ``(B,)`` int64 samples.

    Returns:
        Token ids per row (the blank never appears).
    """
    enc, frames = run_encoder(np.asarray(waveforms, dtype=np.float32), np.asarray(lengths, dtype=np.int64))
    hyps = []
    for b in range(enc.shape[0]):
        zeros = np.zeros((layers, 1, hidden_size), dtype=np.float32)
        pred, h, c = run_predictor(np.array([blank], dtype=np.int64), zeros, zeros)
        ids: list[int] = []
        for t in range(int(frames[b])):
            frame = np.ascontiguousarray(enc[b:b + 1, t])
            for _ in range(max_symbols):
                (logits,) = run_joiner(frame, pred)
                k = int(logits[0].argmax())
                if k == blank:
                    break
                ids.append(k)
                pred, h, c = run_predictor(np.array([k], dtype=np.int64), h, c)
        hyps.append(ids)
    return hyps


def onnx_runner(session, graph: GraphSpec) -> Runner:
    """An onnxruntime session of ``graph`` as a :data:`Runner`."""

    def run(*arrays: np.ndarray) -> Sequence[np.ndarray]:
        return session.run(list(graph.outputs), dict(zip(graph.inputs, arrays, strict=True)))

    return run


def torch_runner(module) -> Runner:
    """A PyTorch or TorchScript module as a :data:`Runner` (no autograd)."""

    def run(*arrays: np.ndarray) -> Sequence[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [o.numpy() for o in (out if isinstance(out, tuple | list) else (out,))]

    return run


# -- checks ------------------------------------------------------------------------------------------------------


def check_inputs(sample_rate: int, n_fft: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic speech-like test batches: single rows of several lengths and a padded batch of two."""
    gen = torch.Generator().manual_seed(seed)

    def signal(n: int) -> torch.Tensor:
        t = torch.arange(n) / sample_rate
        tones = sum(torch.sin(2 * math.pi * f * t * (1 + 0.1 * torch.sin(2 * math.pi * 3 * t)))
                    for f in (180.0, 730.0, 2300.0))
        return 0.1 * tones * (0.6 + 0.4 * torch.sin(2 * math.pi * 2 * t)) + 0.01 * torch.randn(n, generator=gen)

    out = []
    for seconds in (0.3, 1.0, 2.7):
        n = max(int(seconds * sample_rate), n_fft // 2 + 1)
        out.append((signal(n)[None], torch.tensor([n])))
    long, short = int(1.3 * sample_rate), int(0.55 * sample_rate)
    batch = torch.zeros(2, long)
    batch[0], batch[1, :short] = signal(long), signal(short)
    out.append((batch, torch.tensor([long, short])))
    return out


def max_valid_diff(ref: torch.Tensor, ref_lengths: torch.Tensor, out, out_lengths) -> float:
    """Largest absolute difference over each row's valid frames; raises if the output lengths differ."""
    out, out_lengths = torch.as_tensor(out), torch.as_tensor(out_lengths)
    if not torch.equal(ref_lengths.cpu().long(), out_lengths.cpu().long()):
        raise ValueError(f"output lengths differ: {ref_lengths.tolist()} vs {out_lengths.tolist()}")
    return max(float((ref[b, :n] - out[b, :n]).abs().max()) if n else 0.0
               for b, n in enumerate(ref_lengths.tolist()))


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lp, ol = session.run(OUTPUT_NAMES, {"waveforms": waveforms.float().numpy(), "lengths": lengths.long().numpy()})
    return torch.from_numpy(lp), torch.from_numpy(ol)


def predictor_check_inputs(vocab_size: int, layers: int, hidden_size: int, *, blank: int,
                           seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Deterministic ``(tokens, h, c)`` batches for the predictor graph: the first step (the blank token, zero
    states), then batches of 2 and 5 random tokens and states."""
    gen = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(layers, 1, hidden_size)
    out = [(torch.tensor([blank]), zeros, zeros.clone())]
    for batch in (2, 5):
        out.append((torch.randint(0, vocab_size, (batch,), generator=gen),
                    torch.randn(layers, batch, hidden_size, generator=gen) * 0.5,
                    torch.randn(layers, batch, hidden_size, generator=gen)))
    return out


def joiner_check_inputs(joiner_size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic ``(encoder_frame, prediction)`` batches of 1, 2 and 5 rows for the joiner graph."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, joiner_size, generator=gen), torch.randn(batch, joiner_size, generator=gen))
            for batch in (1, 2, 5)]


def max_abs_diff(ref: Sequence[torch.Tensor], out: Sequence) -> float:
    """Largest absolute difference over every output of a graph; raises if a shape differs."""
    worst = 0.0
    for r, o in zip(ref, out, strict=True):
        o = torch.as_tensor(o)
        if tuple(r.shape) != tuple(o.shape):
            raise ValueError(f"output shape {tuple(o.shape)} differs from PyTorch's {tuple(r.shape)}")
        if r.numel():
            worst = max(worst, float((r.double() - o.double()).abs().max()))
    return worst


# -- exporters ---------------------------------------------------------------------------------------------------


def export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """Traces ``module`` on ``example`` (sizes are traced, so batch and time stay dynamic) and saves it."""
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(module, example, check_trace=False)
    torch.jit.save(traced, str(path))


def _onnx_dims(path: Path) -> dict[str, list]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}


def export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, *,
                opset: int = DEFAULT_OPSET, exporter: str = "legacy", graph: GraphSpec = CTC_GRAPH) -> dict:
    """Writes ``module`` as ONNX with the dynamic axes of ``graph`` (the CTC model's by default); returns
    ``{"exporter", "opset"}``.

    ``exporter``: ``legacy`` (``torch.onnx.export(dynamo=False)``) or ``dynamo`` (``dynamo=True``; raises
    ``ValueError`` when it fails or fixes a dynamic axis).
    """
    if exporter == "dynamo":
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise ValueError("--onnx-exporter dynamo needs the onnxscript package (pip install onnxscript)")
        opset = max(opset, 18)  # the lowest opset the dynamo exporter writes
        try:
            dims: dict[str, torch.export.Dim] = {}
            for axes in graph.axes.values():
                for axis in axes.values():
                    if axis not in dims:
                        dims[axis] = (torch.export.Dim(axis, min=module.n_fft) if axis == "samples"
                                      else torch.export.Dim(axis))
            shapes = tuple({i: dims[a] for i, a in graph.axes.get(name, {}).items()} or None
                           for name in graph.inputs)
            with torch.no_grad(), quiet():
                torch.onnx.export(module, example, str(path), dynamo=True, opset_version=opset,
                                  input_names=list(graph.inputs), output_names=list(graph.outputs),
                                  external_data=False, dynamic_shapes=shapes, verbose=False)
            found = _onnx_dims(path)
            fixed = [f"{name}[{i}]" for name, axes in graph.axes.items() for i in axes
                     if not isinstance(found[name][i], str)]
            if fixed:
                raise ValueError(f"the graph has fixed sizes for {', '.join(fixed)}")
        except Exception as e:  # noqa: BLE001 - reported as one line
            path.unlink(missing_ok=True)
            raise ValueError(f"ONNX export with dynamo=True failed ({first_line(e)}); "
                             f"use --onnx-exporter legacy") from None
        return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset}
    if exporter != "legacy":
        raise ValueError(f"unknown ONNX exporter {exporter!r} (expected legacy|dynamo)")
    with torch.no_grad(), quiet():
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(graph.inputs), output_names=list(graph.outputs),
                          dynamic_axes=graph.axes, do_constant_folding=True)
    return {"exporter": "torch.onnx.export(dynamo=False)", "opset": opset}
