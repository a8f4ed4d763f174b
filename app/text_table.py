"""Rows as a plain-text table: what the CLI prints and the scheduler logs."""

from __future__ import annotations


def table(header: tuple[str, ...], *rows: tuple[object, ...]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    cells = [tuple(map(str, row)) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
