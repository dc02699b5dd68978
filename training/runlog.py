"""Per-epoch run logs: ``log.csv`` (always) and TensorBoard event files (``tb/``, when ``tensorboard`` is
installed: ``pip install cspon-rs[train]``).

Every numeric field of an epoch record (train loss, learning rate, validation F1s, threshold, seconds) becomes a
CSV column and a TensorBoard scalar ``<field>`` at step = epoch. The CSV is rewritten atomically each epoch from
all records so far, so a resumed run continues the same file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "tensorboard_available"]


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` can write event files (the ``tensorboard`` package is installed)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class RunLogger:
    """Writes ``<run>/log.csv`` and ``<run>/tb/events.*`` (does nothing when ``enabled`` is False).

    Args:
        run_dir: The run folder.
        enabled: False in the processes of a multi-process run that do not write files.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        csv_path = self.run_dir / "log.csv"
        if enabled and csv_path.is_file():  # resumed run: keep the epochs already logged
            with csv_path.open(encoding="utf-8", newline="") as fh:
                self.rows = [dict(r) for r in csv.DictReader(fh)]
        self._tb: Any = None
        if enabled and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        """Add one epoch's record (must hold ``epoch``)."""
        if not self.enabled:
            return
        from cspon_rs.training.provenance import atomic_write_text

        epoch = int(record["epoch"])
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [dict(record)]
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "log.csv", buf.getvalue())
        if self._tb is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, float(value), global_step=epoch)
            self._tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
