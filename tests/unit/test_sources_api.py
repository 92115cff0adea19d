"""pipeline.sources.api against a real local HTTP server (no Ray): pagination by page, cursor and
next link, records_path, auth methods, retries honouring Retry-After, clear 401/403, max_pages."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from pipeline.sources.api import (
    ApiError, backoff_delay, dig, extract_records, fetch_records, make_client, records_to_table,
    retry_delay,
)
from pipeline.spec import ApiSource
from tests.integration.conftest import free_port
from tests.integration.services import ApiServer, api_server  # noqa: F401 (fixture)


@pytest.fixture(autouse=True)
def fresh(api_server):  # noqa: F811
    api_server.reset()
    yield
    api_server.reset()


class Sleeps(list):
    """Records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def source(server: ApiServer, path: str, **kwargs) -> ApiSource:
    kwargs.setdefault("authentication", {"method": "bearer", "token": server.token})
    return ApiSource(type="api", endpoint=f"{server.url}{path}", **kwargs)


def fetch(src: ApiSource) -> tuple[list[dict], Sleeps]:
    sleeps = Sleeps()
    return fetch_records(src, sleep=sleeps), sleeps


# --------------------------------------------------------------------------- pagination

def test_page_pagination_reads_every_page_and_stops_at_the_empty_one(api_server):  # noqa: F811
    records, sleeps = fetch(source(api_server, "/v1/customers", records_path="data",
                                   pagination={"type": "page", "param": "page",
                                               "size_param": "per_page", "size": 500}))
    assert len(records) == 5000 and not sleeps
    assert [r["customer_id"] for r in records] == [c["customer_id"] for c in api_server.customers]
    seen = api_server.seen("/v1/customers")
    assert [s.query for s in seen] == [{"page": str(p), "per_page": "500"} for p in range(1, 12)]


def test_page_pagination_stops_at_a_short_page(api_server):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/customers", records_path="data",
                              pagination={"type": "page", "size_param": "per_page", "size": 300}))
    assert len(records) == 5000
    assert len(api_server.seen()) == 17  # 16 full pages of 300, then 200 rows: done


def test_page_pagination_start_and_server_page_size(api_server):  # noqa: F811
    # No size_param: the server's own page size (100 here) comes from the first page.
    records, _ = fetch(source(api_server, "/v1/customers", records_path="data",
                              pagination={"type": "page", "start": 48}))
    assert len(records) == 300  # pages 48, 49, 50; page 51 is empty
    assert [s.query["page"] for s in api_server.seen()] == ["48", "49", "50", "51"]


def test_max_pages_guard_is_an_error_not_a_silent_cut(api_server):  # noqa: F811
    with pytest.raises(ApiError, match=r"still had more pages after pagination.max_pages=3"):
        fetch(source(api_server, "/v1/customers", records_path="data",
                     pagination={"type": "page", "size_param": "per_page", "size": 10,
                                 "max_pages": 3}))
    assert len(api_server.seen()) == 3


def test_cursor_pagination_follows_the_dotted_cursor_path(api_server):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/usage", records_path="items", params={"limit": 1000},
                              pagination={"type": "cursor", "cursor_param": "cursor",
                                          "cursor_path": "meta.next_cursor"}))
    assert records == api_server.usage
    seen = api_server.seen()
    assert len(seen) == 5
    assert "cursor" not in seen[0].query and all("cursor" in s.query for s in seen[1:])
    assert all(s.query["limit"] == "1000" for s in seen)


def test_cursor_that_is_a_next_link_is_followed(api_server):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/linked", records_path="results",
                              pagination={"type": "cursor", "cursor_path": "next"}))
    assert [r["customer_id"] for r in records] == [c["customer_id"] for c in api_server.customers[:5]]
    assert [s.query.get("offset") for s in api_server.seen()] == [None, "2", "4"]


def test_a_repeating_cursor_is_an_error(api_server):  # noqa: F811
    with pytest.raises(ApiError, match="returned the cursor 'same' twice"):
        fetch(source(api_server, "/v1/loop", records_path="items", pagination={"type": "cursor"}))


