"""What one column must hold, said once: the model every input check is compiled from.

The spec's `expectations.columns` entries map onto it in `ColumnRules.from_expectation` (the only
place that reads a ColumnExpectation), and a registered model's input schema is a list of it
(`pipeline.predictor.FieldSpec` is a ColumnRules plus examples). Three compilers read it:

- `pipeline.rules.suite`: the Great Expectations suite and pandas checks validation runs on
  every Ray Data block;
- `pipeline.rules.request`: the pydantic field of POST /predict and of Kafka messages;
- `pipeline.rules.rows`: batch scoring's vectorised row checks.

The facts are shared; how strictly each entry point reads a value is not (a JSON body carries
types, a CSV carries text), so each compiler keeps its own judgement of what counts as a number,
a boolean or an allowed value. Their docstrings say where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

KINDS = ("numeric", "integer", "categorical", "string", "boolean", "datetime")
NUMBER_KINDS = ("numeric", "integer")


@dataclass
class ColumnRules:
    name: str
    kind: Optional[str]                       # one of KINDS; None: the spec declares no type
    nullable: bool = True
    minimum: Optional[float] = None           # inclusive; None: unbounded
    maximum: Optional[float] = None
    values: Optional[list[Any]] = None        # the allowed values; None: any
    unique: bool = False                      # over the whole dataset, so validation only
    regex: Optional[str] = None

    @classmethod
    def from_expectation(cls, expectation) -> "ColumnRules":
        """A spec `expectations.columns` entry (pipeline.spec.ColumnExpectation)."""
        low, high = expectation.range or (None, None)
        return cls(
            name=expectation.column, kind=expectation.type,
            nullable=expectation.nullable is not False,
            minimum=low, maximum=high,
            values=list(expectation.values) if expectation.values is not None else None,
            unique=bool(expectation.unique), regex=expectation.regex)

    @property
    def has_range(self) -> bool:
        # `range: [null, null]` bounds nothing: it is no rule (GE refuses a between with no bound)
        return self.minimum is not None or self.maximum is not None

    @property
    def is_number(self) -> bool:
        return self.kind in NUMBER_KINDS

    @property
    def record_range(self) -> bool:
        """Whether one record's value is checked against the range (serving and batch scoring):
        only for a number column, and not when a value list names every allowed value already."""
        return self.is_number and self.values is None and self.has_range

    def to_dict(self) -> dict:
        """schema.json's field layout. `unique` and `regex` appear only when set, so a schema
        without them reads as every registered model's schema.json does, by old code as well."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable,
                               "minimum": self.minimum, "maximum": self.maximum,
                               "values": list(self.values) if self.values is not None else None}
        if self.unique:
            out["unique"] = True
        if self.regex is not None:
            out["regex"] = self.regex
        return out
