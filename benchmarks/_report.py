"""The one table every benchmark prints, alone or in ``python -m benchmarks``."""

from __future__ import annotations

from typing import Any


def table(rows: list[dict[str, Any]]) -> str:
    """Rows (``benchmark``, ``case``, ``value``, ``unit``, optional ``ratio``, ``anchor``,
    ``target``, ``met``) as an aligned text table."""
    header = ("benchmark", "case", "value", "ratio", "target", "met")
    table = [header]
    for row in rows:
        ratio = row.get("ratio")
        met = row.get("met")
        table.append(
            (
                str(row["benchmark"]),
                str(row["case"]),
                f"{row['value']:,.{2 if row['unit'] == 'x' else 1}f} {row['unit']}",
                "" if ratio is None else f"{ratio:.2f}x {row.get('anchor', '')}".rstrip(),
                str(row.get("target", "")),
                "" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
