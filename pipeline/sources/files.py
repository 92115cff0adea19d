"""Files source: parquet, csv, json from local paths, globs, s3:// or gs://, read with Ray Data.

Remote filesystems are built here, in the driver, and handed to Ray Data's readers: the
filesystem object travels to the read tasks with what `storage_options` gave it (endpoint,
region, keys). Without storage_options, pyarrow's default credential chain applies where the
files are read; `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` in the driver's environment set the
S3 endpoint, as they do for pyarrow and the AWS tools.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from typing import Optional
from urllib.parse import urlsplit

from pipeline.spec import FilesSource, StorageOptions

_GLOB_CHARS = "*?["
_S3 = ("s3", "s3a")
_GCS = ("gs", "gcs")


def read_files(source: FilesSource):
    import ray.data

    filesystem = filesystem_for(source.path, source.storage_options)
    paths = _expand(source.path, filesystem)
    fmt = source.inferred_format()
    if fmt == "parquet":
        return ray.data.read_parquet(paths, filesystem=filesystem)
    if fmt == "csv":
        from pyarrow import csv

        # Empty cells are missing values, in text columns too (Arrow keeps "" otherwise).
        options = csv.ConvertOptions(strings_can_be_null=True)
        return ray.data.read_csv(paths, convert_options=options, filesystem=filesystem)
    return ray.data.read_json(paths, filesystem=filesystem)


def filesystem_for(path: str, options: Optional[StorageOptions] = None,
                   environ: Optional[dict] = None):
    """A pyarrow filesystem for an s3:// or gs:// path, or None to let Ray Data decide."""
    environ = os.environ if environ is None else environ
    scheme = _scheme(path)
    if scheme in _S3:
        endpoint = (options and options.endpoint_url) or environ.get("AWS_ENDPOINT_URL_S3") \
            or environ.get("AWS_ENDPOINT_URL")
        if options is None and not endpoint:
            return None
        return s3_filesystem(options or StorageOptions(), endpoint)
    if scheme in _GCS and options is not None:
        return gcs_filesystem(options)
    return None


def s3_filesystem(options: StorageOptions, endpoint: Optional[str] = None):
    from pyarrow import fs

    kwargs: dict = {}
    if endpoint:
        kwargs.update(_endpoint(endpoint))
    if options.region:
        kwargs["region"] = options.region
    if options.anonymous:
        kwargs["anonymous"] = True
    if options.access_key_id is not None:
        kwargs["access_key"] = options.access_key_id.get_secret_value()
        kwargs["secret_key"] = options.secret_access_key.get_secret_value()
        if options.session_token is not None:
            kwargs["session_token"] = options.session_token.get_secret_value()
    return fs.S3FileSystem(**kwargs)


def gcs_filesystem(options: StorageOptions):
    from pyarrow import fs

    kwargs: dict = {"anonymous": options.anonymous}
    if options.endpoint_url:
        kwargs.update(_endpoint(options.endpoint_url))
    if options.project_id:
        kwargs["project_id"] = options.project_id
    return fs.GcsFileSystem(**kwargs)


def _endpoint(url: str) -> dict:
    """`http://host:port` -> pyarrow's endpoint_override `host:port` and scheme `http`."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return {"endpoint_override": parts.netloc, "scheme": parts.scheme}


def _scheme(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else ""


def _expand(path: str, filesystem=None) -> list[str] | str:
    if "://" in path:
        return _expand_remote(path, filesystem)
    if any(ch in path for ch in _GLOB_CHARS):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise FileNotFoundError(f"no files match {path}")
        return matches
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _expand_remote(uri: str, filesystem=None) -> list[str] | str:
    """Ray Data does not expand globs: list under the pattern's fixed prefix and match."""
    scheme, rest = uri.split("://", 1)
    if not any(ch in rest for ch in _GLOB_CHARS):
        return uri
    from pyarrow import fs

    if filesystem is None:
        bucket = rest.split("/", 1)[0]
        filesystem, _ = fs.FileSystem.from_uri(f"{scheme}://{bucket}")
    parts = rest.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in _GLOB_CHARS))
    base = "/".join(parts[:fixed])
    selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
    matches = sorted(info.path for info in filesystem.get_file_info(selector)
                     if info.type == fs.FileType.File and glob_match(info.path.split("/"), parts))
    if not matches:
        raise FileNotFoundError(f"no files match {uri}")
    return [f"{scheme}://{m}" for m in matches]


def glob_match(path: list[str], pattern: list[str]) -> bool:
    """Segment-wise glob: `*` stays inside a segment, `**` spans any number of them."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(glob_match(path[i:], pattern[1:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and glob_match(path[1:], pattern[1:])
