"""The progress of ``softmax-jax train``: a tqdm bar, or a line every tenth of the run."""

from __future__ import annotations

import sys


class Progress:
  """Called with each epoch's metrics row; :meth:`close` ends the bar.

  Without tqdm it prints a line every tenth of ``total`` epochs; with ``quiet`` nothing.
  The bar opens at the first epoch, so that an error before it prints one line only.
  """

  def __init__(self, total: int, quiet: bool):
    self.total = total
    self.quiet = quiet
    self._bar = None
    self._tqdm = None
    if not quiet:
      try:
        from tqdm import tqdm
      except ImportError:
        pass
      else:
        self._tqdm = tqdm

  def __call__(self, row: dict) -> None:
    if self.quiet:
      return
    if self._tqdm is None:
      step = max(1, self.total // 10)
      if row["epoch"] % step == 0 or row["epoch"] == self.total:
        print(f"epoch {row['epoch']}/{self.total}  loss {row['train_loss']:.4f}  "
              f"acc {row['train_accuracy']:.3f}  val_loss {row['val_loss']:.4f}",
              file=sys.stderr)
      return
    if self._bar is None:
      self._bar = self._tqdm(total=self.total, unit="epoch", file=sys.stderr,
                             dynamic_ncols=True)
    bar = self._bar
    bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=f"{row['train_accuracy']:.3f}",
                    val_loss=f"{row['val_loss']:.4f}", val_acc=f"{row['val_accuracy']:.3f}",
                    refresh=False)
    bar.update(row["epoch"] - bar.n)  # a resumed run starts where its checkpoint left off

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
