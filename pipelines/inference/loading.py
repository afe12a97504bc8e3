"""Loading a model for inference: a checkpoint path, a shipped model's name or ``hf://owner/repo/file``."""

from __future__ import annotations

from pathlib import Path

from pipelines.inference import shipped
from pipelines.inference.errors import InferenceError

# Kinds a caller can ask for: the method the model must have and how an error names the kind.
KINDS = {
    "speech": ("transcribe_waveforms", "a speech recogniser"),
    "autoencoder": ("embed_waveforms", "an audio autoencoder"),
    "slots": ("tag_sentences", "a slot filling model"),
    "classifier": ("classify_waveforms", "an utterance classifier"),
    "g2p": ("pronounce", "a grapheme-to-phoneme model"),
}

HF_PREFIX = "hf://"


def resolve_checkpoint(spec: str | Path) -> Path:
    """The checkpoint file ``spec`` names.

    ``spec`` is a path; or a shipped model's name (checked against its manifest checksum); or
    ``hf://owner/repo/path/in/repo.ckpt`` (``hf://owner/repo@revision/...`` for a revision), downloaded through
    ``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1`` uses the cache only; ``HF_ENDPOINT`` picks the hub).

    Raises:
        InferenceError: an unknown name, a failed checksum, a download that failed, a missing file (one line).
    """
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return _from_hub(text)
    p = Path(text).expanduser()
    if p.exists() or not shipped.looks_like_name(text):
        if not p.exists():
            raise InferenceError(f"checkpoint not found: {text}")
        return p
    found = shipped.find(text)
    if found is None:
        names = ", ".join(sorted(shipped.available())) or "none installed"
        raise InferenceError(f"{text!r} is neither a file nor a shipped model (shipped: {names}; see rnnlab models)")
    return found.verify()


def _from_hub(spec: str) -> Path:
    rest = spec[len(HF_PREFIX):]
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise InferenceError(f"{spec}: expected hf://owner/repo/path/to/file.ckpt")
    repo, revision = "/".join(parts[:2]), None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    filename = "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - datasets depends on huggingface_hub
        raise InferenceError(f"{spec}: downloading needs huggingface_hub (pip install huggingface_hub)") from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except RepositoryNotFoundError:
        raise InferenceError(f"{spec}: no repository {repo!r} on the hub (or it is private)") from None
    except RevisionNotFoundError:
        raise InferenceError(f"{spec}: no revision {revision!r} of {repo}") from None
    except LocalEntryNotFoundError:
        raise InferenceError(f"{spec}: not in the local cache and the hub cannot be reached (offline: "
                             f"HF_HUB_OFFLINE is set, or no network)") from None
    except EntryNotFoundError:
        raise InferenceError(f"{spec}: {repo} has no file {filename!r}") from None
    except Exception as e:  # noqa: BLE001 - network and HTTP errors of any kind: one line
        line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InferenceError(f"{spec}: download failed: {line}") from None


def load_model(spec: str | Path, *, kind: str | None = None, device: str = "cpu"):
    """The rnnlab pipeline ``spec`` names (:func:`resolve_checkpoint`), in eval mode on ``device``.

    Args:
        spec: Checkpoint path, shipped model name, or ``hf://`` address.
        kind: A key of :data:`KINDS` the model must be; None accepts any.
        device: ``map_location`` of the weights.

    Raises:
        InferenceError: one line naming the model and what is wrong (never runs code from the file).
    """
    from pipelines.base import load_module

    path = resolve_checkpoint(spec)
    try:
        model = load_module(path, map_location=device)
    except (FileNotFoundError, ValueError) as e:
        raise InferenceError(str(e)) from None
    if kind is not None:
        method, name = KINDS[kind]
        if not hasattr(model, method):
            raise InferenceError(f"{spec} is a {type(model).__name__} checkpoint, not {name}")
    model.rnnlab_source = str(spec)
    return model
