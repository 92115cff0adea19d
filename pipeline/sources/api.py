"""HTTP JSON API source: pages fetched with httpx, records -> Arrow -> one Ray Dataset.

Fetching happens in the driver, not in Ray tasks: cursor pagination is sequential (each page
names the next), page-number APIs are usually rate limited per client, and one client keeps
retries and `Retry-After` waits coherent. API sources are small next to files and databases;
the records become an Arrow table and `ray.data.from_arrow` hands it to the rest of the pipeline.

Retries: connection errors and 408/425/429/500/502/503/504 are retried `retries` times with
exponential backoff (0.5 s, 1 s, 2 s, ... capped at 30 s); a `Retry-After` header (seconds or an
HTTP date) overrides the backoff, capped at 60 s. 401/403 fail at once with the endpoint and the
authentication method named, never the secret.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Optional

import httpx

from pipeline.errors import RaylineError
from pipeline.spec import ApiSource

log = logging.getLogger("rayline.sources.api")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60.0
USER_AGENT = "rayline (+https://github.com/rayline)"

_MISSING = object()


class ApiError(RaylineError, RuntimeError):
    """An API source that cannot be read; the message names the endpoint, never a secret.
    `read_sources` reports it as a SourceError naming the source and its spec line."""

    title = "a source could not be read"


def read_api(source: ApiSource):
    from pipeline.sources import arrow_dataset

    records = fetch_records(source)
    if not records:
        raise ApiError(f"{_endpoint(source)} returned no records")
    return arrow_dataset(records_to_table(records))


def fetch_records(source: ApiSource, *, client: Optional[httpx.Client] = None,
                  sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Every record of every page, in order. `client` and `sleep` are for tests."""
    own = client is None
    client = client or make_client(source)
    try:
        records: list[dict] = []
        for page in iter_pages(source, client, sleep):
            records.extend(page)
        return records
    finally:
        if own:
            client.close()


def make_client(source: ApiSource) -> httpx.Client:
    auth_method = source.authentication
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **source.headers}
    secret_headers: list[str] = []
    auth: Optional[httpx.Auth] = None
    if auth_method.method == "bearer":
        headers["Authorization"] = f"Bearer {auth_method.token.get_secret_value()}"
        secret_headers.append("Authorization")
    elif auth_method.method == "api_key":
        headers[auth_method.header] = auth_method.key.get_secret_value()
        secret_headers.append(auth_method.header)
    elif auth_method.method == "basic":
        auth = httpx.BasicAuth(auth_method.username, auth_method.password.get_secret_value())
    origin = httpx.URL(source.endpoint).host

    def keep_secrets_home(request: httpx.Request) -> None:
        # httpx drops Authorization on a cross-origin redirect, but not a custom API-key header.
        if request.url.host != origin:
            for name in secret_headers:
                request.headers.pop(name, None)

    return httpx.Client(headers=headers, auth=auth, timeout=httpx.Timeout(source.timeout),
                        follow_redirects=True, event_hooks={"request": [keep_secrets_home]})


