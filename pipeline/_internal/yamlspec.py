"""YAML -> plain data with a line for every path, and `${VAR}` substitution.

ruamel.yaml reads YAML 1.2 (so `on:` stays a key and `1e-3` is a number, unlike PyYAML's 1.1)
and keeps each key's line; we flatten that into {path tuple: line} so that pydantic errors,
which carry a `loc` path, can be reported as `spec.yaml:42`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import RaylineError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[Any, ...]


class SpecLoadError(RaylineError, ValueError):
    """The file is not YAML, or names an environment variable that is not set."""

    title = "the spec is not valid"


@dataclass
class LoadedYaml:
    data: Any                     # values with ${VAR} substituted
    raw: Any                      # the same tree as written (secrets stay as ${VAR})
    lines: dict[Path_, int]       # path -> 1-based line
    secrets: set[str] = field(default_factory=set)  # values that came from the environment


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_yaml(text: str, filename: str, env: Mapping[str, str] | None = None) -> LoadedYaml:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise SpecLoadError(f"{filename}{line}: not valid YAML: {exc.problem or exc}") from None
    except YAMLError as exc:
        raise SpecLoadError(f"{filename}: not valid YAML: {exc}") from None
    if tree is None:
        raise SpecLoadError(f"{filename}: the spec is empty")
    lines: dict[Path_, int] = {(): 1}
    raw = _plain(tree, (), lines)
    environ = os.environ if env is None else env
    secrets: set[str] = set()
    data = _substitute(raw, (), environ, lines, filename, secrets)
    return LoadedYaml(data=data, raw=raw, lines=lines, secrets=secrets)


def _plain(node: Any, path: Path_, lines: dict[Path_, int]) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            key_path = path + (str(key),)
            try:
                lines[key_path] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                lines[key_path] = lines.get(path, 1)
            out[str(key)] = _plain(value, key_path, lines)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for index, value in enumerate(node):
            item_path = path + (index,)
            try:
                lines[item_path] = node.lc.item(index)[0] + 1
            except (KeyError, TypeError, AttributeError, IndexError):
                lines[item_path] = lines.get(path, 1)
            out_list.append(_plain(value, item_path, lines))
        return out_list
    # ruamel's scalar subclasses (ScalarFloat, ScalarBoolean, ...) become plain Python values.
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _substitute(value: Any, path: Path_, environ: Mapping[str, str], lines: dict[Path_, int],
                filename: str, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, path + (k,), environ, lines, filename, secrets)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, path + (i,), environ, lines, filename, secrets)
                for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            resolved = environ[name]
        elif default is not None:
            return default
        else:
            line = lines.get(path, 1)
            raise SpecLoadError(
                f"{filename}:{line}: {format_path(path)}: environment variable {name} is not set"
            )
        if resolved:
            secrets.add(resolved)
        return resolved

    return _ENV_RE.sub(replace, value)


def line_for(lines: Mapping[Path_, int], data: Any, loc: tuple) -> tuple[Path_, int, bool]:
    """Map a pydantic error location onto the YAML tree.

    pydantic's loc mixes data keys with union member tags ('database', 'function-after[...]');
    we keep the parts that exist in the data. Returns (path, line, whether the whole loc was found).
    """
    node, path = data, ()
    found = True
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node, path = node[part], path + (part,)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, path = node[part], path + (part,)
        elif isinstance(part, str) and (part in _UNION_TAGS or "[" in part or part.startswith("function")):
            continue
        else:
            found = False
            # Keep walking: a later part may still match (e.g. loc through a union member tag).
    return path, lines.get(path, 1), found


# Tags pydantic puts into `loc` for discriminated unions and wrapped validators.
_UNION_TAGS = {"database", "api", "files", "rest_api", "batch", "streaming", "list", "dict", "str",
               "int", "float", "bool"}


def read_spec_text(path: str | os.PathLike) -> tuple[str, str]:
    file = Path(path)
    if not file.exists():
        raise SpecLoadError(f"{path}: no such spec file")
    return file.read_text(encoding="utf-8"), str(path)
