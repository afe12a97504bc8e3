"""Checkpoints in ``rnnlab analyze``: loading, the recurrent encoder, a batch to probe and the task loss."""

from __future__ import annotations

import torch

from pipelines.commands._common import load_checkpoint as common_load_checkpoint
from pipelines.commands._common import run_config_for
from pipelines.commands.analyze.common import COMMAND, usage_error


def load_checkpoint(path: str):
    """The pipeline ``path`` names (a checkpoint or a shipped model's name), in eval mode; a one-line usage
    error (exit status 2) when it is missing or unreadable."""
    return common_load_checkpoint(COMMAND, path)


def find_encoder(model, ckpt: str):
    """The model's RecurrentEncoder (a usage error naming ``ckpt`` when it has none)."""
    from modules.encoders import RecurrentEncoder

    enc = next((m for m in model.modules() if isinstance(m, RecurrentEncoder)), None)
    if enc is None:
        usage_error(f"{ckpt}: {type(model).__name__} has no recurrent encoder")
    return enc


def _kind(model) -> str:
    """``slots`` or ``ctc`` for the checkpoints whose task loss is known here, else ``other``."""
    from pipelines.ctc import CTCSpeechRecognizer
    from pipelines.slot_filling import SlotFillingModule

    if isinstance(model, SlotFillingModule):
        return "slots"
    if isinstance(model, CTCSpeechRecognizer):
        return "ctc"
    return "other"


def _validation_batch(model, ckpt: str, batch_size: int) -> tuple[dict, str]:
    """The ``batch_size`` longest validation sequences of the data named in the run's config.yaml."""
    import importlib

    from pipelines.training.runconfig import read_configs

    cfg_path = run_config_for(ckpt)  # FileNotFoundError: callers fall back to random input
    data = read_configs(cfg_path).get("data") or {}
    module_name, _, cls_name = str(data.get("class_path", "")).rpartition(".")
    if not module_name:
        raise ValueError(f"{cfg_path}: no data.class_path")
    cls = getattr(importlib.import_module(module_name), cls_name)
    dm = cls(**(data.get("init_args") or {}))
    dm.vocab = model.hparams.vocab
    dm.setup("validate")
    loader = dm.val_dataloader()
    ds = loader.dataset
    n = len(ds)
    if n == 0:
        raise ValueError("the validation split is empty")
    # The longest sequences: gradient flow over the longest distances the data has.
    sizes = list(ds.lengths) if hasattr(ds, "lengths") else [len(ds[i]["word_ids"]) for i in range(n)]
    order = sorted(range(n), key=lambda i: (-sizes[i], i))[:batch_size]
    batch = loader.collate_fn([ds[i] for i in order])
    if batch is None:
        raise ValueError("the selected validation audio could not be decoded")
    split = (data.get("init_args") or {}).get("val_split", "validation")
    source = (data.get("init_args") or {}).get("data_dir") or (data.get("init_args") or {}).get("dataset")
    return batch, f"{source} [{split}], the longest of {n}"


def _random_batch(model, kind: str, batch_size: int, length: int, seed: int) -> dict:
    """Random input of the checkpoint's input type with random targets (all sequences ``length`` steps)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.full((batch_size,), length, dtype=torch.long)
    if kind == "slots":
        vocab = len(model.words)
        tokens = torch.randint(min(2, vocab - 1), vocab, (batch_size, length), generator=g)
        tags = torch.randint(0, len(model.tags), (batch_size, length), generator=g)
        intent = torch.randint(0, max(1, len(model.intents)), (batch_size,), generator=g)
        return {"tokens": tokens, "lengths": lengths, "tags": tags, "intent": intent}
    fe = model.model.frontend
    samples = (length * fe.stack_frames - 1) * fe.hop_length  # exactly ``length`` encoder frames
    waveforms = 0.1 * torch.randn(batch_size, samples, generator=g)
    n_tokens = max(1, length // 4)
    targets = torch.randint(1, len(model.tokenizer), (batch_size, n_tokens), generator=g)
    return {
        "waveforms": waveforms,
        "lengths": torch.full((batch_size,), samples, dtype=torch.long),
        "targets": targets,
        "target_lengths": torch.full((batch_size,), n_tokens, dtype=torch.long),
    }


def checkpoint_batch(
    model, kind: str, ckpt: str, batch_size: int, length: int, seed: int
) -> tuple[dict, str]:
    """A validation batch when the run's data can be read, else random input (the description says which)."""
    try:
        batch, where = _validation_batch(model, ckpt, batch_size)
        return batch, f"validation batch of {len(batch['lengths'])} sequences from {where}"
    except Exception as e:  # noqa: BLE001 - any failure falls back to random input, and the report says why
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
        batch = _random_batch(model, kind, batch_size, length, seed)
        return batch, (
            f"random input ({batch_size} sequences of {length} steps, random targets); "
            f"validation data unavailable: {reason}"
        )


def forward(model, kind: str, batch: dict):
    """The model's forward pass on a batch of its input type (tokens or waveforms)."""
    if kind == "slots":
        return model(batch["tokens"], batch["lengths"])
    return model(batch["waveforms"], batch["lengths"])


def task_loss(model, kind: str, batch: dict) -> torch.Tensor:
    """The training loss of a slot-filling (tags + intent cross-entropy) or CTC checkpoint on ``batch``."""
    import torch.nn.functional as F

    if kind == "slots":
        from data.slots import IGNORE

        tag_logits, intent_logits = model(batch["tokens"], batch["lengths"])
        loss = F.cross_entropy(tag_logits.flatten(0, 1), batch["tags"].flatten(), ignore_index=IGNORE)
        if (batch["intent"] != IGNORE).any():
            intent = F.cross_entropy(intent_logits, batch["intent"], ignore_index=IGNORE)
            loss = loss + model.hparams.intent_weight * intent
        return loss
    from modules.ctc import ctc_loss_checked, min_ctc_frames

    log_probs, out_lengths = model(batch["waveforms"], batch["lengths"])
    targets = [t[:n] for t, n in zip(batch["targets"], batch["target_lengths"], strict=True)]
    loss, _ = ctc_loss_checked(
        log_probs,
        out_lengths,
        batch["targets"],
        batch["target_lengths"],
        blank=model.tokenizer.blank,
        min_frames=min_ctc_frames(targets),
    )
    return loss


def need_task_loss(model, ckpt: str) -> str:
    """``slots`` or ``ctc``: the checkpoint kinds whose training loss :func:`task_loss` computes (else a usage error)."""
    kind = _kind(model)
    if kind == "other":
        usage_error(
            f"{ckpt}: {type(model).__name__} checkpoints are not supported here "
            f"(slot-filling and CTC checkpoints are)"
        )
    return kind
