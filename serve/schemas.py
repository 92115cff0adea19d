"""Request and response models. The record model is built from the model's training input schema,
one field per input compiled from its rules by pipeline.rules.request.

No `from __future__ import annotations` here: FastAPI resolves these classes at route definition.
"""

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

from pipeline.predictor import InputSchema
from pipeline.rules.request import request_field

MAX_RECORDS = 10_000


def record_model(schema: InputSchema, model_name: str) -> type[BaseModel]:
    """One record: every input field required (null allowed where the spec allows it); other
    keys (an id, an A/B assignment key) pass through."""
    fields: Dict[str, Any] = {spec.name: request_field(spec, spec.examples) for spec in schema.fields}
    name = "".join(part.capitalize() for part in model_name.replace("-", "_").replace(".", "_").split("_"))
    return create_model(f"{name}Record", __config__=ConfigDict(extra="allow"), **fields)


class ModelInfo(BaseModel):
    name: str
    version: str
    family: str
    run_id: str


class Prediction(BaseModel):
    prediction: Union[StrictInt, StrictFloat, StrictStr, StrictBool]
    probabilities: Optional[Dict[str, float]] = Field(
        None, description="Class probabilities (classification only), keyed by class label.")
    id: Optional[Union[StrictInt, StrictStr]] = Field(None, description="The record's id_column value, when sent.")
    variant: str = Field(..., description="A/B variant that scored this record: control or treatment.")
    model_version: str = Field(..., description="Registered model version that scored this record.")
    warnings: Optional[List[str]] = Field(None, description="Scored, but worth a look: e.g. a category "
                                                            "the model never saw in training.")


class PredictionResponse(BaseModel):
    request_id: str
    model: ModelInfo
    predictions: List[Prediction]

    model_config = ConfigDict(protected_namespaces=())


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    variants: Dict[str, str] = Field(default_factory=dict, description="variant -> model version")


class VariantInfo(BaseModel):
    name: str
    version: str
    family: str
    run_id: str
    data_versions: Dict[str, Any] = {}
    test_metrics: Dict[str, float] = {}


class Metadata(BaseModel):
    name: str
    mode: str
    traffic_split: Dict[str, float]
    assignment_key: Optional[str]
    variants: Dict[str, VariantInfo]


class Feedback(BaseModel):
    """An outcome for a prediction: any of label, conversion, revenue, plus free-form fields."""
    request_id: str
    position: int = Field(0, ge=0, description="Index of the record in its request (0 for one record).")
    label: Optional[Union[StrictInt, StrictFloat, StrictStr, StrictBool]] = None
    conversion: Optional[bool] = None
    revenue: Optional[float] = None

    model_config = ConfigDict(extra="allow")


class FeedbackReceipt(BaseModel):
    request_id: str
    stored: bool
