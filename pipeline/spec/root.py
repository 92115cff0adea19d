"""The whole spec: one field per section, the views downstream reads (never the YAML), and the
cross-checks that span sections, each owned by its section's module."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PrivateAttr

from pipeline._internal.yamlspec import LoadedYaml
from pipeline.spec import data, evaluation, features, models, serving
from pipeline.spec.card import ModelCard
from pipeline.spec.data import (
    DataVersioning, Expectations, FeatureSelection, Source, Split,
)
from pipeline.spec.evaluation import Evaluation, EvaluationPlan, Tracking
from pipeline.spec.features import Transformation
from pipeline.spec.models import ModelFamily, Scaling, Tuning
from pipeline.spec.base import Model
from pipeline.spec.operations import ABTesting, Monitoring, Rollback
from pipeline.spec.problems import Origin
from pipeline.spec.serving import SERVING_MODELS, ServingOption


class Spec(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    description: str = ""
    seed: int = 42
    sources: list[Source] = Field(min_length=1)
    target: str
    problem_type: Literal["classification", "regression"]
    id_column: Optional[str] = None
    features: FeatureSelection = FeatureSelection()
    expectations: Expectations = Expectations()
    transformations: list[Transformation] = []
    data_versioning: DataVersioning = DataVersioning()
    split: Split = Split()
    baseline_models: list[ModelFamily] = ["logistic_regression", "xgboost"]
    advanced_models: list[ModelFamily] = []
    selection_criteria: list[str] = ["auto"]
    model_params: dict[ModelFamily, dict[str, Any]] = {}
    scaling: Scaling = Scaling()
    tuning: Optional[Tuning] = None
    evaluation: Evaluation = Evaluation()
    tracking: Tracking = Tracking()
    serving_options: list[ServingOption] = []
    monitoring: Monitoring = Monitoring()
    ab_testing: Optional[ABTesting] = None
    rollback: Optional[Rollback] = None
    model_card: ModelCard = ModelCard()

    _origin: Optional[LoadedYaml] = PrivateAttr(default=None)
    _filename: str = PrivateAttr(default="<spec>")

    # ---- derived views: everything downstream reads these, never the YAML

    @property
    def model_families(self) -> list[str]:
        return list(dict.fromkeys([*self.baseline_models, *self.advanced_models]))

    @property
    def metric_names(self) -> list[str]:
        return evaluation.metric_names(self.evaluation, self.problem_type)

    @property
    def primary_metric(self) -> tuple[str, str]:
        """(metric, 'max'|'min') that ranks models: the first metric in selection_criteria."""
        return evaluation.primary_metric(self.selection_criteria, self.problem_type,
                                         tuple(self.evaluation.custom))

    @property
    def evaluation_plan(self) -> EvaluationPlan:
        return evaluation.plan(self)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def serving(self, kind: str):
        """The serving option `kind` (rest_api, batch, streaming), or None when not listed."""
        return next((s for s in self.serving_options if s.name == kind), None)

    def serving_or_defaults(self, kind: str):
        """The serving option `kind`, or its model's defaults when the spec does not list it:
        consumers read defaults from the models, never re-type them."""
        return self.serving(kind) or SERVING_MODELS[kind](name=kind)

    @property
    def filename(self) -> str:
        return self._filename

    @property
    def origin(self) -> Origin:
        """Where the spec came from: `where(*path)` for a YAML path's line, `redact(text)`.
        Rooms that report problems take this instead of the whole spec."""
        return Origin(self._filename, self._origin)

    def where(self, *path: Any) -> str:
        """`spec.yaml:12` for a YAML path, for errors found after loading (e.g. a missing column)."""
        return self.origin.where(*path)

    def redacted(self) -> dict:
        """The spec as written, with ${VAR} placeholders instead of their values: safe to log."""
        return self._origin.raw if self._origin else self.model_dump(mode="json")

    def redact(self, text: str) -> str:
        """Replace every environment-supplied value in a string (e.g. a URL with a password)."""
        return self.origin.redact(text)


def cross_checks(spec: Spec) -> list[tuple[tuple, str]]:
    """Rules that span sections, each as (YAML path, message), checked after the models parse;
    each section's module owns its rules."""
    return [*data.check(spec), *models.check(spec, evaluation.known_metrics(spec)),
            *evaluation.check(spec), *serving.check(spec), *features.check(spec)]
