"""The Ray Serve application: a FastAPI ingress in front of a model deployment.

`build_app` makes the typed FastAPI app from the model's input schema (so /docs and
/openapi.json describe the real fields) and binds the two deployments. The model deployment
loads its version from the MLflow registry itself, so replicas on any node start the same way.

No `from __future__ import annotations`: FastAPI reads the route annotations at definition.
"""

import hmac
import time
import uuid
from typing import Any, Dict, List, Optional, Union

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from pipeline.predictor import InputSchema
from serve.schemas import MAX_RECORDS, Health, ModelInfo, PredictionResponse, record_model


@serve.deployment
class ModelServer:
    """Holds one registered model version and scores lists of records."""

    def __init__(self, tracking_uri: str, model_name: str, version: str):
        import tempfile

        import mlflow

        from pipeline import registry
        from pipeline.predictor import Predictor, find_predictor_dir

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self._dir = tempfile.TemporaryDirectory(prefix="rayline-model-")
        self.version, path, _ = registry.download_model(model_name, version, self._dir.name)
        self.predictor = Predictor.load(find_predictor_dir(path))

    def predict(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        return self.predictor.predict_records(records)


def _clean_validation_errors(errors: List[dict], body: Any, fields: set) -> List[dict]:
    """One error per bad field, with loc ['body', <index>, field]. FastAPI reports a failing
    `record | list[record]` body once per union member; keep the member the client sent."""
    sent_list = isinstance(body, list)
    cleaned, seen = [], set()
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and isinstance(loc[1], str) and not loc[1] in (body if isinstance(body, dict) else {}):
            member_is_list = loc[1].startswith("list[")
            if member_is_list != sent_list:
                continue
            loc = ["body", *loc[2:]]
        entry = {"loc": loc, "msg": error.get("msg"), "type": error.get("type")}
        named = [part for part in loc if isinstance(part, str) and part in fields]
        if named:
            entry["field"] = named[0]
        key = (tuple(map(str, loc)), entry["type"])
        if key not in seen:
            seen.add(key)
            cleaned.append(entry)
    return cleaned


def build_fastapi(schema: InputSchema, info: Dict[str, str], rest) -> FastAPI:
    Record = record_model(schema, info["name"])
    field_names = {f.name for f in schema.fields}
    keys = [k.get_secret_value() for k in rest.auth.keys] if rest and rest.auth else []
    method = rest.auth.method if rest and rest.auth else None
    max_body = rest.max_body_bytes if rest else 10_000_000

    api = FastAPI(
        title=f"{info['name']} prediction API",
        version=str(info["version"]),
        description=f"Predictions from the registered MLflow model {info['name']} "
                    f"(version {info['version']}, {info['family']}), served by Ray Serve.",
    )

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={
            "detail": _clean_validation_errors(exc.errors(), getattr(exc, "body", None), field_names)})

    @api.middleware("http")
    async def _body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return JSONResponse(status_code=413, content={
                "detail": f"request body of {length} bytes is over the limit of {max_body}"})
        return await call_next(request)

    async def _authorize(request: Request) -> None:
        if not keys:
            return
        if method == "bearer":
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
        else:
            given = request.headers.get("x-api-key", "")
        if not any(hmac.compare_digest(given, k) for k in keys):
            raise HTTPException(status_code=401, detail="missing or wrong API key",
                                headers={"WWW-Authenticate": "Bearer" if method == "bearer" else "ApiKey"})

    model_info = ModelInfo(**info)
    id_column = info.get("id_column")

    @serve.ingress(api)
    class Ingress:
        def __init__(self, model):
            self.model = model

        @api.get("/health", response_model=Health, summary="Liveness and the model being served")
        async def health(self) -> Health:
            return Health(status="ok", model=model_info)

        @api.post("/predict", response_model=PredictionResponse, response_model_exclude_none=True,
                  summary="Get model predictions", dependencies=[Depends(_authorize)],
                  responses={401: {"description": "Missing or wrong API key"},
                             413: {"description": "Body over the size limit"},
                             422: {"description": "A field is missing, of the wrong type, or "
                                                  "outside the spec's expectations"}})
        async def predict(self, request: Request,
                          payload: Union[Record, List[Record]] = Body(  # type: ignore[valid-type]
                              ..., description="One record, or a list of records "
                                               f"(at most {MAX_RECORDS}).")) -> Dict[str, Any]:
            records = payload if isinstance(payload, list) else [payload]
            if len(records) > MAX_RECORDS:
                raise HTTPException(status_code=413, detail=f"at most {MAX_RECORDS} records per request")
            request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
            rows = [r.model_dump() for r in records]
            predictions = await self.model.predict.remote(rows)
            if id_column:
                for row, prediction in zip(rows, predictions):
                    if row.get(id_column) is not None:
                        prediction["id"] = row[id_column]
            return {"request_id": request_id, "model": model_info, "predictions": predictions}

    return Ingress


def build_app(spec, schema: InputSchema, info: Dict[str, str]):
    """The bound Serve application for `serve.run`."""
    rest = spec.serving("rest_api")
    options: Dict[str, Any] = {}
    if rest is not None:
        options = {"max_ongoing_requests": rest.max_ongoing_requests,
                   "max_queued_requests": rest.max_queued_requests}
        if rest.autoscaling is not None:
            a = rest.autoscaling
            options["autoscaling_config"] = {"min_replicas": a.min_replicas,
                                             "max_replicas": a.max_replicas,
                                             "target_ongoing_requests": a.target_ongoing_requests}
    model = ModelServer.options(name="model", **options).bind(
        spec.tracking.uri, spec.name, str(info["version"]))
    Ingress = serve.deployment(name="ingress", **options)(build_fastapi(schema, info, rest))
    return Ingress.bind(model)
