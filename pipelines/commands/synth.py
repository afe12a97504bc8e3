"""``rnnlab synth``: the embedded speech corpus (eSpeak NG voices, no network), or one sentence spoken to a file.

Usage: rnnlab synth [--out DIR] [--n-train N ...]            build (or reuse) a corpus
       rnnlab synth --say TEXT --voice VOICE --out FILE.wav  speak one sentence (word timings on stdout)

The same as ``python -m data.synth``; ``make train-ctc`` builds the default corpus on first use by itself.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from data.synth.corpus import main as synth_main

    return synth_main(argv, prog="rnnlab synth")
