"""Run directories and experiment tracking: W&B through Lightning's WandbLogger, offline when it must be."""

from __future__ import annotations

import functools
import logging
import netrc
import os
import secrets
import socket
import string
import time
from pathlib import Path
from typing import Literal

WandbMode = Literal["auto", "online", "offline", "disabled"]


class _NoLoggerAdvert(logging.Filter):
    """Drops Lightning's "Tip: ... try installing litlogger" line (an advert, printed by every Trainer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_logger_advert() -> None:
    """Keeps Lightning's litlogger tip off the console; its other info lines stay.

    Lightning prints the tip through Python logging with no setting of its own, so a logging filter on the
    loggers that carry its rank-zero info lines is the way to hold it back.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoLoggerAdvert) for f in logger.filters):
            logger.addFilter(_NoLoggerAdvert())


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
        return bool(auth and auth[2])
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(requested: WandbMode = "auto") -> tuple[str, str]:
    """Decides how W&B runs: ``(mode, reason)`` with mode in online|offline|disabled.

    ``WANDB_MODE`` in the environment wins. ``auto`` goes online only with an API key and a reachable server
    (checked with a 2 s connection attempt), so a run never waits on the network; otherwise offline, which
    still writes the run directory for a later ``wandb sync``.
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "offline", "online", "dryrun"):
        return ("offline" if env == "dryrun" else env), "WANDB_MODE is set"
    if requested != "auto":
        return requested, "requested in config"
    if not _has_api_key():
        return "offline", "no W&B API key found (wandb login, or WANDB_API_KEY)"
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    if not _reachable(host):
        return "offline", f"{host} is unreachable"
    return "online", "API key found and server reachable"


def make_run_dir(root: str | os.PathLike, prefix: str, name: str | None) -> Path:
    """``root/name``, or ``root/<prefix>-<timestamp>``: the same name on every rank of one job.

    The name is stored in ``RNNLAB_RUN_NAME`` so processes Lightning launches for DDP inherit it; under
    torchrun or SLURM, whose ranks start independently, the job id names the run.
    """
    if name is None:
        name = os.environ.get("RNNLAB_RUN_NAME")
    if name is None:
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
        if job and job != "none":
            name = f"{prefix}-job{job}"
        else:
            name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ["RNNLAB_RUN_NAME"] = name
    return Path(root) / name


def make_loggers(run_dir: Path, *, project: str, mode: WandbMode = "auto", run_name: str | None = None,
                 log_model: bool = False, stage: str = "fit") -> list:
    """A CSV logger (``run_dir/metrics.csv``; ``run_dir/<stage>/`` for validate/test) and, unless disabled,
    a WandbLogger writing under ``run_dir``.

    The W&B run id is kept in ``run_dir/wandb_id`` so that resuming from a checkpoint of this run continues
    the same W&B run instead of creating a new one.
    """
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_info

    loggers = []
    resolved, reason = resolve_wandb_mode(mode)
    if resolved != "disabled":
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            # A W&B sweep agent (or a user) may fix the run id through WANDB_RUN_ID.
            run_id = os.environ.get("RNNLAB_WANDB_ID") or os.environ.get("WANDB_RUN_ID")
            if not run_id:
                alphabet = string.ascii_lowercase + string.digits
                run_id = "".join(secrets.choice(alphabet) for _ in range(8))
            os.environ["RNNLAB_WANDB_ID"] = run_id  # DDP children inherit it; rank 0 writes the file
            try:
                id_file.write_text(run_id + "\n")
            except OSError:
                pass
        rank_zero_info(f"[rnnlab] W&B {resolved} ({reason}); run id {run_id}, files in {run_dir / 'wandb'}")
        loggers.append(resilient_wandb_logger()(project=project, name=run_name or run_dir.name, save_dir=str(run_dir), id=run_id,
                                   resume="allow", offline=resolved == "offline", log_model=log_model,
                                   settings=_wandb_settings()))
    else:
        rank_zero_info(f"[rnnlab] W&B disabled ({reason})")
    # fit logs to run_dir/metrics.csv; a resumed fit to run_dir/resume-<k>/ and validate/test of a trained run to
    # run_dir/<stage>/: Lightning's CSV writer deletes an existing metrics.csv, the first run's log must survive.
    version = "" if stage == "fit" else stage
    if stage == "fit" and (run_dir / "metrics.csv").exists():
        k = 1
        while (run_dir / f"resume-{k}").exists():
            k += 1
        version = f"resume-{k}"
    loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=version))
    return loggers


def _wandb_settings():
    import wandb

    # Bounded waits: a slow or unreachable server must never hold up training.
    return wandb.Settings(init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 30)), silent=True)


@functools.cache
def resilient_wandb_logger() -> type:
    """The `ResilientWandbLogger` class (built on first use, so importing this module does not import Lightning)."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.loggers.logger import DummyExperiment, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only

    def guarded(name: str):
        method = getattr(WandbLogger, name)

        def call(self, *args, **kwargs):
            if self.failed:
                return None
            try:
                return method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - tracking must never end a training run
                self._warn(f"W&B {name} failed ({type(e).__name__}: {e}); training continues", key=name)
                return None

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    class ResilientWandbLogger(WandbLogger):
        """A WandbLogger that never ends or stalls training.

        If the online run cannot start (server unreachable, invalid API key, any error within the bounded
        ``init_timeout``), it falls back to an offline run in the same directory (``wandb sync`` uploads it later);
        if even that fails (e.g. the disk is full), W&B is switched off for this run while the CSV log goes on.
        Errors raised later by logging calls (the writer's disk quota, a dead service) become one warning per
        kind of call instead of an exception.
        """

        failed = False
        _warned: set

        def _warn(self, message: str, key: str) -> None:
            warned = self.__dict__.setdefault("_warned", set())
            if key not in warned:
                warned.add(key)
                rank_zero_only(print)(f"[rnnlab] warning: {message}", flush=True)

        @property
        @rank_zero_experiment
        def experiment(self):
            if self.failed:
                return DummyExperiment()
            try:
                return WandbLogger.experiment.fget.__wrapped__(self)
            except Exception as e:  # noqa: BLE001
                first = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                self._finish_quietly()
            if not self._offline:
                self._offline = True
                self._wandb_init["mode"] = "offline"
                try:
                    exp = WandbLogger.experiment.fget.__wrapped__(self)
                    self._warn(f"W&B online run could not start ({first}); logging offline instead, upload later "
                               f"with: wandb sync {self.save_dir}/wandb/offline-run-*", key="init")
                    return exp
                except Exception as e:  # noqa: BLE001
                    first = f"{first}; offline: {type(e).__name__}: {e}"
                    self._finish_quietly()
            self.failed = True
            self._warn(f"W&B is off for this run ({first}); the CSV log continues", key="init")
            return DummyExperiment()

        def _finish_quietly(self) -> None:
            self._experiment = None
            try:
                import wandb

                if wandb.run is not None:
                    wandb.finish(exit_code=1, quiet=True)
                wandb.teardown()  # the service may still hold the failed run's id
            except Exception:  # noqa: BLE001
                pass

    for name in ("log_hyperparams", "log_metrics", "log_table", "log_text", "log_image", "log_audio", "finalize",
                 "after_save_checkpoint"):
        setattr(ResilientWandbLogger, name, guarded(name))
    return ResilientWandbLogger

