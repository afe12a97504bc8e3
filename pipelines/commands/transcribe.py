"""``rnnlab transcribe``: speech files (WAV/FLAC/OGG, any rate) to text with a CTC or attention checkpoint.

Usage: rnnlab transcribe --ckpt CKPT FILE|DIR... [--beam N] [--lm ARPA] [--json] [--stream [--chunk-ms MS]]

Prints ``path<TAB>text`` per file (``--json``: one object per file, ``{"path", "text"}``, or ``{"path", "error"}``
for a file that was skipped) and the real-time factor on stderr. Exit status 1 when some inputs could not be used
(a file that is not readable audio, a directory without audio files; each is named on stderr), 2 for an error to
fix, such as inputs that hold no audio file at all (see :mod:`pipelines.commands._common`).
"""

from __future__ import annotations

from pipelines.commands._speech import run_transcribe


def main(argv: list[str]) -> int:
    return run_transcribe(argv, "transcribe")
