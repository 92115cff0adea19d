"""The HTTP edges of the ingress that FastAPI does not cover as we need: a body-size limit
applied before anything is read, a chunked body read with the same limit, and pydantic's
validation errors worded as FastAPI words them, each naming the field.

No `from __future__ import annotations`: FastAPI reads annotations at definition.
"""

from typing import Any, List

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse


class BodyLimit:
    """413 for a body whose Content-Length is over the limit, before any of it is read. A plain
    ASGI middleware: Starlette's BaseHTTPMiddleware (`@app.middleware`) costs every request a
    task group and memory streams. Chunked bodies are limited as they are read (_read_body)."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > self.max_body:
                        response = JSONResponse(status_code=413, content={
                            "detail": f"request body of {int(value)} bytes is over the limit of {self.max_body}"})
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    if request.headers.get("content-length") is not None:
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def validation_detail(errors: List[dict], fields: set) -> List[dict]:
    """pydantic's errors as FastAPI words them (loc starting with "body"), each naming the field."""
    detail = []
    for error in errors:
        loc = ["body", *error.get("loc", ())]
        entry = {"loc": loc, "msg": error.get("msg"), "type": error.get("type")}
        named = [part for part in loc if isinstance(part, str) and part in fields]
        if named:
            entry["field"] = named[0]
        detail.append(entry)
    return detail


def clean_validation_errors(errors: List[dict], body: Any, fields: set) -> List[dict]:
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
