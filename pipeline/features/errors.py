"""FeatureError: its own module so that the spec (which reads the step registry) and the value
conversions can raise it without importing the pipeline, and so without pandas."""

from __future__ import annotations

from typing import Optional

from pipeline.errors import RaylineError


class FeatureError(RaylineError, ValueError):
    """A feature pipeline that cannot be built, fitted or applied; the message names the column
    and the transformation involved. `transformation` (the spec name of the transformation) and
    `column` are set where the error is about one of them, so that the training stage can point
    at the transformation's line in the spec."""

    title = "the feature pipeline cannot be built"

    def __init__(self, message: str, transformation: Optional[str] = None,
                 column: Optional[str] = None):
        super().__init__(message)
        self.transformation = transformation
        self.column = column
