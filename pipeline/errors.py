"""The one error root, and the one handler that turns an error into what a user reads.

Every error rayline expects to meet (a bad spec, a source that cannot be read, data that fails
validation, a champion below its thresholds, a model that is not registered, a broker that
stops answering) is a `RaylineError`: it carries its problems (one line each, naming the spec
location where there is one) and its exit code. Each room defines its own subclasses next to
the code that raises them; the CLI and the jobs print them through `describe` and exit with its
code, so the mapping from an exception to a message and an exit code lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping, Optional, Sequence, Union


class RaylineError(Exception):
    """Root of every error rayline reports to a user.

    `problems`: one line each (the message when there is one problem); `where`: the spec
    location the error refers to (`spec.yaml:12`), when there is one; `exit_code`: what the
    command exits with; `title`: the headline a command prints above the problems."""

    exit_code: ClassVar[int] = 1
    title: ClassVar[str] = "error"
    #: What did not happen because of this error, when it says more than the command's own
    #: phrase (a refused run trained models but registered none).
    outcome: ClassVar[Optional[str]] = None

    def __init__(self, problems: Union[str, Sequence[str]] = (), *, where: Optional[str] = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.where = where
        super().__init__("\n".join(self.problems))


class NotFound(RaylineError, LookupError):
    """Something the command needs is not there: a registered model or alias, a data version,
    a run's leaderboard, a search to resume."""

    title = "not found"


@dataclass(frozen=True)
class Failure:
    """What a command prints and exits with."""
    title: str
    problems: list[str]
    exit_code: int


def describe(exc: BaseException, outcome: Optional[str] = None,
             titles: Optional[Mapping[type, str]] = None) -> Optional[Failure]:
    """The failure to report for `exc`, or None when it is not one rayline expects (a bug: let
    the traceback through). `outcome` says what the command did not do ("nothing was
    trained") and is appended to the headline; `titles` replaces the headline of some error
    classes where the command knows better what failed (a SpecError found while reading the
    data: "the spec does not match the data")."""
    if not isinstance(exc, RaylineError):
        return None
    headline = next((t for cls, t in (titles or {}).items() if isinstance(exc, cls)), None) \
        or getattr(exc, "headline", None) or exc.title
    suffix = exc.outcome or outcome
    if suffix:
        headline = f"{headline}; {suffix}"
    return Failure(headline, list(exc.problems) or [str(exc)], exc.exit_code)
