"""pipeline.sources.files without Ray: filesystems from storage_options and the environment,
remote glob expansion against a real S3 endpoint (moto), and the spec's storage_options rules."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from pipeline.sources.files import _expand, filesystem_for, glob_match
from pipeline.spec import SpecError, StorageOptions, parse_spec
from tests.integration.services import MotoS3, moto_s3  # noqa: F401 (fixture)


def options_of(filesystem) -> dict:
    return filesystem.__reduce__()[1][0]


def storage(server: MotoS3) -> StorageOptions:
    return StorageOptions(endpoint_url=server.endpoint, region=server.region,
                          access_key_id=server.access_key_id,
                          secret_access_key=server.secret_access_key)


def test_local_and_plain_s3_paths_leave_the_filesystem_to_ray():
    assert filesystem_for("/data/x.csv", environ={}) is None
    assert filesystem_for("s3://bucket/x.csv", environ={}) is None  # pyarrow's default chain


def test_s3_options_build_an_s3_filesystem():
    opts = StorageOptions(endpoint_url="http://127.0.0.1:9000", region="eu-west-1",
                          access_key_id="AK", secret_access_key="SK", session_token="ST")
    built = options_of(filesystem_for("s3://bucket/x.csv", opts, environ={}))
    assert built["endpoint_override"] == "127.0.0.1:9000" and built["scheme"] == "http"
    assert (built["region"], built["access_key"], built["secret_key"], built["session_token"]) == (
        "eu-west-1", "AK", "SK", "ST")
    anon = options_of(filesystem_for("s3a://bucket/x", StorageOptions(anonymous=True), environ={}))
    assert anon["anonymous"] is True and anon["scheme"] == "https"


def test_aws_endpoint_url_from_the_environment():
    built = options_of(filesystem_for("s3://b/x.csv", environ={"AWS_ENDPOINT_URL": "http://minio:9000"}))
    assert built["endpoint_override"] == "minio:9000" and built["scheme"] == "http"
    s3_first = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://s3.local"}
    assert options_of(filesystem_for("s3://b/x", environ=s3_first))["endpoint_override"] == "s3.local"
    # storage_options win over the environment
    opts = StorageOptions(endpoint_url="http://127.0.0.1:5000")
    built = options_of(filesystem_for("s3://b/x", opts, environ={"AWS_ENDPOINT_URL": "http://a:1"}))
    assert built["endpoint_override"] == "127.0.0.1:5000"


def test_gcs_options_build_a_gcs_filesystem():
    opts = StorageOptions(endpoint_url="http://127.0.0.1:4443", anonymous=True, project_id="proj")
    built = filesystem_for("gs://bucket/x.parquet", opts, environ={})
    assert isinstance(built, fs.GcsFileSystem)
    state = options_of(built)
    assert (state["endpoint_override"], state["scheme"], state["anonymous"], state["project_id"]) == (
        "127.0.0.1:4443", "http", True, "proj")
    assert filesystem_for("gs://bucket/x.parquet", None, environ={}) is None


@pytest.mark.parametrize("path, pattern, hit", [
    ("b/data/x.parquet", "b/data/*.parquet", True),
    ("b/data/sub/x.parquet", "b/data/*.parquet", False),
    ("b/data/sub/x.parquet", "b/data/**/*.parquet", True),
    ("b/data/x.parquet", "b/data/**/*.parquet", True),
    ("b/data/x.csv", "b/data/**/*.parquet", False),
    ("b/2024-01/x.csv", "b/2024-0[1-3]/x.csv", True),
    ("b/2024-05/x.csv", "b/2024-0[1-3]/x.csv", False),
    ("b/part-1.csv", "b/part-?.csv", True),
])
def test_glob_match(path, pattern, hit):
    assert glob_match(path.split("/"), pattern.split("/")) is hit


def test_remote_globs_expand_on_real_s3(moto_s3):  # noqa: F811
    table = pa.table({"id": [1, 2, 3], "v": [0.5, 1.5, 2.5]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    for key in ("glob/a.parquet", "glob/b.parquet", "glob/nested/c.parquet", "glob/notes.txt"):
        moto_s3.put(key, buffer.getvalue())
    filesystem = filesystem_for(f"s3://{moto_s3.bucket}/glob/*.parquet", storage(moto_s3), environ={})
    bucket = moto_s3.bucket
    assert _expand(f"s3://{bucket}/glob/*.parquet", filesystem) == [
        f"s3://{bucket}/glob/a.parquet", f"s3://{bucket}/glob/b.parquet"]
    assert len(_expand(f"s3://{bucket}/glob/**/*.parquet", filesystem)) == 3
    assert _expand(f"s3://{bucket}/glob/a.parquet", filesystem) == f"s3://{bucket}/glob/a.parquet"
    with pytest.raises(FileNotFoundError, match="no files match"):
        _expand(f"s3://{bucket}/glob/*.csv", filesystem)
    # The filesystem really carries the credentials and the endpoint.
    assert pq.read_table(f"{bucket}/glob/a.parquet", filesystem=filesystem).equals(table)


def test_local_globs(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("a.csv", "b.csv", "d/c.csv"):
        (tmp_path / name).write_text("x\n1\n")
    assert _expand(str(tmp_path / "*.csv")) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert len(_expand(str(tmp_path / "**" / "*.csv"))) == 3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _expand(str(tmp_path / "none.csv"))


# --------------------------------------------------------------------------- the spec

SPEC = """\
name: demo
sources:
  - type: files
    path: {path}
    format: parquet
    storage_options:
{options}
target: y
problem_type: classification
"""


def parse(path: str, options: str, env=None):
    text = SPEC.format(path=path, options="\n".join(f"      {line}" for line in options.splitlines()))
    return parse_spec(text, "spec.yaml", env=env or {}, base_dir="/srv")


def test_spec_storage_options_with_secrets_from_the_environment():
    env = {"S3_KEY": "AKIA-S3CRET", "S3_SECRET": "sk-S3CRET"}
    spec = parse("s3://bucket/data/*.parquet",
                 "endpoint_url: http://127.0.0.1:9000\nregion: us-east-1\n"
                 "access_key_id: ${S3_KEY}\nsecret_access_key: ${S3_SECRET}", env)
    options = spec.sources[0].storage_options
    assert options.secret_access_key.get_secret_value() == "sk-S3CRET"
    assert "sk-S3CRET" not in repr(spec) and "sk-S3CRET" not in str(spec.redacted())


@pytest.mark.parametrize("path, options, message", [
    ("data/x.parquet", "anonymous: true", "storage_options apply to s3:// and gs:// paths only"),
    ("gs://b/x.parquet", "region: eu-west-1", "storage_options region apply to s3:// paths only"),
    ("s3://b/x.parquet", "project_id: p", "project_id applies to gs:// paths only"),
    ("s3://b/x.parquet", "access_key_id: AK", "give both access_key_id and secret_access_key"),
    ("s3://b/x.parquet", "endpoint: http://x", "unknown key 'endpoint'"),
])
def test_spec_storage_options_errors(path, options, message):
    with pytest.raises(SpecError) as info:
        parse(path, options)
    assert any(message in p and "spec.yaml:" in p for p in info.value.problems), info.value.problems
