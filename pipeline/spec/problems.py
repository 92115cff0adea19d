"""What a user reads when a spec cannot run: SpecError with one line per problem, each naming the
file, line and YAML path; pydantic's errors reworded; secrets never echoed."""

from __future__ import annotations

import difflib
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from pipeline._internal.yamlspec import LoadedYaml, line_for, format_path
from pipeline.errors import RaylineError


class SpecError(RaylineError, ValueError):
    """A spec that cannot run. The message names the file, line and YAML path of each problem."""

    title = "the spec is not valid"

    def __init__(self, problems: list[str]):
        super().__init__(problems)


class Origin:
    """The file a spec came from: lines for YAML paths, and the values to mask in messages."""

    def __init__(self, filename: str, loaded: Optional[LoadedYaml]):
        self.filename = filename
        self._loaded = loaded

    def where(self, *path: Any) -> str:
        """`spec.yaml:12` for a YAML path (the nearest enclosing key's line when the path itself
        was not written, e.g. a default)."""
        if self._loaded is None:
            return f"{self.filename}"
        line = self._loaded.lines.get(tuple(path))
        while line is None and path:
            path = path[:-1]
            line = self._loaded.lines.get(tuple(path))
        return f"{self.filename}:{line or 1}"

    def redact(self, text: str) -> str:
        """Replace every environment-supplied value in a string (e.g. a URL with a password)."""
        return mask(text, self._loaded) if self._loaded else text

    def problem(self, path: tuple, message: str) -> str:
        return self.redact(f"{self.where(*path)}: {format_path(path)}: {message}")


def mask(text: str, loaded: LoadedYaml) -> str:
    """Never echo a value that came from the environment, whichever validator quoted it."""
    for secret in sorted(loaded.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def describe_errors(exc: ValidationError, loaded: LoadedYaml, filename: str,
                    root: type[BaseModel]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        path, line, found = line_for(loaded.lines, loaded.data, tuple(error["loc"]))
        where = f"{filename}:{line}: {format_path(path)}"
        kind = error["type"]
        if kind == "extra_forbidden":
            key = path[-1] if path else "?"
            hint = _did_you_mean(str(key), root)
            message = f"{where}: unknown key {key!r}{hint}"
        elif kind == "missing":
            missing = error["loc"][-1]
            message = f"{where}: missing required key {missing!r}"
        else:
            text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            value = error.get("input")
            shown = "" if isinstance(value, (dict, list)) or kind.startswith(("value_error", "assertion")) \
                else f" (got {_show(loaded, path, value)})"
            message = f"{where}: {text}{shown}"
        message = mask(message, loaded)
        if message not in seen:
            seen.add(message)
            problems.append(message)
    return problems


def _show(loaded: LoadedYaml, path: tuple, value: Any) -> str:
    raw = _get(loaded.raw, path)
    if isinstance(raw, str) and "${" in raw:
        return repr(raw)  # never echo a substituted secret
    return repr(value)


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree



def _all_keys(root: type[BaseModel]) -> set[str]:
    """Every key of every section, for "did you mean": the models reachable from the root."""
    keys: set[str] = set()
    stack: list[type] = [root]
    seen: set[type] = set()
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        keys.update(model.model_fields)
        stack.extend(model.__subclasses__())
        for info in model.model_fields.values():
            stack.extend(_models_in(info.annotation))
    return keys


def _models_in(annotation: Any) -> list[type]:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _did_you_mean(key: str, root: type[BaseModel]) -> str:
    close = difflib.get_close_matches(key, sorted(_all_keys(root)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
