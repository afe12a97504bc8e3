"""``rnnlab bench`` section ``slots``: time per training step and per validation batch of each slot-tagger variant
of ``make compare-slots`` (the same config files: configs/slots-variants/), side by side on the same batches, and
the ratio to the plain BiLSTM tagger. The steps are the task's own (``training_step``, ``predict_step``)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from pipelines.commands.bench.common import CONFIG_DIR, lightning_quiet, table
from pipelines.commands.bench.models import module_from_config, optimizers, train_step

TITLE = "slot-filling variants: seconds per training step and per validation batch"
DEFAULT_SLOTS_DATA = "../shared/data/atis"
#: The plain tagger of ``make compare-slots``, and the folder of its variants (one change each).
PLAIN_CONFIGS = ("slots.yaml", "slots-plain.yaml")
VARIANT_DIR = CONFIG_DIR / "slots-variants"
#: Model sizes of ``--quick`` over the configs' (embedding 100, BiLSTM-200).
QUICK_SIZE = {"embedding_dim": 16, "encoder": {"hidden_size": 16}}


def variants() -> dict[str, dict]:
    """``model.init_args`` of each ``make compare-slots`` variant (configs/slots-variants/NAME.yaml over
    slots.yaml + slots-plain.yaml, composed as ``-c`` composes them): the plain tagger first, then by how many
    options a variant changes."""
    from pipelines.training.runconfig import read_configs

    def changes(path: Path) -> int:
        return len((read_configs(path).get("model") or {}).get("init_args") or {})

    paths = sorted(VARIANT_DIR.glob("*.yaml"), key=lambda p: (changes(p), p.stem))
    return {p.stem: read_configs(*(CONFIG_DIR / n for n in PLAIN_CONFIGS), p)["model"]["init_args"] for p in paths}


def _batches(data_dir: str, batch_size: int, n: int) -> tuple[dict, list[dict]]:
    from data.slots import SlotFillingDataModule

    dm = SlotFillingDataModule(dataset=None, data_dir=data_dir, train_split="train", val_split="validation",
                               batch_size=batch_size)
    dm.setup("fit")
    batches = [b for _, b in zip(range(n), dm.train_dataloader(), strict=False)]
    return dm.vocab, batches


def _time(model, batches: list[dict], train: bool) -> float:
    """Seconds per batch: the task's own training step (forward and loss) with backward and its optimiser (the
    config's Adam), or its own predict step (forward and the tag search)."""
    opt, _ = optimizers(model)
    model.train(train)
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        if train:
            train_step(model, b, opt, batch_idx=i)
        else:
            with torch.no_grad():
                model.predict_step(b, i)
    return (time.perf_counter() - t0) / len(batches)


def run(ctx) -> dict:
    """Every variant on the same batches; repetitions alternate between variants and the median counts."""
    from pipelines.slot_filling import SlotFillingModule
    from pipelines.training.runconfig import merge

    a = ctx.args
    data_dir = a.slots_data or DEFAULT_SLOTS_DATA
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"slot data not found: {data_dir} (give --slots-data DIR with train/validation.jsonl)")
    n = 3 if a.quick else 20
    vocab, batches = _batches(data_dir, 32, n)
    configs = {name: merge(args, QUICK_SIZE) if a.quick else args for name, args in variants().items()}
    base = configs["base"]
    size = {"embedding_dim": base["embedding_dim"], "hidden_size": base["encoder"]["hidden_size"]}
    models = {name: module_from_config(SlotFillingModule, args, vocab=vocab) for name, args in configs.items()}
    with lightning_quiet():
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