def test_cursor_max_pages(api_server):  # noqa: F811
    with pytest.raises(ApiError, match="max_pages=2"):
        fetch(source(api_server, "/v1/usage", records_path="items", params={"limit": 10},
                     pagination={"type": "cursor", "cursor_path": "meta.next_cursor", "max_pages": 2}))


# --------------------------------------------------------------------------- records

def test_bare_list_without_auth_or_pagination(api_server):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/open", authentication="none"))
    assert len(records) == 3


def test_an_object_body_without_records_path_says_where_to_look(api_server):  # noqa: F811
    with pytest.raises(ApiError, match=r"JSON dict with keys data, page, total, not a list of "
                                       r"records; set records_path"):
        fetch(source(api_server, "/v1/customers"))


def test_a_missing_records_path_lists_the_keys(api_server):  # noqa: F811
    with pytest.raises(ApiError, match=r"records_path 'rows' is not in the answer \(it has: data, page, total\)"):
        fetch(source(api_server, "/v1/customers", records_path="rows"))


def test_dig_and_extract():
    body = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}
    assert dig(body, "a.b.1.c") == 2
    assert dig(body, "a.b.-1.c") == 2
    assert dig(body, "a.x", default=None) is None
    assert dig(body, "a.b.5", default="gone") == "gone"
    assert extract_records(body, "n", "here") == []  # null: an empty page
    with pytest.raises(ApiError, match="holds a dict"):
        extract_records(body, "a", "here")
    with pytest.raises(ApiError, match="record 1 is a int"):
        extract_records([{"x": 1}, 2], None, "here")


def test_records_to_table_takes_every_key_and_names_a_mixed_column():
    table = records_to_table([{"a": 1, "b": "x"}, {"a": 2.5, "c": True}])
    assert table.column_names == ["a", "b", "c"]
    assert table.column("a").to_pylist() == [1.0, 2.5]
    assert table.column("b").to_pylist() == ["x", None]
    with pytest.raises(ApiError, match=r"field 'v' mixes JSON types \(int, str\)"):
        records_to_table([{"v": 1}, {"v": "one"}])


def test_params_and_headers_are_sent(api_server):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/echo", params={"region": "eu", "active": True},
                              headers={"X-Trace": "t-1"}))
    assert records[0]["query"] == '{"active": "true", "region": "eu"}'
    assert '"x-trace": "t-1"' in records[0]["headers"]


def test_not_json_is_named(api_server):  # noqa: F811
    with pytest.raises(ApiError, match=r"not JSON \(text/html\): <html>maintenance</html>"):
        fetch(source(api_server, "/v1/html"))


# --------------------------------------------------------------------------- authentication

@pytest.mark.parametrize("auth", [
    {"method": "api_key", "key": ApiServer.key},
    {"method": "basic", "username": ApiServer.username, "password": ApiServer.password},
    {"method": "bearer", "token": ApiServer.token},
])
def test_every_auth_method_is_accepted(api_server, auth):  # noqa: F811
    records, _ = fetch(source(api_server, "/v1/customers", records_path="data", authentication=auth))
    assert len(records) == 100


def test_api_key_goes_in_the_configured_header(api_server):  # noqa: F811
    fetch(source(api_server, "/v1/echo", authentication={"method": "api_key", "key": ApiServer.key,
                                                         "header": "X-Custom-Key"}))
    assert api_server.seen()[0].headers.get("X-Custom-Key") == ApiServer.key


def test_wrong_token_names_endpoint_and_method_not_the_secret(api_server):  # noqa: F811
    wrong = "wrong-token-SECRET-55"
    with pytest.raises(ApiError) as info:
        fetch(source(api_server, "/v1/customers?key=abc", records_path="data",
                     authentication={"method": "bearer", "token": wrong}, retries=3))
    message = str(info.value)
    assert f"{api_server.url}/v1/customers" in message and "401 Unauthorized" in message
    assert "authentication method bearer" in message
    assert wrong not in message and "key=abc" not in message
    assert len(api_server.seen()) == 1  # a 401 is not retried


