"""Write docs/metrics.md from the metric catalog in gateway/metrics.py (run after changing it)."""

from __future__ import annotations

from pathlib import Path

from gateway.metrics import GatewayMetrics, catalog_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def main() -> None:
    """Regenerate the page."""
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(catalog_markdown(GatewayMetrics()), encoding="utf-8")
    print(f"wrote {DOC.relative_to(DOC.parents[1])}")


if __name__ == "__main__":
    main()
