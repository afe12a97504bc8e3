"""Look inside a CTC speech model on one utterance: per-frame posteriors and the first LSTM layer's gates.

:func:`inspect_ctc` returns plain lists (JSON-ready) for the server's look-inside view: the CTC posteriors over
time (blank included: the argmax symbol and its probability per frame, the top ``k`` symbols, the whole matrix)
and, for a fused LSTM encoder, the input/forget/output gate activations of its first layer's forward direction,
recomputed from the trained weights with the from-scratch cell as ``rnnlab analyze gates`` does
(:func:`modules.analysis.lstm_gates_from_fused` on the layer's actual input, the frontend features).
"""

from __future__ import annotations

import torch

from pipelines.inference.errors import InferenceError

GATES = ("input_gate", "forget_gate", "output_gate")


def _round(rows, digits: int = 4):
    if isinstance(rows, list):
        return [_round(r, digits) for r in rows]
    return round(float(rows), digits)


def frame_rate(model) -> float:
    """Output frames per second of a CTC model (log-mel hop times frame stacking, pyramid halvings)."""
    fe = model.model.frontend
    rate = fe.sample_rate / (fe.hop_length * fe.stack_frames)
    return rate / 2 ** int(getattr(model.model.encoder, "pyramid_layers", 0))


def symbols(model) -> list[str]:
    """The output symbols in id order (the blank as ``<blank>``)."""
    return [str(t) for t in model.tokenizer.tokens]


@torch.no_grad()
def ctc_posteriors(model, wav: torch.Tensor, *, top_k: int = 5) -> dict:
    """Per-frame CTC posteriors of ``wav`` (mono, at the model's rate) and the greedy text.

    Returns:
        ``{"frames", "frame_rate", "symbols", "blank", "argmax", "argmax_prob", "top": [[[symbol id, prob] x k]
        per frame], "posteriors": (frames, vocab) probabilities, "text", "posteriors_from"}``. For a transducer
        the posteriors are those of its auxiliary CTC head and the text is the transducer's greedy transcript.
    """
    device = next(model.parameters()).device
    log_probs, lengths = model(wav.reshape(1, -1).to(device), torch.tensor([wav.numel()], device=device))
    n = int(lengths[0])
    probs = log_probs[0, :n].float().exp().cpu()  # (T, V)
    k = min(top_k, probs.size(1))
    top_p, top_i = probs.topk(k, dim=-1)
    best_p, best_i = probs.max(-1)
    out = {
        "frames": n,
        "frame_rate": frame_rate(model),
        "symbols": symbols(model),
        "blank": int(model.tokenizer.blank),
        "argmax": best_i.tolist(),
        "argmax_prob": _round(best_p.tolist()),
        "top": [[[i, round(p, 4)] for i, p in zip(ii, pp, strict=True)]
                for ii, pp in zip(top_i.tolist(), top_p.tolist(), strict=True)],
        "posteriors": _round(probs.tolist(), 3),
        "text": model.decode_greedy(log_probs, lengths)[0],
        "posteriors_from": "ctc",
    }
    if getattr(getattr(model, "model", None), "joiner", None) is not None:
        # A transducer: the posteriors are its auxiliary CTC head's; the text is the transducer's own greedy one.
        out["posteriors_from"] = "the transducer's auxiliary CTC head"
        out["text"] = model.transcribe_waveforms([wav.to(device)])[0]
    return out


@torch.no_grad()
def first_layer_gates(model, wav: torch.Tensor, *, units: int = 32) -> dict:
    """Gate activations of the first encoder layer (forward direction) of a fused-LSTM CTC model on ``wav``.

    Returns:
        ``{"available": True, "layer": 0, "direction": "forward", "hidden_size", "units", "mean": {gate: [per
        frame]}, "forget_units": (frames, units)}`` with the gates ``input_gate``, ``forget_gate``,
        ``output_gate``; or ``{"available": False, "reason"}`` for an encoder that has no LSTM gates to show.
    """
    from modules.analysis import lstm_gates_from_fused

    encoder = model.model.encoder
    if encoder.cell != "lstm":
        return {"available": False, "reason": f"the encoder is a {encoder.cell.upper()}: no LSTM gates"}
    if encoder.implementation != "fused":
        return {"available": False, "reason": "the encoder uses the reference cells (gates read fused weights)"}
    device = next(model.parameters()).device
    feats, _ = model.model.frontend(wav.reshape(1, -1).to(device), torch.tensor([wav.numel()], device=device))
    _, gates = lstm_gates_from_fused(encoder.layers[0][0], feats.float())
    shown = min(units, encoder.hidden_size)
    return {
        "available": True,
        "layer": 0,
        "direction": "forward",
        "hidden_size": int(encoder.hidden_size),
        "units": shown,
        "mean": {g: _round(gates[g][0].mean(-1).cpu().tolist()) for g in GATES},
        "forget_units": _round(gates["forget_gate"][0, :, :shown].cpu().tolist(), 3),
    }


def inspect_ctc(model, wav: torch.Tensor, *, top_k: int = 5, units: int = 32) -> dict:
    """:func:`ctc_posteriors` and :func:`first_layer_gates` (under ``"gates"``) of one utterance.

    Raises:
        InferenceError: not a CTC model, or audio too short for one frame.
    """
    from pipelines.ctc import CTCSpeechRecognizer

    if not isinstance(model, CTCSpeechRecognizer):
        raise InferenceError(f"look-inside needs a CTC speech model, not a {type(model).__name__}")
    if wav.numel() < 2:
        raise InferenceError("audio too short to look inside")
    out = ctc_posteriors(model, wav, top_k=top_k)
    out["duration"] = round(wav.numel() / model.sample_rate, 3)
    out["gates"] = first_layer_gates(model, wav, units=units)
    return out
