"""The Markdown table every bench script prints: first column left-aligned, the rest right."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def print_markdown(header: Sequence[str], rows: Sequence[Sequence[str]], out: Callable[[str], None] = print) -> None:
    table = [list(header)] + [list(row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    out("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table[1:]:
        out("| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |")
