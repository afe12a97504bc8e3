"""The output of an ``rnnlab analyze`` command: PNG plots, ``summary.md``, ``results.json`` and the W&B run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from pipelines.commands.analyze.common import pyplot, usage_error


def _finite(obj):
    """``obj`` with non-finite floats replaced by None (results.json stays strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class Report:
    """Collects the plots, numbers and Markdown of one command and writes them out.

    Args:
        command: the subcommand (``gradient-flow`` ...), the title of summary.md.
        out: the output directory, created here.
        settings: the options that shaped the result, written at the top of summary.md and into results.json.
    """

    def __init__(self, command: str, out: Path, settings: dict) -> None:
        self.command = command
        self.out = out
        self.settings = settings
        self.images: dict[str, Path] = {}
        self.results: dict = {"command": command, "settings": settings}
        self.lines: list[str] = []
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            usage_error(f"cannot create output directory {out}: {e.strerror}")

    def figure(self, name: str, fig) -> Path:
        """Saves ``fig`` as ``<out>/<name>.png`` and closes it."""
        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        pyplot().close(fig)
        self.images[name] = path
        return path

    def write(self, wandb_mode: str) -> None:
        """Writes summary.md and results.json and logs the plots and numbers to W&B (``wandb_mode``)."""
        settings = " ".join(f"{k}={v}" for k, v in self.settings.items())
        md = [f"# rnnlab analyze {self.command}", "", f"Settings: `{settings}`", "", *self.lines, ""]
        md += ["Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in self.images.values()), ""]
        (self.out / "summary.md").write_text("\n".join(md))
        (self.out / "results.json").write_text(
            json.dumps(_finite(self.results), indent=2, allow_nan=False) + "\n"
        )
        _log_wandb(wandb_mode, self)
        print(
            f"[rnnlab] analyze {self.command}: wrote {self.out / 'summary.md'}, results.json and "
            f"{len(self.images)} plot(s) in {self.out}"
        )


def _scalars(obj, prefix: str = "") -> dict[str, float]:
    """Flattens the numbers of a results dict to ``a/b/c -> value`` (lists are left out)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_scalars(v, f"{prefix}{k}/"))
    elif isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    elif isinstance(obj, int | float) and math.isfinite(obj):
        out[prefix.rstrip("/")] = float(obj)
    return out


def _log_wandb(requested: str, report: Report) -> None:
    """Logs the plots and numbers to W&B (offline unless configured otherwise); never raises or waits long."""
    from pipelines.training.tracking import resolve_wandb_mode

    mode, reason = resolve_wandb_mode(requested)
    if mode == "disabled":
        return
    try:
        import wandb

        run = wandb.init(
            project="rnnlab",
            job_type="analyze",
            name=f"analyze-{report.command}",
            mode=mode,
            dir=str(report.out),
            config=report.settings,
            reinit="create_new",
            settings=wandb.Settings(init_timeout=30, silent=True),
        )
        run.log({f"analyze/{k}": wandb.Image(str(p)) for k, p in report.images.items()})
        run.summary.update(_scalars(report.results.get("summary", {})))
        run.finish()
        print(f"[rnnlab] W&B {mode} ({reason}): logged {len(report.images)} plot(s)")
    except Exception as e:  # noqa: BLE001 - tracking must never fail an analysis
        print(f"[rnnlab] warning: could not log to W&B: {type(e).__name__}: {e}", file=sys.stderr)

