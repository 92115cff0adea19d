"""Stage-by-stage progress on the terminal: a spinner while a stage runs, a line when it ends."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console


class Stages:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, title: str) -> Iterator["StageNote"]:
        note = StageNote()
        start = time.perf_counter()
        try:
            with self.console.status(f"[bold]{title}[/]…", spinner="dots"):
                yield note
        except BaseException:
            elapsed = time.perf_counter() - start
            self.timings[title] = elapsed
            self.console.print(f"[red]✗[/] {title}  [dim]({elapsed:.1f} s)[/]")
            raise
        elapsed = time.perf_counter() - start
        self.timings[title] = elapsed
        detail = f"  {note.text}" if note.text else ""
        self.console.print(f"[green]✓[/] {title}{detail}  [dim]({elapsed:.1f} s)[/]")

    def info(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")


class StageNote:
    """What a stage reports on its closing line (`5,000 rows from 1 source`)."""

    def __init__(self) -> None:
        self.text = ""

    def __call__(self, text: str) -> None:
        self.text = text
