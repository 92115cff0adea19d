"""The input rules of a column, defined once (`ColumnRules`), and their compilers: `suite`
(validation), `request` (serving's pydantic model), `rows` (batch scoring's row checks)."""

from pipeline.rules.model import KINDS, NUMBER_KINDS, ColumnRules

__all__ = ["ColumnRules", "KINDS", "NUMBER_KINDS"]
