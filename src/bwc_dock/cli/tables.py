"""Human tables: untrusted text shown as text.

Camera serials, file names, officer ids and error messages come from cameras, CSV
files and storage, so a cell is never read as markup (a file named ``[/x].MP4`` once
made ``clips`` fail with a Rich ``MarkupError`` and show no rows at all) and its
control and format characters are shown escaped (``\\x1b``, ``\\u202e``): an escape
sequence from a camera must not repaint the supervisor's terminal, nor a right-to-left
override reverse what a name appears to say.

On a terminal the table is drawn by rich (loaded only then); elsewhere it is plain
text in aligned columns, which scripts and ``less`` read as well.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import click

from bwc_dock.names import display_text


def shown(value: object) -> str:
    """``value`` as text safe to print: hidden characters written as escapes."""
    return "-" if value is None else display_text(str(value))


@dataclass
class Table:
    """Columns and rows of text; ``alarmed`` rows are drawn in red on a terminal."""

    columns: Sequence[str]
    title: str | None = None
    rows: list[tuple[list[str], bool]] = field(default_factory=list)

    def add_row(self, *cells: object, alarmed: bool = False) -> None:
        self.rows.append(([shown(cell) for cell in cells], alarmed))

    def print(self) -> None:
        if sys.stdout.isatty():
            self._print_rich()
        else:
            self._print_plain()

    def _print_plain(self) -> None:
        header = [shown(column) for column in self.columns]
        widths = [len(column) for column in header]
        for cells, _alarmed in self.rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, cells, strict=True)]
        if self.title:
            click.echo(shown(self.title))
        for cells in [header, *(cells for cells, _alarmed in self.rows)]:
            line = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            click.echo(line.rstrip())

    def _print_rich(self) -> None:
        from rich.console import Console
        from rich.table import Table as RichTable
        from rich.text import Text

        table = RichTable(title=Text(shown(self.title)) if self.title else None)
        for column in self.columns:
            table.add_column(Text(shown(column)))
        for cells, alarmed in self.rows:
            table.add_row(*(Text(cell) for cell in cells), style="bold red" if alarmed else None)
        Console().print(table)
