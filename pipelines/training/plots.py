"""PNG figures for runs (matplotlib, Agg): reconstructions, 2-D embedding maps, attention maps; W&B image logging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Writes ``fig`` to ``path`` (creating its directory) as a small PNG and closes it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Projects ``(N, D)`` rows on their first two principal components: ``(N, 2)`` (zeros pad D < 2)."""
    x = x.float() - x.float().mean(0)
    if x.size(0) < 2:
        return torch.zeros(x.size(0), 2)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[:2].T
    return torch.nn.functional.pad(proj, (0, 2 - proj.size(1)))


def save_reconstruction_plot(examples: Sequence[tuple[str, torch.Tensor, torch.Tensor]], path: Path) -> Path:
    """One row per example: input features and their reconstruction, ``(T, F)`` each, side by side."""
    plt = pyplot()
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.2 * n), squeeze=False)
    for row, (name, feats, recon) in enumerate(examples):
        lo, hi = float(feats.min()), float(feats.max())
        for col, (title, m) in enumerate((("input", feats), ("reconstruction", recon))):
            ax = axes[row][col]
            ax.imshow(m.T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.set_xlabel("frame", fontsize=7)
            ax.tick_params(labelsize=6)
    return _save(plt, fig, path)


def save_embedding_plot(points: torch.Tensor, labels: Sequence[str], path: Path, title: str = "") -> Path:
    """Scatter of ``(N, 2)`` points, one colour per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    names = sorted(set(labels), key=lambda x: (0, int(x), "") if str(x).isdigit() else (1, 0, str(x)))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for k, name in enumerate(names):
        sel = torch.tensor([lab == name for lab in labels])
        ax.scatter(points[sel, 0].numpy(), points[sel, 1].numpy(), s=8, color=cmap(k % cmap.N), label=str(name))
    if len(names) <= 20:
        ax.legend(fontsize=6, markerscale=1.5, loc="best")
    ax.set_title(title, fontsize=9)
    return _save(plt, fig, path)


def plot_attention_maps(maps: list[tuple], path: Path, *, title: str = "", input_label: str = "encoder frame") -> Path:
    """One panel per example: attention weights, output step (rows) x input position (columns).

    ``maps`` holds ``(name, hypothesis, weights (steps, T), input tick labels or None, output tick labels)``.
    """
    plt = pyplot()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.8), squeeze=False)
    for ax, (name, hyp, w, x_labels, y_labels) in zip(axes[0], maps, strict=True):
        im = ax.imshow(w.numpy(), aspect="auto", origin="lower", interpolation="nearest", cmap="viridis",
                       vmin=0, vmax=1)
        ax.set_title(f"{name}\nhyp: {hyp[:44]}", fontsize=8)
        ax.set_xlabel(input_label)
        ax.set_ylabel("output step")
        if x_labels is not None and len(x_labels) == w.shape[1] <= 40:
            ax.set_xticks(range(len(x_labels)), x_labels, fontsize=7)
        if y_labels is not None and len(y_labels) == w.shape[0] <= 40:
            ax.set_yticks(range(len(y_labels)), y_labels, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def log_images(loggers, paths: dict[str, Path], *, step: int, warn: Callable[[str], None] = print) -> None:
    """Logs PNG files to every W&B logger; a failure is reported through ``warn``, never raised."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key, path in paths.items():
                try:
                    logger.log_image(key=key, images=[str(path)], step=step)
                except Exception as e:  # noqa: BLE001 - tracking must never end training
                    warn(f"[rnnlab] warning: could not log {key} to W&B: {e}")
