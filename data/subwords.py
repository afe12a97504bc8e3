"""SentencePiece subword tokenizer for CTC, trained in memory and saved inside checkpoints as plain types."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Literal

from data.text import BLANK, UNK

SP_SPACE = "\u2581"  # SentencePiece word-start marker "▁"

_MODEL_TYPES = ("unigram", "bpe")


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise ImportError("the sentencepiece tokenizer needs the 'sentencepiece' package (pip install sentencepiece)") from e
    return sentencepiece


class SentencePieceTokenizer:
    """Subword tokenizer for CTC with the interface of :class:`data.text.CharTokenizer`.

    The SentencePiece model is trained so that its own ids are the CTC ids: id 0 is the CTC blank
    (SentencePiece's pad slot, renamed ``<blank>``; a control symbol, so encoding never produces it), id 1
    is ``<unk>`` and the subword pieces follow (``"▁the"``, ``"s"``, ...; ``"▁"`` starts a word). There are
    no ``<s>``/``</s>`` pieces. SentencePiece cannot train without an unknown piece, so ``<unk>`` keeps an
    id (and an output unit in the model) but is never emitted: :meth:`encode` raises ``ValueError`` for any
    text that would need it, so a CTC model never learns to predict it.

    Texts are used as they are (``identity`` normalisation, no NFKC); runs of spaces and leading or trailing
    spaces are not kept (SentencePiece removes them), so normalise transcripts before encoding them.

    Build one with :meth:`train`, or from a serialized model with ``SentencePieceTokenizer(model_proto)``
    (whose piece 0 must be a ``<blank>`` control symbol and which must have an ``<unk>`` piece).

    Args:
        model_proto: A serialized SentencePiece ``ModelProto``.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        spm = _sentencepiece()
        self.model_proto = bytes(model_proto)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ messages
            raise ValueError(f"not a valid SentencePiece model: {e}") from e
        sp = self._sp
        n = sp.get_piece_size()
        self.tokens = [sp.id_to_piece(i) for i in range(n)]
        if n < 2 or self.tokens[0] != BLANK or not sp.is_control(0):
            raise ValueError(f"SentencePiece model for CTC must have the control piece {BLANK!r} at id 0, got {self.tokens[:1]}")
        self.blank = 0
        self.unk = sp.unk_id()
        if self.tokens[self.unk] != UNK:
            raise ValueError(f"SentencePiece model's unknown piece must be {UNK!r}, got {self.tokens[self.unk]!r}")
        special = {i for i in range(n) if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)}
        # Characters the model can encode: every single-character piece (character_coverage=1.0 keeps each
        # training character as a piece) plus the space, which becomes the "▁" marker. A literal "▁" in the
        # text is not accepted: it would come back as a space.
        self._chars = {p for i, p in enumerate(self.tokens) if i not in special and len(p) == 1 and p != SP_SPACE}
        self._chars.add(" ")

    # -- training -----------------------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 128,
        model_type: Literal["unigram", "bpe"] = "unigram",
        *,
        required_chars: str = "",
        seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Trains a SentencePiece model in memory on ``texts`` (no files).

        Training is deterministic (one thread, every sentence used, no input shuffling), covers every
        character of ``texts`` (``character_coverage=1.0``) and uses identity normalisation.
        ``hard_vocab_limit=False`` lets a tiny corpus give fewer pieces than ``vocab_size``.

        Args:
            texts: Training transcripts (already normalised).
            vocab_size: Wanted size including ``<blank>`` and ``<unk>``; a soft limit.
            model_type: ``unigram`` or ``bpe``.
            required_chars: Characters to give pieces even if ``texts`` lacks them (e.g. the whole alphabet,
                so that held-out transcripts with a rare letter still encode). Whitespace is ignored.
            seed: Seed of SentencePiece's random generator (process-wide; training as configured here does
                not sample, so it only matters for reproducibility of any sampling elsewhere).

        Raises:
            ValueError: Bad ``model_type``, no non-empty text, or ``vocab_size`` below the number of distinct
                characters plus ``<blank>``, ``<unk>`` and ``▁``.
        """
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type must be one of {'|'.join(_MODEL_TYPES)}, got {model_type!r}")
        sentences = [t for t in texts if t.strip()]
        if not sentences:
            raise ValueError("cannot train a SentencePiece tokenizer on no text")
        required = "".join(sorted({c for c in required_chars if not c.isspace()}))
        chars = {c for t in sentences for c in t if not c.isspace()} | set(required)
        minimum = len(chars) + 3  # <blank>, <unk>, "▁"
        if vocab_size < minimum:
            raise ValueError(
                f"sentencepiece vocab_size {vocab_size} is too small: the texts use {len(chars)} distinct characters, "
                f"so it must be at least {minimum}"
            )
        spm = _sentencepiece()
        spm.set_random_generator_seed(int(seed))
        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=out,
                vocab_size=int(vocab_size),
                model_type=model_type,
                character_coverage=1.0,
                normalization_rule_name="identity",
                hard_vocab_limit=False,
                required_chars=required,
                pad_id=0,
                pad_piece=BLANK,
                unk_id=1,
                unk_piece=UNK,
                bos_id=-1,
                eos_id=-1,
                byte_fallback=False,
                num_threads=1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise ValueError(f"sentencepiece training failed: {e}") from e
        return cls(out.getvalue())

    # -- the CharTokenizer interface ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of ``text`` the model cannot encode (they would map to ``<unk>``)."""
        return {c for c in text if c not in self._chars}

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` (never the blank, never ``<unk>``); raises ``ValueError`` naming unencodable characters."""
        bad = self.unknown_chars(text)
        if bad:
            raise ValueError(f"characters outside the sentencepiece tokenizer's alphabet: {''.join(sorted(bad))!r}")
        ids = self._sp.encode(text)
        if self.unk in ids:  # safety net: a character only known inside longer pieces
            pieces = self._sp.encode(text, out_type=str)
            unknown = "".join(sorted({p for p, i in zip(pieces, ids, strict=True) if i == self.unk}))
            raise ValueError(f"text cannot be encoded by the sentencepiece tokenizer (unknown: {unknown!r})")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: blanks dropped, pieces joined, ``"▁"`` becomes a space, spaces collapsed and stripped."""
        text = "".join(self.tokens[int(i)] for i in ids if int(i) != self.blank).replace(SP_SPACE, " ")
        return " ".join(text.split())

    def pieces(self, text: str) -> list[str]:
        """The pieces ``encode`` would give, as strings (for inspection)."""
        return [self.tokens[i] for i in self.encode(text)]

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-type form (``kind`` and the base64 model proto), safe for ``torch.load(weights_only=True)``."""
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict) -> SentencePieceTokenizer:
        if d.get("kind") != cls.kind:
            raise ValueError(f"not a sentencepiece tokenizer dict (kind {d.get('kind')!r})")
        try:
            proto = base64.b64decode(d["model"], validate=True)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"sentencepiece tokenizer dict has no valid base64 'model': {e}") from e
        return cls(proto)

    def __getstate__(self) -> dict:
        return {"model_proto": self.model_proto}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_proto"])

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={len(self)})"

