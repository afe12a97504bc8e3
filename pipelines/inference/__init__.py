"""Inference shared by every command and the server: load a checkpoint or a shipped model, read audio, decode.

- :func:`load_model` takes a checkpoint path, a shipped model's name (``english``; :mod:`pipelines.inference.
  shipped`) or ``hf://owner/repo/file.ckpt``, checks it (weights only, nothing in it runs; shipped models by
  checksum) and returns the pipeline in eval mode, or raises :class:`InferenceError` with one line.
- :func:`read_audio` / :func:`read_audio_bytes`: the one audio reader (WAV/FLAC/OGG and more, any rate).
- :func:`make_decoder` / :func:`make_streamer`: beam search with an optional LM; chunked streaming.
- :mod:`~pipelines.inference.keywords` (a sliding-window keyword spotter), :mod:`~pipelines.inference.inspect`
  (CTC posteriors and LSTM gates over time), :mod:`~pipelines.inference.slots` (tagging transcripts),
  :mod:`~pipelines.inference.export` (a CTC or transducer checkpoint as checked TorchScript/ONNX graphs).
"""

from pipelines.inference.audio import audio_files, find_audio, read_audio, read_audio_bytes
from pipelines.inference.errors import InferenceError
from pipelines.inference.loading import KINDS, load_model, resolve_checkpoint
from pipelines.inference.speech import make_decoder, make_streamer

__all__ = ["KINDS", "InferenceError", "audio_files", "find_audio", "load_model", "make_decoder", "make_streamer",
           "read_audio", "read_audio_bytes", "resolve_checkpoint"]
