"""The `model_card` section: what the run cannot know (who made the model, what it is for, what
it must not be used for, which columns are sensitive); the card fills the rest from the run."""

from __future__ import annotations

from typing import Optional

from pipeline.spec.base import Model


class ModelCard(Model):
    developer: Optional[str] = None
    version: Optional[str] = None
    intended_use: Optional[str] = None
    out_of_scope: Optional[str] = None
    sensitive_features: list[str] = []
    limitations: list[str] = []
    ethical_considerations: Optional[str] = None
