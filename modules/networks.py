"""Networks built from nested options: the frontend and the recurrent encoder from two mappings.

Every audio task starts with the same pair, a :class:`~modules.frontend.LogMelFrontend` and a
:class:`~modules.encoders.RecurrentEncoder` over its frames, and adds its own head. The pair is described by two
plain mappings (``frontend`` and ``encoder``, as ESPnet2's ``frontend_conf`` / ``encoder_conf``): the keyword
arguments of the two classes, with the encoder's ``input_size`` taken from the frontend. A new encoder option is
then a key in a config, not an edit to every task.

Example::

    model = CTCAcousticModel.from_options(frontend={"n_mels": 80, "stack_frames": 3},
                                          encoder={"hidden_size": 256, "num_layers": 3}, vocab_size=30)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from modules.encoders import RecurrentEncoder
from modules.frontend import LogMelFrontend

__all__ = ["FrontendEncoderModel", "build_encoder", "build_frontend"]


def build_frontend(options: Mapping[str, Any]) -> LogMelFrontend:
    """A log-mel frontend from the keyword arguments of :class:`LogMelFrontend`."""
    return LogMelFrontend(**options)


def build_encoder(options: Mapping[str, Any], *, input_size: int) -> RecurrentEncoder:
    """A recurrent encoder over ``input_size`` features from the keyword arguments of :class:`RecurrentEncoder`.

    ``implementation: auto`` (or absent) picks torch's fused kernels where they exist and the from-scratch cells
    for ``cell: jordan``.
    """
    opts = dict(options)
    if opts.get("implementation", "auto") == "auto":
        opts["implementation"] = "reference" if opts.get("cell") == "jordan" else "fused"
    return RecurrentEncoder(input_size=input_size, **opts)


class FrontendEncoderModel(nn.Module):
    """Base of the networks that read waveforms through ``self.frontend`` then ``self.encoder``.

    Subclasses take ``frontend=`` and ``encoder=`` modules (plus their own keyword arguments) and pass them to
    ``super().__init__``, which checks that the encoder reads the frontend's features; :meth:`from_options`
    builds both from nested options first.
    """

    def __init__(self, *, frontend: LogMelFrontend, encoder: RecurrentEncoder) -> None:
        super().__init__()
        if frontend.output_size != encoder.input_size:
            raise ValueError(f"encoder input_size ({encoder.input_size}) must equal the frontend output size "
                             f"(n_mels * stack_frames = {frontend.output_size})")
        self.frontend = frontend
        self.encoder = encoder

    @classmethod
    def from_options(cls, *, frontend: Mapping[str, Any], encoder: Mapping[str, Any], **kwargs: Any):
        """The network with a frontend built from ``frontend`` and an encoder from ``encoder`` over its frames."""
        fe = build_frontend(frontend)
        return cls(frontend=fe, encoder=build_encoder(encoder, input_size=fe.output_size), **kwargs)
