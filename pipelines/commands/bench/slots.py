"""``rnnlab bench`` section ``slots``: time per training step and per validation batch of each slot-tagger variant
of ``make compare-slots``, side by side on the same batches, and the ratio to the plain BiLSTM tagger."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.commands.bench.common import table

TITLE = "slot-filling variants: seconds per training step and per validation batch"
DEFAULT_SLOTS_DATA = "../shared/data/atis"

#: The ``make compare-slots`` rows (Makefile ``compare-slots``), as SlotFillingModule options over the plain tagger.
VARIANTS: dict[str, dict] = {
    "base": {},
    "window": {"context_window": 1},
    "crf": {"crf": True},
    "chars": {"char_features": "cnn"},
    "wdrop": {"word_dropout": 0.05},
    "attention": {"joint": "attention"},
    "gated": {"joint": "slot_gated"},
    "intent": {"intent_pooling": "attention", "select_by": "joint"},
    "intent2": {"intent_weight": 2.0},
    "combo": {"char_features": "cnn", "crf": True, "word_dropout": 0.05},
    "all": {"crf": True, "char_features": "cnn", "joint": "slot_gated", "word_dropout": 0.05, "select_by": "joint"},
}


def _batches(data_dir: str, batch_size: int, n: int) -> tuple[dict, list[dict]]:
    from data.slots import SlotFillingDataModule

    dm = SlotFillingDataModule(dataset=None, data_dir=data_dir, train_split="train", val_split="validation",
                               batch_size=batch_size)
    dm.setup("fit")
    batches = [b for _, b in zip(range(n), dm.train_dataloader(), strict=False)]
    return dm.vocab, batches


def _time(model, batches: list[dict], train: bool) -> float:
    """Seconds per batch: a training step (forward, loss, backward, Adam) or a decoding pass."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train(train)
    t0 = time.perf_counter()
    for b in batches:
        if train:
            opt.zero_grad()
            tags, intents = model(b["tokens"], b["lengths"], b["words"])
            loss = model.model.tag_loss(tags, b["tags"], b["lengths"]) + F.cross_entropy(intents, b["intent"])
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                tags, intents = model(b["tokens"], b["lengths"], b["words"])
                model._decode(tags, intents, b["lengths"])
    return (time.perf_counter() - t0) / len(batches)


def run(ctx) -> dict:
    """Every variant on the same batches; repetitions alternate between variants and the median counts."""
    from pipelines.slot_filling import SlotFillingModule

    a = ctx.args
    data_dir = a.slots_data or DEFAULT_SLOTS_DATA
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"slot data not found: {data_dir} (give --slots-data DIR with train/validation.jsonl)")
    n = 3 if a.quick else 20
    vocab, batches = _batches(data_dir, 32, n)
    size = {"embedding_dim": 16, "hidden_size": 16} if a.quick else {"embedding_dim": 100, "hidden_size": 200}
    models = {}
    for name, opts in VARIANTS.items():
        torch.manual_seed(0)
        models[name] = SlotFillingModule(vocab=vocab, embedding_dim=size["embedding_dim"],
                                         encoder={"hidden_size": size["hidden_size"]}, **opts)
    for m in models.values():  # warm-up: first calls allocate
        _time(m, batches[:1], True)
    times = {name: {"train": [], "decode": []} for name in models}
    for _ in range(a.repeats):
        for name, m in models.items():
            times[name]["train"].append(_time(m, batches, True))
            times[name]["decode"].append(_time(m, batches, False))
    base_train = statistics.median(times["base"]["train"])
    base_decode = statistics.median(times["base"]["decode"])
    rows = {}
    for name, m in models.items():
        tr, de = statistics.median(times[name]["train"]), statistics.median(times[name]["decode"])
        rows[name] = {"params": sum(p.numel() for p in m.parameters() if p.requires_grad),
                      "train_s_per_step": tr, "decode_s_per_batch": de,
                      "train_ratio_vs_base": tr / base_train, "decode_ratio_vs_base": de / base_decode,
                      "train_s_per_epoch_estimate": None}
    steps_per_epoch = None
    train_file = Path(data_dir) / "train.jsonl"
    if train_file.is_file():
        steps_per_epoch = -(-sum(1 for line in train_file.open() if line.strip()) // 32)
        for r in rows.values():
            r["train_s_per_epoch_estimate"] = r["train_s_per_step"] * steps_per_epoch
    return {"data": data_dir, "batches": len(batches), "batch_size": 32, "steps_per_epoch": steps_per_epoch,
            "threads": torch.get_num_threads(), "model": size, "variants": rows}


def show(r: dict) -> None:
    """Prints one row per variant: parameters, times and ratios to the plain tagger."""
    print(f"{r['data']}: {r['batches']} training batches of {r['batch_size']}, {r['threads']} thread(s), "
          f"embedding {r['model']['embedding_dim']}, BiLSTM-{r['model']['hidden_size']}")
    rows = [[name, v["params"], v["train_s_per_step"] * 1000, v["train_ratio_vs_base"],
             v["train_s_per_epoch_estimate"] if v["train_s_per_epoch_estimate"] is not None else "-",
             v["decode_s_per_batch"] * 1000, v["decode_ratio_vs_base"]] for name, v in r["variants"].items()]
    print(table(["variant", "params", "train ms/step", "x base", "s/epoch (est.)", "decode ms/batch", "x base"],
                rows))