def test_403_and_missing_credentials(api_server):  # noqa: F811
    with pytest.raises(ApiError, match=r"/v1/forbidden \(the only page\): 403 Forbidden: check the "
                                       r"credentials of authentication method bearer"):
        fetch(source(api_server, "/v1/forbidden"))
    with pytest.raises(ApiError, match=r"401 Unauthorized: the spec sends no credentials"):
        fetch(source(api_server, "/v1/customers", authentication="none"))


def test_secret_headers_stay_on_the_endpoint_host():
    src = ApiSource(type="api", endpoint="https://api.example.com/v1",
                    authentication={"method": "api_key", "key": "k-secret"})
    client = make_client(src)
    hook = client.event_hooks["request"][0]
    home = client.build_request("GET", "https://api.example.com/v1/next")
    away = client.build_request("GET", "https://cdn.example.net/file")
    hook(home)
    hook(away)
    assert home.headers["X-API-Key"] == "k-secret" and "X-API-Key" not in away.headers
    client.close()


# --------------------------------------------------------------------------- retries

def test_429_with_retry_after_then_503_then_success(api_server):  # noqa: F811
    api_server.fail_next(429, {"Retry-After": "2"})
    api_server.fail_next(503)
    records, sleeps = fetch(source(api_server, "/v1/customers", records_path="data",
                                   pagination={"type": "page", "size_param": "per_page", "size": 2500}))
    assert len(records) == 5000
    assert sleeps == [2.0, 1.0]  # Retry-After, then the backoff of the second attempt
    assert [s.query.get("page") for s in api_server.seen()] == ["1", "1", "1", "2", "3"]


def test_a_dropped_connection_is_retried(api_server):  # noqa: F811
    api_server.fail_next(0)
    records, sleeps = fetch(source(api_server, "/v1/open", authentication="none"))
    assert len(records) == 3 and sleeps == [0.5]


def test_retries_run_out_with_the_last_answer_named(api_server):  # noqa: F811
    api_server.fail_next(503, times=5)
    with pytest.raises(ApiError, match=r"failed after 3 attempt\(s\): last answer 503 Service Unavailable"):
        fetch(source(api_server, "/v1/customers", records_path="data", retries=2))
    assert len(api_server.seen()) == 3


def test_no_retries_means_one_attempt(api_server):  # noqa: F811
    api_server.fail_next(500)
    with pytest.raises(ApiError, match=r"after 1 attempt\(s\): last answer 500"):
        fetch(source(api_server, "/v1/customers", records_path="data", retries=0))


def test_connection_refused_is_retried_then_named():
    src = ApiSource(type="api", endpoint=f"http://127.0.0.1:{free_port()}/v1/x", retries=2, timeout=2)
    sleeps = Sleeps()
    with pytest.raises(ApiError, match=r"failed after 3 attempt\(s\): ConnectError"):
        fetch_records(src, sleep=sleeps)
    assert sleeps == [0.5, 1.0]


def test_retry_after_forms():
    def answer(value=None):
        headers = {"Retry-After": value} if value is not None else {}
        return httpx.Response(429, headers=headers)

    now = time.time()
    assert retry_delay(answer("3"), 0) == 3.0
    assert retry_delay(answer("0.25"), 0) == 0.25
    assert 9 <= retry_delay(answer(formatdate(now + 10, usegmt=True)), 0, now=now) <= 10
    assert retry_delay(answer(formatdate(now - 30, usegmt=True)), 0, now=now) == 0.0
    assert retry_delay(answer("86400"), 0) == 60.0  # capped
    assert retry_delay(answer("soon"), 2) == backoff_delay(2) == 2.0  # unreadable: the backoff
    assert retry_delay(answer(), 1) == 1.0
    assert backoff_delay(20) == 30.0  # capped
