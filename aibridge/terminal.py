"""What the CLI prints for people: server values escaped, tables aligned.

Names, ids and messages come from the config service, and so from whoever wrote them
(or from rows written before the service checked them). A control character would act
on the terminal: ESC sequences recolour or rewrite the screen, a newline forges a table
row, a bidirectional override reorders the line. `escape` shows each non-printable
character as Python would spell it (`\\n`, `\\x1b`, `\\u202e`); `table` escapes every cell.
"""

from __future__ import annotations

from collections.abc import Sequence


def escape(value: object) -> str:
    """`value` as text with every non-printable character escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, every cell escaped; no trailing spaces."""
    cells = [[escape(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(c) for c in column) for column in zip(*cells, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
