"""One loading path for hub ids and local copies: Hugging Face ``load_dataset`` with clear errors.

Only the requested splits are prepared: a hub dataset (or a downloaded hub snapshot) with parquet/json/csv data
files is read as ``load_dataset(<format>, data_files={split: that split's files})``, so asking for ``train.100``
of LibriSpeech's ``clean`` config never downloads or converts ``train.360``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from data.errors import DataError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".tsv": "csv",
            ".arrow": "arrow"}


class DataSourceError(DataError):
    """A dataset could not be found or read; the message is one line and says what to do."""


def _local_split_file(data_dir: Path, split: str) -> Path | None:
    for ext in _FORMATS:
        for name in (f"{split}{ext}", f"{split}/{split}{ext}", f"{split}/data{ext}"):
            p = data_dir / name
            if p.is_file():
                return p
    return None


def local_split_file(data_dir: str | os.PathLike, split: str) -> Path | None:
    """The file a local copy's ``split`` rows are read from (``{split}.jsonl``, an audiofolder's ``metadata.jsonl``
    and so on), or None if it is not one file."""
    root = Path(data_dir).expanduser()
    if root.is_file():
        return root
    if not root.is_dir():
        return None
    base = split_bases(split)[0]
    found = _local_split_file(root, base)
    if found is None:
        found = next((m for m in (root / base / "metadata.jsonl", root / base / "metadata.csv") if m.is_file()), None)
    return found


def split_where(data_dir: str | os.PathLike | None, dataset: str | None, split: str) -> str:
    """What messages about a split name: the file its rows are read from when local, else ``<corpus> [<split>]``."""
    found = local_split_file(data_dir, split) if data_dir else None
    return str(found) if found else f"{data_dir or dataset} [{split}]"


def row_place(where: str | os.PathLike, i: int) -> str:
    """Where row ``i`` (0-based) of ``where`` is, counted as an editor counts: ``line N`` in a JSON Lines or
    CSV/TSV file (after its header line), else ``row N`` (1-based)."""
    name = str(where)
    if name.endswith(".jsonl"):
        return f"line {i + 1}"
    if name.endswith((".csv", ".tsv")):
        return f"line {i + 2}"
    return f"row {i + 1}"


def _is_audiofolder(path: Path) -> bool:
    return (path / "metadata.jsonl").is_file() or (path / "metadata.csv").is_file()


def split_bases(split: str) -> list[str]:
    """Split names inside a ``datasets`` split expression: ``"a[:10%]+b"`` -> ``["a", "b"]``."""
    return [part.split("[")[0].strip() for part in split.split("+")]


def _has_configs_block(root: Path) -> bool:
    """Whether ``root/README.md`` declares ``configs:`` in its YAML header (a hub dataset snapshot)."""
    readme = root / "README.md"
    if not readme.is_file():
        return False
    head = readme.read_text(encoding="utf-8", errors="replace").split("\n---", 1)[0]
    return head.startswith("---") and re.search(r"^configs:", head, re.MULTILINE) is not None


def load_split(
    dataset: str | None,
    split: str,
    *,
    config_name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    audio: bool = False,
):
    """Loads one split through ``datasets.load_dataset``, preparing only the files that split needs.

    Local data (``data_dir``, or ``dataset`` given as an existing path) is read the same way as the hub:
    a hub snapshot (``README.md`` with a ``configs:`` block, e.g. ``<config>/<split>/*.parquet``) by its config
    and split names; a file ``{split}.jsonl|json|csv|tsv|parquet`` (or a folder ``{split}/`` of parquet shards,
    also under ``<config_name>/``) through the matching packaged builder; a directory with ``metadata.jsonl``
    through ``audiofolder``. A single file path loads as the requested split.

    Raises:
        DataSourceError: with a one-line message naming the missing path, config, split or hub id, and what
            actually went wrong (no network, unknown repository, a loading script, a missing config or split).
    """
    if data_dir is None and dataset is not None and Path(dataset).expanduser().exists():
        data_dir, dataset = dataset, None
    if data_dir is None and dataset:
        _check_hub(dataset)
    import datasets

    bases = split_bases(split)
    if data_dir is not None:
        return _load_local(datasets, Path(data_dir).expanduser(), split, bases, config_name=config_name,
                           streaming=streaming)
    if not dataset:
        raise DataSourceError("no dataset given: set data.dataset to a hub id or data.data_dir to a local copy")
    try:
        files = _split_data_files(datasets, dataset, config_name, bases, where=dataset, hub=True, split=split)
    except DataSourceError:
        if not _offline():
            raise
        files = None  # offline: the dataset's own builder may still find a copy cached by an earlier run
    if files is not None:
        fmt, data_files, features = files
        return _load(datasets, fmt, data_files=data_files, features=features, split=split, streaming=streaming,
                     where=dataset, hub=True)
    return _load(datasets, dataset, name=config_name, split=split, streaming=streaming, where=dataset, hub=True)


def _load_local(datasets, root: Path, split: str, bases: list[str], *, config_name: str | None, streaming: bool):
    if not root.exists():
        raise DataSourceError(f"data directory not found: {root}")
    if root.is_file():
        fmt = _FORMATS.get(root.suffix)
        if fmt is None:
            raise DataSourceError(f"{root}: unsupported file type (expected one of {sorted(_FORMATS)})")
        return _load(datasets, fmt, data_files={bases[0]: str(root)}, split=split, streaming=streaming, where=root,
                     delimiter="\t" if root.suffix == ".tsv" else None)
    if _has_configs_block(root):
        fmt, data_files, features = _split_data_files(datasets, str(root), config_name, bases, where=root,
                                                      split=split)
        return _load(datasets, fmt, data_files=data_files, features=features, split=split, streaming=streaming,
                     where=root)
    if config_name and (root / config_name).is_dir():
        root = root / config_name  # <config>/<split>/... without a README: the config is a folder
    if len(bases) > 1:
        data_files = {b: _local_split_files(root, b, split) for b in bases}
        fmt = _FORMATS[Path(data_files[bases[0]][0]).suffix]
        return _load(datasets, fmt, data_files=data_files, split=split, streaming=streaming, where=root)
    base = bases[0]
    split_file = _local_split_file(root, base)
    if split_file is not None:
        fmt = _FORMATS[split_file.suffix]
        return _load(datasets, fmt, data_files={base: str(split_file)}, split=split, streaming=streaming,
                     where=split_file, delimiter="\t" if split_file.suffix == ".tsv" else None)
    if (root / base).is_dir() and _is_audiofolder(root / base):
        return _load_audiofolder(datasets, root / base, split=split, base=base, streaming=streaming)
    shards = _local_split_files(root, base, split, required=False)
    if shards:
        return _load(datasets, "parquet", data_files={base: shards}, split=split, streaming=streaming, where=root)
    available = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    raise DataSourceError(f"{root}: no split {split!r} found (looked for {base}.jsonl/.json/.csv/.parquet, "
                          f"{base}/*.parquet or an audiofolder {base}/ with metadata.jsonl; found {available})")


def _local_split_files(root: Path, base: str, split: str, *, required: bool = True) -> list[str]:
    """``root/<base>/*.parquet`` (shards of one split) or the single ``<base>`` file, sorted."""
    shards = sorted(str(p) for p in (root / base).glob("*.parquet")) if (root / base).is_dir() else []
    if not shards and (f := _local_split_file(root, base)) is not None:
        shards = [str(f)]
    if not shards and required:
        raise DataSourceError(f"{root}: no split {base!r} (of {split!r}) found")
    return shards


def _split_data_files(datasets, path: str, config_name: str | None, bases: list[str], *, where, split: str,
                      hub: bool = False):
    """``(format, {split: files}, features)`` of the requested splits, resolved as ``datasets`` resolves them
    (the README's ``configs:`` block, else its default patterns), without downloading or preparing data.

    Returns None where the dataset's files are not parquet/json/csv/arrow (then the whole builder is used).
    """
    try:
        builder = datasets.load_dataset_builder(path, config_name)
    except Exception as e:  # noqa: BLE001 - classified into one line
        raise _classify(e, where=where, split=split, hub=hub, config_name=config_name) from None
    files = builder.config.data_files or {}
    missing = [b for b in bases if b not in files]
    if missing:
        config = f" config {builder.config.name!r}" if config_name else ""
        raise DataSourceError(f"{where}{config}: no split {missing[0]!r} (splits are {sorted(files)})")
    data_files = {b: list(files[b]) for b in bases}
    suffixes = {_suffix(f) for fs in data_files.values() for f in fs}
    fmts = {_FORMATS.get(s) for s in suffixes}
    if len(fmts) != 1 or None in fmts:
        return None
    return fmts.pop(), data_files, builder.info.features


def _suffix(name: str) -> str:
    return Path(str(name).split("::")[0].split("?")[0]).suffix


_AUTO_OFFLINE: str | None = None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes")


def _check_hub(repo_id: str) -> None:
    """Asks the hub about ``repo_id`` through ``huggingface_hub`` (its endpoint, proxies, token and timeouts).

    A repository that does not exist or is gated fails here with that reason. If the hub cannot be reached
    at all, the client switches to offline mode, so a cached copy still loads and a missing one fails at once
    instead of after the client's retries.
    """
    global _AUTO_OFFLINE
    if _offline():
        return
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = constants.ENDPOINT
    try:
        HfApi().dataset_info(repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        raise DataSourceError(f"{repo_id!r} on {endpoint} is gated: accept its terms on the hub and log in "
                              "(hf auth login or HF_TOKEN), or point to a local copy with DATA_DIR=path") from None
    except RepositoryNotFoundError:
        raise DataSourceError(f"{repo_id!r} is not a dataset on {endpoint} (or it is private: log in with hf auth "
                              "login or HF_TOKEN); point to a local copy instead, e.g. DATA_DIR=path/to/copy "
                              "(or --data.init_args.data_dir=path)") from None
    except HfHubHTTPError:
        return  # the hub answered (e.g. a server error): let load_dataset try and report what it finds
    except Exception as e:  # noqa: BLE001 - no answer at all (DNS, refused, proxy, timeout): go offline
        _AUTO_OFFLINE = f"{endpoint} could not be reached ({type(e).__name__}: {_first_line(e)[:120]})"
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        try:  # both libraries read the switch at import time; set their constants too when already imported
            constants.HF_HUB_OFFLINE = True
            import datasets.config

            datasets.config.HF_HUB_OFFLINE = True
        except Exception:  # noqa: BLE001
            pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _classify(e: Exception, *, where, split, hub: bool, config_name: str | None = None) -> DataSourceError:
    """One line that says what went wrong loading ``where``: scripts, configs and splits are named as such."""
    first = _first_line(e)
    hint = ("point to a local copy instead, e.g. DATA_DIR=path/to/copy (or --data.init_args.data_dir=path) "
            f"holding {split_bases(str(split))[0]}.jsonl/.csv/.parquet or an audiofolder")
    if "scripts are no longer supported" in first or "loading script" in first:
        script = first.rsplit(" ", 1)[-1]
        return DataSourceError(f"{where!r} ships a loading script ({script}), which this version of datasets does "
                               f"not run; use a copy of it in parquet form on the hub, or {hint}")
    m = re.search(r"BuilderConfig '([^']*)' not found\. Available: (\[.*\])", first)
    if m:
        return DataSourceError(f"{where}: no config {m.group(1)!r} (configs are {m.group(2)}); "
                               "set data.config_name")
    if "Config name is missing" in first or "Please pick one among" in first:
        return DataSourceError(f"{where}: several configs, none chosen; set data.config_name ({first[:200]})")
    m = re.search(r"Unknown split \"?'?([^\"']*)\"?'?\. Should be one of (\[.*\])", first)
    if m:
        return DataSourceError(f"{where}: no split {m.group(1)!r} (splits are {m.group(2)})")
    if hub:
        if _AUTO_OFFLINE:
            how = f"{_AUTO_OFFLINE}, and no cached copy exists"
        elif _offline():
            how = "offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and no cached copy exists"
        else:
            how = f"{type(e).__name__}: {first[:200]}"
        return DataSourceError(f"cannot load {where!r} split {split!r} from the Hugging Face hub ({how}); {hint}")
    return DataSourceError(f"cannot read {where}: {type(e).__name__}: {first[:300]}")


@contextlib.contextmanager
def no_progress_bars(enabled: bool = True):
    """Turns the ``datasets`` progress bars off for the block (restored afterwards if they were on)."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    if enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled and was_on:
            datasets.enable_progress_bars()


# Local data files smaller than this are prepared in about a second: a "Generating split" bar would be noise.
_QUIET_BYTES = 64 * 2**20


def _small_local(data_files) -> bool:
    """Whether ``data_files`` (``{split: path or paths}``) are local files of under :data:`_QUIET_BYTES` in all."""
    paths = [p for v in (data_files or {}).values() for p in ([v] if isinstance(v, str) else v)]
    try:
        return bool(paths) and sum(Path(p).stat().st_size for p in paths) < _QUIET_BYTES
    except (OSError, TypeError):
        return False  # a hub URL or pattern: keep datasets' own progress output


def _load(datasets, path, *, where, hub: bool = False, delimiter=None, features=None, **kwargs):
    if delimiter is not None:
        kwargs["delimiter"] = delimiter
    if features is not None:
        kwargs["features"] = features
    try:
        with no_progress_bars(not hub and _small_local(kwargs.get("data_files"))):
            return datasets.load_dataset(path, **kwargs)
    except DataSourceError:
        raise
    except Exception as e:  # noqa: BLE001 - turned into a one-line, actionable message
        raise _classify(e, where=where, split=kwargs.get("split"), hub=hub, config_name=kwargs.get("name")) from None


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
