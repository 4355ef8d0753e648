"""S3-compatible object storage for folders that are written once: sealed run folders.

`ObjectStore("s3://bucket/prefix")` puts a folder under `prefix/{name}/` and gets it
back. A folder's *commit marker* (a run folder's `.finished`) is uploaded last, after
every other file has landed, so a folder is on the bucket whole exactly when its marker
is: a reader never takes a half-uploaded folder for a complete one, and an interrupted
upload is simply done again (every PUT is idempotent). Each object carries the sha256
of its bytes (`x-amz-meta-sha256`), checked when it is downloaded.

boto3 is imported on first use (`pip install 'quant-lakehouse[s3]'`). Credentials and
region come from boto3's usual chain (AWS_ACCESS_KEY_ID, ~/.aws, an instance role);
the endpoint of a non-AWS server (MinIO, Ceph, moto) from AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quant_resources.errors import ConfigError, QuantError

SHA256_KEY = "sha256"  # user metadata of each object
PARALLEL = 8  # uploads or downloads at once
CHUNK = 1 << 20


class ObjectStoreError(QuantError):
    """An object-store operation that failed; the message names the URL."""


def split_s3_url(url: str, what: str = "URL") -> tuple[str, str]:
    """(bucket, prefix without slashes at either end) of `s3://bucket[/prefix]`."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{what}={url!r} is not an S3 URL: use s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def endpoint_url() -> str | None:
    """The endpoint of a non-AWS S3 server, from the environment (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError(
            "object storage needs boto3: pip install 'quant-lakehouse[s3]' (or unset the s3:// setting)"
        ) from None
    config = Config(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=PARALLEL * 2,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url(), config=config)


@dataclass
class Transfer:
    url: str  # where the folder is on the bucket
    files: int
    bytes: int


class ObjectStore:
    """Folders under `s3://bucket/prefix/`; one boto3 client, shared by the worker threads."""

    def __init__(self, url: str, client: Any = None):
        self.bucket, self.prefix = split_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = s3_client()
            return self._client

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def folder_url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    # -- up ------------------------------------------------------------------------------
    def upload_folder(self, folder: Path, name: str, commit_marker: str) -> Transfer:
        """Upload every file under `folder` to `prefix/name/`, `commit_marker` (a file at
        the folder's top) last. Raises ObjectStoreError naming the first file that failed."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        marker = folder / commit_marker
        if marker not in files:
            raise ObjectStoreError(f"{folder} has no {commit_marker}: only a finished folder is uploaded")
        files.remove(marker)
        size = self._each(files, lambda p: self._put(p, self.key(name, p.relative_to(folder).as_posix())))
        size += self._put(marker, self.key(name, commit_marker))
        return Transfer(self.folder_url(name), len(files) + 1, size)

    def _put(self, path: Path, key: str) -> int:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={SHA256_KEY: digest})
        except Exception as exc:  # botocore raises many types: name the object and say what failed
            raise ObjectStoreError(f"upload to s3://{self.bucket}/{key} failed: {_reason(exc)}") from exc
        return len(data)

    # -- listing -------------------------------------------------------------------------
    def complete_folders(self, commit_marker: str) -> set[str]:
        """Names of the folders under the prefix whose commit marker is on the bucket."""
        start = self.key() + "/" if self.prefix else ""
        found = set()
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    rest = item["Key"][len(start) :].split("/")
                    if len(rest) == 2 and rest[1] == commit_marker:
                        found.add(rest[0])
        except Exception as exc:  # noqa: BLE001
            raise ObjectStoreError(f"cannot list {self.url}: {_reason(exc)}") from exc
        return found

    # -- down ----------------------------------------------------------------------------
    def download_folder(self, name: str, dest: Path, commit_marker: str, check: Callable[[list[str]], None]) -> Transfer:
        """Download `prefix/name/` into `dest` (made here), when its commit marker is there.

        `check(parts)` vets each object's relative path before it becomes a file (raise to
        refuse it). Every object's bytes are checked against the sha256 it was uploaded with.
        """
        start = self.key(name) + "/"
        try:
            keys = [
                item["Key"]
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
                for item in page.get("Contents", [])
            ]
        except Exception as exc:  # noqa: BLE001
            raise ObjectStoreError(f"cannot list {self.folder_url(name)}: {_reason(exc)}") from exc
        if not keys:
            raise ObjectStoreError(f"{self.folder_url(name)} does not exist")
        if start + commit_marker not in keys:
            raise ObjectStoreError(
                f"{self.folder_url(name)} is incomplete (no {commit_marker}): its upload was interrupted; "
                "push it again from the host that holds it"
            )
        targets = []
        for key in keys:
            parts = key[len(start) :].split("/")
            check(parts)
            targets.append((key, dest.joinpath(*parts)))
        dest.mkdir(parents=True, exist_ok=True)
        size = self._each(targets, lambda t: self._get(*t))
        return Transfer(self.folder_url(name), len(targets), size)

    def _get(self, key: str, path: Path) -> int:
        url = f"s3://{self.bucket}/{key}"
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
            digest, size = hashlib.sha256(), 0
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                for chunk in reply["Body"].iter_chunks(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except Exception as exc:  # noqa: BLE001
            raise ObjectStoreError(f"download of {url} failed: {_reason(exc)}") from exc
        expected = (reply.get("Metadata") or {}).get(SHA256_KEY)
        if expected and expected != digest.hexdigest():
            raise ObjectStoreError(f"{url} is damaged: its sha256 is {digest.hexdigest()}, it was uploaded as {expected}")
        return size

    @staticmethod
    def _each(items: list, work: Callable[[Any], int]) -> int:
        """Run `work` on every item, PARALLEL at a time; the bytes moved; the first error raised."""
        if not items:
            return 0
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(items))) as pool:
            return sum(pool.map(work, items))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
