"""Figures of a training run (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

import numpy as np


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def curves(history: list[dict], path) -> None:
  """Loss and accuracy per epoch, training and validation, side by side."""
  plt = _pyplot()
  epochs = [r["epoch"] for r in history]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, key, label in ((axes[0], "loss", "cross-entropy (log-loss)"),
                         (axes[1], "accuracy", "accuracy")):
    ax.plot(epochs, [r[f"train_{key}"] for r in history], label="train (during epoch)")
    val = [r[f"val_{key}"] for r in history]
    if not all(np.isnan(v) for v in val):
      ax.plot(epochs, val, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0].set_yscale("log")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def confusion(y_true, y_pred, class_names, path, title="test set") -> np.ndarray:
  """Confusion matrix (rows: true class, columns: predicted); returns the counts."""
  plt = _pyplot()
  k = len(class_names)
  counts = np.zeros((k, k), np.int64)
  np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
  size = 2.5 + 0.45 * k
  fig, ax = plt.subplots(figsize=(size + 1, size))
  im = ax.imshow(counts, cmap="Blues")
  ax.set_xticks(range(k), class_names, rotation=45 if k > 5 else 0)
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(f"confusion matrix, {title}")
  for i in range(k):
    for j in range(k):
      ax.text(j, i, str(counts[i, j]), ha="center", va="center",
              color="white" if counts[i, j] > counts.max() / 2 else "black")
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return counts


def decision_regions(predict, x, y, feature_names, class_names, path, *, title="") -> None:
  """Regions of a 2-feature classifier over a grid, with the points on top.

  ``predict`` maps ``[m, 2]`` points (in the coordinates of ``x``) to classes.
  """
  plt = _pyplot()
  x = np.asarray(x)
  pad = 0.5
  lo, hi = x.min(axis=0) - pad, x.max(axis=0) + pad
  g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
  grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(x.dtype)
  regions = np.asarray(predict(grid)).reshape(g0.shape)
  fig, ax = plt.subplots(figsize=(6, 4.8))
  cmap = plt.get_cmap("Pastel1" if len(class_names) <= 9 else "tab20")
  # An image, not a mesh of 90,000 cells: the layout and the legend's "best" place measure
  # every cell of a mesh (most of the time the figure took), and an image has no cells.
  ax.imshow(regions, cmap=cmap, vmin=0, vmax=cmap.N - 1, origin="lower", aspect="auto",
            interpolation="nearest", extent=(lo[0], hi[0], lo[1], hi[1]))
  bold = plt.get_cmap("Set1" if len(class_names) <= 9 else "tab20")
  for c, name in enumerate(class_names):
    pts = x[np.asarray(y) == c]
    ax.scatter(pts[:, 0], pts[:, 1], color=bold(c), edgecolor="k", s=22, label=name)
  ax.set_xlabel(f"{feature_names[0]} (standardised)")
  ax.set_ylabel(f"{feature_names[1]} (standardised)")
  ax.set_title(title)
  ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
