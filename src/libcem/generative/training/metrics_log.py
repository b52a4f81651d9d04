"""The run's metrics: `metrics.jsonl` (one line per logged step) and `loss.png`."""

from __future__ import annotations

import json
from pathlib import Path

from libcem.errors import LibcemError
from libcem.files import atomic_write_bytes
from libcem.generative.runs import StageRun


def parse_row(line: str) -> dict | None:
    """One metrics.jsonl line -> its row (a JSON object with an integer 'step'), or None."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
    return row if ok else None


class MetricsLog:
    def __init__(self, run: StageRun | Path) -> None:
        run = run if isinstance(run, StageRun) else StageRun(run)
        self.path, self.plot_path = run.metrics, run.loss_plot

    def rows(self) -> list[dict]:
        """The logged rows. A last line without its newline (a write cut short by a kill) is dropped
        unless it is a whole row; any other line that is not a row is a LibcemError."""
        if not self.path.is_file():
            return []
        *lines, torn = self.path.read_bytes().decode("utf-8", errors="replace").split("\n")
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = parse_row(line)
            if row is None:
                raise LibcemError(f"{self.path}:{n} is not a metrics row (a JSON object with a 'step'); "
                                  "delete that line or the file")
            out.append(row)
        last = parse_row(torn) if torn.strip() else None
        return out + ([last] if last is not None else [])

    def truncate_after(self, step: int) -> None:
        """On resume: forget lines logged after the checkpoint we resume from (step -1: all of them)."""
        kept = [r for r in self.rows() if r["step"] <= step] if step >= 0 else []
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, keys: tuple[str, ...] = ("loss",)) -> None:
        """Redraw loss.png from metrics.jsonl (matplotlib, no display needed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        extra = [k for k in ("psnr",) if k in rows[-1]]
        fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5 * (1 + len(extra)), 3.2), squeeze=False)
        steps = [r["step"] for r in rows]
        for key in keys:
            axes[0, 0].plot(steps, [r.get(key) for r in rows], label=key)
        axes[0, 0].set_yscale("log")
        axes[0, 0].set_xlabel("step")
        axes[0, 0].legend()
        for ax, key in zip(axes[0, 1:], extra):
            ax.plot(steps, [r[key] for r in rows], color="tab:green")
            ax.set_xlabel("step")
            ax.set_ylabel(key)
        fig.tight_layout()
        tmp = self.plot_path.with_name(".loss.tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(self.plot_path)
