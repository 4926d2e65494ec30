"""Plain-text and Markdown tables for benchmark results."""

from __future__ import annotations

from collections.abc import Sequence


def render(rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """The rows (the first is the header) as an aligned table; numbers right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def numeric(text: str) -> bool:
        return text[:1].isdigit() or (text[:1] in "-+≤≥" and text[1:2].isdigit())

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if numeric(cell) else cell.ljust(width)
            for cell, width in zip(row, widths, strict=True)
        ]
        return ("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells).rstrip()

    out = [line(rows[0])]
    if markdown:
        out.append("| " + " | ".join("-" * w for w in widths) + " |")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(row) for row in rows[1:]]
    return "\n".join(out)
