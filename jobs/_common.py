"""What every job shares: run the workload, print an expected error's problems to stderr with
the reason on the last line, and exit with its code (pipeline.errors.describe: the same mapping
the `rayline` command uses)."""

from __future__ import annotations

import sys
from typing import Callable, Mapping, Optional


def run_job(work: Callable[[], int], outcome: Optional[str] = None,
            titles: Optional[Mapping[type, str]] = None) -> int:
    from pipeline.errors import describe

    try:
        return work()
    except Exception as exc:
        failure = describe(exc, outcome, titles)
        if failure is None:
            raise
        for line in failure.problems:
            print(f"  {line}", file=sys.stderr)
        print(f"error: {failure.title}", file=sys.stderr, flush=True)
        return failure.exit_code
