"""The pipeline spec, by section: pydantic v2 models of every section and `load_spec`, the only
YAML reader.

The models accept the seed's own spellings (`[0.001, 0.1, log]`, `control: 50%`,
`latency_p99 > 500ms`, `2_weeks`) and normalise them into plain values, so nothing downstream
re-parses text. Unknown keys and wrong types raise SpecError naming the YAML path and line.

Modules: `base` (the strict model, shares, durations), `data` (sources, feature selection,
expectations, versioning, split), `features` (transformations), `models` (families, scaling,
tuning), `evaluation` (metrics, selection, tracking), `serving`, `operations` (monitoring, A/B,
rollback), `card` (model card), `root` (the Spec and its cross-checks), `loader` (load_spec,
parse_spec), `problems` (SpecError and how problems are worded). Every section model is
importable from here.
"""

from pipeline.spec.base import Duration, Fraction, MetricName, Model, ShortForm
from pipeline.spec.card import ModelCard
from pipeline.spec.data import (
    ApiSource, Authentication, ColumnExpectation, DatabaseSource, DataVersioning, Expectations,
    FeatureSelection, FilesSource, Join, Pagination, Source, SourceBase, Split, StorageOptions,
)
from pipeline.spec.evaluation import (
    LATENCY_BUDGET_RE, CustomMetric, Evaluation, EvaluationPlan, Tracking,
)
from pipeline.spec.features import DerivedFeature, Transformation
from pipeline.spec.loader import load_spec, parse_spec
from pipeline.spec.models import (
    ModelFamily, Scaling, SearchChoice, SearchDimension, SearchRange, Tuning,
)
from pipeline.spec.operations import (
    ABTesting, Alerts, DataDrift, Infrastructure, ModelPerformance, Monitoring, Rollback,
    TrafficSplit, Trigger,
)
from pipeline.spec.problems import Origin, SpecError
from pipeline.spec.root import Spec, cross_checks
from pipeline.spec.serving import (
    Autoscaling, BatchServing, RestServing, ServingAuth, ServingOption, StreamingServing,
)

__all__ = [
    "ABTesting", "Alerts", "ApiSource", "Authentication", "Autoscaling", "BatchServing",
    "ColumnExpectation", "CustomMetric", "DataDrift", "DataVersioning", "DatabaseSource",
    "DerivedFeature", "Duration", "Evaluation", "EvaluationPlan", "Expectations",
    "FeatureSelection", "FilesSource", "Fraction", "Infrastructure", "Join", "LATENCY_BUDGET_RE",
    "MetricName", "Model", "ModelCard", "ModelFamily", "ModelPerformance", "Monitoring", "Origin",
    "Pagination", "RestServing", "Rollback", "Scaling", "SearchChoice", "SearchDimension",
    "SearchRange", "ServingAuth", "ServingOption", "ShortForm", "Source", "SourceBase", "Spec",
    "SpecError", "Split", "StorageOptions", "StreamingServing", "Tracking", "TrafficSplit",
    "Transformation", "Trigger", "Tuning", "cross_checks", "load_spec", "parse_spec",
]
