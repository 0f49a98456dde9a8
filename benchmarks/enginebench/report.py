"""Rows of figures, the tables they print as, and the figures section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
HEADERS = ("figure", "measured", "direct (backend)", "target", "ratio / verdict")


@dataclass
class Row:
    """One line of a configuration's table."""

    number: int  # the figure it belongs to; rows print in this order
    figure: str
    measured: str
    direct: str
    target: str
    verdict: str


def verdict(ok: bool, ratio: str = "") -> str:
    return f"{ratio} · {'OK' if ok else 'MISSED'}" if ratio else ("OK" if ok else "MISSED")


def not_reached(number: int, figure: str, target: str, why: str) -> Row:
    return Row(number, figure, f"not reached ({why})", "-", target, "MISSED")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def added_ms(seconds: float) -> str:
    return f"{seconds * 1000:+.0f} ms"


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, padded so it also reads well in a terminal."""
    cells = [HEADERS] + [
        (r.figure, r.measured, r.direct, r.target, r.verdict) for r in sorted(rows, key=lambda r: r.number)
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> str:
    """nproc, CPU model, Python and the date, for the record."""
    model = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}, {date}"


def write_doc(sections: dict[str, str], wall_seconds: float, command: str) -> None:
    """Replace the figures section of docs/benchmarks.md (between the markers) with this run's."""
    parts = [f"Last full run: {machine()}; `{command}` took {wall_seconds:.0f} s.", ""]
    for title, text in sections.items():
        parts += [f"### {title}", "", text, ""]
    figures = BEGIN + "\n" + "\n".join(parts).rstrip() + "\n" + END
    text = DOC.read_text() if DOC.exists() else f"# Engine benchmarks\n\n## Figures\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Figures\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + figures + rest.split(END, 1)[1])
