"""One loading path for hub ids and local copies: Hugging Face ``load_dataset`` with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

from data.errors import DataError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".tsv": "csv"}


class DataSourceError(DataError):
    """A dataset could not be found or read; the message is one line and says what to do."""


def _local_split_file(data_dir: Path, split: str) -> Path | None:
    for ext in _FORMATS:
        for name in (f"{split}{ext}", f"{split}/{split}{ext}", f"{split}/data{ext}"):
            p = data_dir / name
            if p.is_file():
                return p
    return None


def _is_audiofolder(path: Path) -> bool:
    return (path / "metadata.jsonl").is_file() or (path / "metadata.csv").is_file()


def load_split(
    dataset: str | None,
    split: str,
    *,
    config_name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    audio: bool = False,
):
    """Loads one split through ``datasets.load_dataset``.

    Local data (``data_dir``, or ``dataset`` given as an existing path) is read the same way as the hub:
    a file ``{split}.jsonl|json|csv|tsv|parquet`` goes through the matching packaged builder, a directory
    with ``metadata.jsonl`` through ``audiofolder``. A single file path loads as the requested split.

    Raises:
        DataSourceError: with a one-line message naming the missing path, split or hub id.
    """
    if data_dir is None and dataset is not None and not Path(dataset).expanduser().exists():
        _offline_if_hub_unreachable()
    import datasets

    if data_dir is None and dataset is not None and Path(dataset).expanduser().exists():
        data_dir, dataset = dataset, None
    base = split.split("[")[0]  # "train[:90%]" slices the train split, as datasets' split syntax does
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.exists():
            raise DataSourceError(f"data directory not found: {root}")
        if root.is_file():
            fmt = _FORMATS.get(root.suffix)
            if fmt is None:
                raise DataSourceError(f"{root}: unsupported file type (expected one of {sorted(_FORMATS)})")
            return _load(datasets, fmt, data_files={base: str(root)}, split=split, streaming=streaming, where=root,
                         delimiter="\t" if root.suffix == ".tsv" else None)
        split_file = _local_split_file(root, base)
        if split_file is not None:
            fmt = _FORMATS[split_file.suffix]
            return _load(datasets, fmt, data_files={base: str(split_file)}, split=split, streaming=streaming,
                         where=split_file, delimiter="\t" if split_file.suffix == ".tsv" else None)
        if (root / base).is_dir() and _is_audiofolder(root / base):
            return _load_audiofolder(datasets, root / base, split=split, base=base, streaming=streaming)
        available = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        raise DataSourceError(f"{root}: no split {split!r} found (looked for {split}.jsonl/.json/.csv/.parquet or "
                              f"an audiofolder {split}/ with metadata.jsonl; found {available})")
    if not dataset:
        raise DataSourceError("no dataset given: set data.dataset to a hub id or data.data_dir to a local copy")
    return _load(datasets, dataset, name=config_name, split=split, streaming=streaming, where=dataset, hub=True)


_AUTO_OFFLINE: str | None = None


def _offline_if_hub_unreachable(timeout: float = 3.0) -> None:
    """Without network, switch the hub client to offline mode before it is imported (cached copies still load),
    so a missing dataset fails at once instead of after the client's retries."""
    import socket
    import sys

    if os.environ.get("HF_HUB_OFFLINE") == "1" or "huggingface_hub" in sys.modules:
        return
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return
    except OSError:
        global _AUTO_OFFLINE
        _AUTO_OFFLINE = host
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


def _load(datasets, path, *, where, hub: bool = False, delimiter=None, **kwargs):
    if delimiter is not None:
        kwargs["delimiter"] = delimiter
    try:
        return datasets.load_dataset(path, **kwargs)
    except DataSourceError:
        raise
    except Exception as e:  # noqa: BLE001 - turned into a one-line, actionable message
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if hub:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
            how = (f"{_AUTO_OFFLINE} is unreachable, so offline" if _AUTO_OFFLINE else
                   "offline mode is on" if offline else "the hub could not be reached or the dataset is unknown")
            split = str(kwargs.get("split")).split("[")[0]
            raise DataSourceError(
                f"cannot load {where!r} split {kwargs.get('split')!r} from the Hugging Face hub ({how}: "
                f"{type(e).__name__}: {first[:200]}); point to a local copy instead, e.g. DATA_DIR=path/to/copy "
                f"(or --data.init_args.data_dir=path) holding {split}.jsonl/.csv/.parquet or an audiofolder {split}/"
            ) from None
        raise DataSourceError(f"cannot read {where}: {type(e).__name__}: {first[:300]}") from None


def _load_audiofolder(datasets, folder: Path, *, split: str, base: str, streaming: bool):
    """An ``audiofolder`` split (``metadata.jsonl|csv`` + audio files), read through ``load_dataset``.

    The metadata goes through the packaged json/csv builder and the ``audio`` column holds absolute paths,
    so no audio is decoded or re-encoded while loading (``datasets``' own audiofolder builder encodes audio
    with torchcodec, which needs FFmpeg); audio is decoded later with soundfile.
    """
    meta = folder / "metadata.jsonl"
    fmt = "json"
    if not meta.is_file():
        meta, fmt = folder / "metadata.csv", "csv"
    ds = _load(datasets, fmt, data_files={base: str(meta)}, split=split, streaming=streaming, where=meta)
    if "file_name" not in (ds.column_names or []):
        raise DataSourceError(f"{meta}: audiofolder metadata needs a 'file_name' column (has {ds.column_names})")
    root = str(folder.resolve())

    def add_path(row):
        return {"audio": os.path.join(root, row["file_name"])}

    return ds.map(add_path) if streaming else ds.add_column("audio", [os.path.join(root, f) for f in ds["file_name"]])
