"""TTFT CDF plots (PNG, matplotlib's Agg backend): one figure per workload, a line per policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def ttft_cdf_png(
    path: Path, title: str, ttfts: Mapping[str, Sequence[float]], upper_note: str = ""
) -> Path | None:
    """Write the CDF of each policy's TTFTs (simulated seconds, log x); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    try:
        for policy, values in ttfts.items():
            data = sorted(v for v in values if v > 0)
            if not data:
                continue
            ys = [(i + 1) / len(data) for i in range(len(data))]
            ax.step(data, ys, where="post", label=f"{policy} (n={len(data)})")
        ax.set_xscale("log")
        ax.set_xlabel("TTFT, simulated seconds (log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.0)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(title + (f"\n{upper_note}" if upper_note else ""), fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