def iter_pages(source: ApiSource, client: httpx.Client,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[list[dict]]:
    """The records of each page, following the spec's pagination."""
    pagination = source.pagination
    params: dict[str, Any] = dict(source.params)

    def page_records(url: str, query: Optional[dict], label: str) -> tuple[Any, list[dict]]:
        body = get_json(client, url, query, source, sleep, label)
        return body, extract_records(body, source.records_path, f"{_endpoint(source)} ({label})")

    if pagination.type == "none":
        yield page_records(source.endpoint, params, "the only page")[1]
        return

    if pagination.type == "page":
        page, first_size = pagination.start, None
        for _ in range(pagination.max_pages):
            query = {**params, pagination.param: page}
            if pagination.size_param:
                query[pagination.size_param] = pagination.size
            records = page_records(source.endpoint, query, f"page {page}")[1]
            if records:
                yield records
            # With size_param the page size is ours; without it, the first page tells the server's.
            full = pagination.size if pagination.size_param else first_size
            if not records or (full is not None and len(records) < full):
                return
            first_size = first_size or len(records)
            page += 1
        raise _too_many_pages(source)

    cursor: Any = None
    seen: set[str] = set()
    for number in range(1, pagination.max_pages + 1):
        url, query = source.endpoint, dict(params)
        if isinstance(cursor, str) and cursor.startswith(("http://", "https://")):
            url, query = _same_origin(source, cursor), None  # a "next" link carries its own query
        elif cursor is not None:
            query[pagination.cursor_param] = cursor
        body, records = page_records(url, query, f"page {number}")
        if records:
            yield records
        cursor = dig(body, pagination.cursor_path, default=None)
        if cursor is None or cursor == "":
            return
        if str(cursor) in seen:
            raise ApiError(f"{_endpoint(source)} returned the cursor {cursor!r} twice; "
                           f"check pagination.cursor_path ({pagination.cursor_path})")
        seen.add(str(cursor))
    raise _too_many_pages(source)


def get_json(client: httpx.Client, url: str, params: Optional[dict], source: ApiSource,
             sleep: Callable[[float], None], label: str) -> Any:
    """One GET with retries; the decoded JSON body."""
    attempts = source.retries + 1
    where = f"GET {_endpoint(source)} ({label})"
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        try:
            response = client.get(url, params=params)
        except httpx.TransportError as exc:
            if last:
                raise ApiError(f"{where} failed after {attempts} attempt(s): "
                               f"{type(exc).__name__}: {exc}") from None
            delay = backoff_delay(attempt)
            log.warning("%s: %s; retrying in %.1f s", where, type(exc).__name__, delay)
            sleep(delay)
            continue
        if response.status_code in RETRY_STATUSES:
            if last:
                raise ApiError(f"{where} failed after {attempts} attempt(s): last answer "
                               f"{response.status_code} {response.reason_phrase}")
            delay = retry_delay(response, attempt)
            log.warning("%s: %s; retrying in %.1f s", where, response.status_code, delay)
            sleep(delay)
            continue
        return _decode(response, source, where)
    raise AssertionError("unreachable")


def _decode(response: httpx.Response, source: ApiSource, where: str) -> Any:
    status = response.status_code
    if status in (401, 403):
        method = source.authentication.method
        hint = ("the spec sends no credentials (authentication: none)" if method == "none" else
                f"check the credentials of authentication method {method}")
        raise ApiError(f"{where}: {status} {response.reason_phrase}: {hint}")
    if status >= 400:
        raise ApiError(f"{where}: {status} {response.reason_phrase}: {_excerpt(response.text)}")
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content-type")
        raise ApiError(f"{where}: the answer is not JSON ({kind}): {_excerpt(response.text)}") from None


def backoff_delay(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, ... for attempts 0, 1, 2, ..., at most BACKOFF_MAX_S."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt)


def retry_delay(response: httpx.Response, attempt: int, now: Optional[float] = None) -> float:
    """The server's Retry-After (seconds or an HTTP date) if it gave one, else the backoff."""
    value = response.headers.get("retry-after")
    if value is None:
        return backoff_delay(attempt)
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return backoff_delay(attempt)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(RETRY_AFTER_MAX_S, max(0.0, seconds))


def extract_records(body: Any, records_path: Optional[str], where: str) -> list[dict]:
    """The list of records in one page: at records_path, or the body itself."""
    data = body if records_path is None else dig(body, records_path)
    if data is _MISSING:
        keys = f" (it has: {', '.join(map(str, body))})" if isinstance(body, dict) else ""
        raise ApiError(f"{where}: records_path {records_path!r} is not in the answer{keys}")
    if data is None:
        return []
    if not isinstance(data, list):
        if records_path is None:
            keys = f" with keys {', '.join(map(str, data))}" if isinstance(data, dict) else ""
            raise ApiError(f"{where}: the answer is a JSON {type(data).__name__}{keys}, not a list "
                           "of records; set records_path to where the list sits")
        raise ApiError(f"{where}: records_path {records_path!r} holds a {type(data).__name__}, "
                       "not a list of records")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ApiError(f"{where}: record {i} is a {type(item).__name__}, not a JSON object")
    return data


def dig(body: Any, path: str, default: Any = _MISSING) -> Any:
    """`a.b.0.c` into nested objects and lists; `default` (or a sentinel) where it is absent."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _index(part, len(node)) is not None:
            node = node[_index(part, len(node))]
        else:
            return default
    return node


def _index(part: str, length: int) -> Optional[int]:
    try:
        index = int(part)
    except ValueError:
        return None
    return index if -length <= index < length else None


def records_to_table(records: list[dict]):
    """An Arrow table with every key of every record as a column (first-seen order); a record
    without a key gets a null. A column whose values mix types is an error naming it."""
    import pyarrow as pa

    columns = list(dict.fromkeys(key for record in records for key in record))
    arrays = []
    for name in columns:
        values = [record.get(name) for record in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise ApiError(f"field {name!r} mixes JSON types ({', '.join(kinds)}): {exc}") from None
    return pa.Table.from_arrays(arrays, names=[str(c) for c in columns])


def _endpoint(source: ApiSource) -> str:
    """The endpoint without its query string: a query may carry a key."""
    return str(httpx.URL(source.endpoint).copy_with(query=None, fragment=None))


def _same_origin(source: ApiSource, link: str) -> str:
    base, target = httpx.URL(source.endpoint), httpx.URL(link)
    if (target.host, target.port) != (base.host, base.port):
        raise ApiError(f"{_endpoint(source)}: the next-page link points to another host "
                       f"({target.host}); refusing to send credentials there")
    return link


def _too_many_pages(source: ApiSource) -> ApiError:
    limit = source.pagination.max_pages
    return ApiError(f"{_endpoint(source)} still had more pages after pagination.max_pages={limit}; "
                    "raise max_pages if that is expected")


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
