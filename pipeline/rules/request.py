"""ColumnRules -> one field of the pydantic model a JSON record is checked against (POST /predict
and Kafka messages; serve.schemas.record_model puts the fields together).

A JSON value carries its type, so this compiler is the strict one:
- a number field takes JSON numbers only (integers too): no text, no booleans;
- a boolean field takes true / false only;
- a value list is a Literal: the value must equal one of them (1.0 matches 1, the text '1' does
  not), and it replaces the range, as in batch scoring;
- every field is required; a nullable one may be null.
Batch scoring reads text files, so pipeline.rules.rows takes '12.5' as a number and 'yes' as a
boolean; validation (pipeline.rules.suite) also checks the range when a value list is given.
"""

from typing import Any, Literal, Optional

from pydantic import Field, StrictBool, StrictFloat, StrictStr
from pydantic.fields import FieldInfo

from pipeline.rules.model import ColumnRules


def field_type(rules: ColumnRules) -> Any:
    if rules.values is not None:
        base = Literal[tuple(rules.values)]  # type: ignore[misc]
    elif rules.is_number:
        base = StrictFloat  # JSON integers are accepted too; strings are not
    elif rules.kind == "boolean":
        base = StrictBool
    else:
        base = StrictStr
    return Optional[base] if rules.nullable else base


def request_field(rules: ColumnRules, examples: Optional[list[Any]] = None) -> tuple[Any, FieldInfo]:
    """(annotation, FieldInfo): one entry of pydantic.create_model's fields."""
    constraints: dict[str, Any] = {}
    if rules.record_range:
        if rules.minimum is not None:
            constraints["ge"] = rules.minimum
        if rules.maximum is not None:
            constraints["le"] = rules.maximum
    return field_type(rules), Field(..., examples=examples or None, **constraints)
