"""The embedded default speech corpus: text generation and eSpeak NG synthesis.

rnnlab's default CTC recipe needs speech without a network or any files, so this package makes some.
It has three parts:

* :mod:`data.synth.espeak`: :func:`synthesize` speaks a line of text with eSpeak NG, called through
  ``ctypes`` on the shared library bundled in the ``espeakng-loader`` wheel. It returns float32 mono
  audio, its sample rate and word timings taken from eSpeak's word events.
* :mod:`data.synth.texts`: :func:`generate_texts` (and :class:`TextGenerator`) is a small, seeded text
  generator: connected digit strings, numbers and years read as words, and short sentences from a
  grammar, with evaluation splits that hold out word combinations.
* :mod:`data.synth.corpus`: :func:`build_corpus` writes a Hugging Face ``audiofolder`` corpus (FLAC files
  plus a ``metadata.jsonl`` per split); :func:`ensure_default_corpus` builds it once into the user cache
  and then reuses it; :func:`ensure_text_corpus` does the same for the sentences of a file (slot JSONL or
  text lines, in their spoken form from :mod:`data.synth.sentences`), e.g. ATIS read by the training voices.

Command line: ``python -m data.synth --out DIR --n-train 3000 ...`` (``--help`` for the options).
"""

from data.spoken import number_to_words, slot_words, spoken_form
from data.spoken import plain_words as normalize_text
from data.synth.corpus import (
    CORPUS_VERSION,
    EVAL_VOICES,
    SPLITS,
    TRAIN_VOICES,
    VOICES,
    build_corpus,
    default_corpus_dir,
    ensure_default_corpus,
    ensure_text_corpus,
    load_corpus,
    load_metadata,
    main,
)
from data.synth.espeak import WordTiming, espeak_sample_rate, resample, synthesize
from data.synth.sentences import read_sentences
from data.synth.texts import TextGenerator, generate_texts, vocabulary

__all__ = [
    "CORPUS_VERSION",
    "EVAL_VOICES",
    "SPLITS",
    "TRAIN_VOICES",
    "VOICES",
    "TextGenerator",
    "WordTiming",
    "build_corpus",
    "default_corpus_dir",
    "ensure_default_corpus",
    "ensure_text_corpus",
    "espeak_sample_rate",
    "generate_texts",
    "load_corpus",
    "load_metadata",
    "main",
    "normalize_text",
    "number_to_words",
    "read_sentences",
    "resample",
    "slot_words",
    "spoken_form",
    "synthesize",
    "vocabulary",
]
