"""`load_spec`, the only YAML reader: read, substitute ${VAR}, resolve relative paths, validate
every section and every cross-check, and report every problem at once with its line."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from pipeline._internal.yamlspec import SpecLoadError, load_yaml, read_spec_text
from pipeline.spec.data import DataVersioning
from pipeline.spec.evaluation import Tracking
from pipeline.spec.problems import Origin, SpecError, describe_errors
from pipeline.spec.root import Spec, cross_checks
from pipeline.spec.serving import BatchServing


def load_spec(path: str | os.PathLike, env: Mapping[str, str] | None = None,
              base_dir: str | os.PathLike | None = None) -> Spec:
    """Read, substitute and validate a spec file. Relative local paths are resolved against
    base_dir (default: the current directory), as `rayline` and `ray job submit` run from the
    project root."""
    try:
        text, filename = read_spec_text(path)
        return parse_spec(text, filename, env=env, base_dir=base_dir)
    except SpecLoadError as exc:
        raise SpecError([str(exc)]) from None


def parse_spec(text: str, filename: str = "<spec>", env: Mapping[str, str] | None = None,
               base_dir: str | os.PathLike | None = None) -> Spec:
    try:
        loaded = load_yaml(text, filename, env)
    except SpecLoadError as exc:
        raise SpecError([str(exc)]) from None
    if not isinstance(loaded.data, dict):
        raise SpecError([f"{filename}:1: the spec must be a mapping of sections"])
    data = _resolve_paths(loaded.data, Path(base_dir or os.getcwd()))
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_errors(exc, loaded, filename, Spec)) from None
    spec._origin = loaded
    spec._filename = filename
    problems = cross_checks(spec)
    if problems:
        origin = Origin(filename, loaded)
        raise SpecError([origin.problem(path, message) for path, message in problems])
    return spec



def _resolve_paths(data: dict, base: Path) -> dict:
    """Absolute paths for local files: Ray workers do not share the driver's working directory."""
    data = copy.deepcopy(data)

    def local(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            return str(base / value)
        return value

    for source in data.get("sources") or []:
        if isinstance(source, dict) and source.get("type") == "files" and "path" in source:
            source["path"] = local(source["path"])
        if isinstance(source, dict) and source.get("type") == "database":
            conn = source.get("connection")
            if isinstance(conn, str) and conn.startswith("sqlite:///") and not conn.startswith("sqlite:////"):
                rel = conn[len("sqlite:///"):]
                if rel and rel != ":memory:":
                    source["connection"] = "sqlite:///" + str(base / rel)
    versioning = data.setdefault("data_versioning", {})
    if isinstance(versioning, dict):
        versioning["storage"] = local(versioning.get("storage", DataVersioning.model_fields["storage"].default))
    tracking = data.setdefault("tracking", {}) if isinstance(data.get("tracking", {}), dict) else None
    if tracking is not None:
        uri = tracking.get("uri", Tracking().uri)
        if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            tracking["uri"] = "sqlite:///" + str(base / uri[len("sqlite:///"):])
        if "artifact_location" in tracking:
            tracking["artifact_location"] = local(tracking["artifact_location"])
    for option in data.get("serving_options") or []:
        if isinstance(option, dict) and option.get("name") == "batch":
            option.setdefault("output", BatchServing.model_fields["output"].default)
            for key in ("input", "output"):
                if key in option:
                    option[key] = local(option[key])
    return data

