"""Object stores addressed by URI: a local directory (`/path` or `file:///path`) or S3 (`s3://bucket/prefix`).

The model registry, the raw-archive cache and the local executor's artifact store all sit on this interface.
Both back-ends offer the two conditional writes the registry needs to be safe against concurrent writers:
create-if-absent and replace-if-unchanged (an ETag compare-and-swap). On S3 (and MinIO) these are the
`If-None-Match: *` and `If-Match` headers; on a directory they are an exclusive create and a lock file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from steps.core.artifacts import listing_hash
from steps.core.permissions import as_if_created


class StoreUnusable(ValueError):
    """A store that cannot be used as configured (no such bucket, no credentials, a file where a folder goes); the
    message says why, without the store's URI, which the caller names with the option that gave it."""


class BadEndpoint(StoreUnusable):
    """An S3 endpoint that is not a URL: the endpoint's option is at fault, not the store's."""


class StoreUnreachable(StoreUnusable):
    """A store that did not answer, or answered a server error (5xx, throttling): trying again later may work."""


TRANSIENT_S3_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
                      "ThrottlingException", "RequestTimeout"}


def transient_s3_error(error: Exception) -> bool:
    """True for a botocore error that trying again may cure: no connection, a timeout, a 5xx or throttling answer."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or str(error.response.get("Error", {}).get("Code", "")) in TRANSIENT_S3_CODES
    return isinstance(error, (BotoConnectionError, HTTPClientError))


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (create) or changed since it was read (swap)."""


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the ETag that a later conditional write compares against."""

    data: bytes
    etag: str


class ObjectStore:
    """Keys are `/`-separated relative paths; values are bytes or whole directory trees."""

    uri: str

    def get(self, key: str) -> Blob | None:
        """The object at `key`, or None when there is none."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) one object."""
        raise NotImplementedError

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create `key`; raise PreconditionFailed when it already exists."""
        raise NotImplementedError

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        """Replace `key` only if its ETag is still `etag` (None: only if it does not exist yet)."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""
        raise NotImplementedError

    def sizes(self, prefix: str) -> dict[str, int]:
        """{key: size in bytes} of every key under `prefix`, from the listing alone (what deleting them frees)."""
        raise NotImplementedError

    def probe(self) -> None:
        """Check, before any work, that the store can be used; raise StoreUnusable saying why not."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """True when `key` is an object."""
        return self.get(key) is not None

    def upload_dir(self, local: Path, prefix: str) -> None:
        """Copy a local directory tree under `prefix` (replacing what was there)."""
        raise NotImplementedError

    def download_dir(self, prefix: str, local: Path) -> None:
        """Copy the tree under `prefix` into a new local directory `local`."""
        raise NotImplementedError

    def upload_content(self, local: Path, prefix: str) -> None:
        """Store a tree under a content-addressed `prefix` (one that only ever holds these bytes). A reader of a
        copy already there must never see it rewritten, so a store that replaces trees non-atomically keeps it."""
        self.upload_dir(local, prefix)

    def child(self, prefix: str) -> "ObjectStore":
        """The same store rooted at `prefix`."""
        raise NotImplementedError

    def listing_fingerprint(self, prefix: str) -> str | None:
        """A hash of the tree under `prefix` as the store lists it (each object's name, size and version: a local
        file's mtime, which a copy that keeps times keeps, or an S3 ETag), read without reading any content; None
        when there is nothing there. A rewrite changes it (at the same size within the clock's tick, or with its
        time set back, it may not: the bytes are checked against their hash when they are fetched)."""
        raise NotImplementedError

    def delete_tree(self, prefix: str) -> None:
        """Remove every object under `prefix` (nothing when there is none)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove one object (nothing when there is none)."""
        raise NotImplementedError


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@contextmanager
def file_lock(lock: Path, unless_read_only: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (made, with its folder, where missing) between processes. With
    `unless_read_only`, where the lock cannot be made (a read-only folder, which no process writes either), go on
    without it."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError as error:
        if not unless_read_only or error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalStore(ObjectStore):
    """A directory. Writes go through a temporary file and a rename, so readers never see half an object."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def probe(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnusable("a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnusable(f"cannot create the folder: {error.strerror or error}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnusable("the folder is not writable")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"key {key!r} escapes the store at {self.root}")
        return path

    def get(self, key: str) -> Blob | None:
        path = self._path(key)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return Blob(data, _etag(data))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        as_if_created(tmp)
        os.replace(tmp, path)

    def put_if_absent(self, key: str, data: bytes) -> None:
        with self._locked(key):
            if self._path(key).exists():
                raise PreconditionFailed(f"{self.uri}/{key} already exists")
            self.put(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        with self._locked(key):
            current = self.get(key)
            if (current.etag if current else None) != etag:
                raise PreconditionFailed(f"{self.uri}/{key} changed since it was read")
            self.put(key, data)

    def _locked(self, key: str):
        return file_lock(self._path(key).with_name(self._path(key).name + ".lock"))

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith("."))

    def sizes(self, prefix: str) -> dict[str, int]:
        sizes = {}
        for key in self.list(prefix):
            try:
                sizes[key] = self._path(key).stat().st_size
            except FileNotFoundError:  # removed since it was listed
                continue
        return sizes

    @staticmethod
    def _staged(local: Path, target: Path) -> Path:
        """A copy of `local` beside `target`, to be renamed into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(local, staging, dirs_exist_ok=True)
        except OSError:  # a full disk: what was copied goes, or every retry would leave another part-copy
            shutil.rmtree(staging, ignore_errors=True)
            raise
        as_if_created(staging)  # after the copy, which gives the tree the source's modes
        return staging

    def upload_dir(self, local: Path, prefix: str) -> None:
        target = self._path(prefix)
        staging = self._staged(local, target)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)

    def upload_content(self, local: Path, prefix: str) -> None:
        """A folder there is complete (trees arrive by rename) and holds these bytes: it is kept, not replaced,
        which would leave a moment with no folder there for another run reading it."""
        target = self._path(prefix)
        if target.is_dir():
            return
        staging = self._staged(local, target)
        try:
            os.replace(staging, target)
        except OSError:  # another writer's copy arrived first
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():
                raise

    def download_dir(self, prefix: str, local: Path) -> None:
        source = self._path(prefix)
        if not source.is_dir():
            raise FileNotFoundError(f"{self.uri}/{prefix}: no such artifact")
        shutil.copytree(source, local)

    def child(self, prefix: str) -> "LocalStore":
        return LocalStore(self._path(prefix))

    def listing_fingerprint(self, prefix: str) -> str | None:
        base = self._path(prefix)
        if not base.is_dir():
            return None
        entries = []
        for path in base.rglob("*"):
            if path.is_file():
                status = path.stat()
                entries.append((path.relative_to(base).as_posix(), status.st_size, str(status.st_mtime_ns)))
        return listing_hash(entries)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store(ObjectStore):
    """An S3 bucket and prefix through boto3; works with AWS, MinIO and moto's server (`endpoint_url`)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        try:
            self.client = client or boto3.client("s3", endpoint_url=endpoint_url)
        except ValueError:  # botocore's "Invalid endpoint"
            raise BadEndpoint(f"{endpoint_url!r} is not a URL (such as http://HOST:9000)") from None
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def probe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        endpoint = self.client.meta.endpoint_url
        try:  # a listing under the prefix, as the store itself reads: a policy may allow that and not HeadBucket
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
        except NoCredentialsError:
            raise StoreUnusable("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
                                ) from None
        except EndpointConnectionError:
            raise StoreUnreachable(f"cannot connect to the S3 endpoint {endpoint}") from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if transient_s3_error(error):
                raise StoreUnreachable(f"{endpoint} answered {code} for bucket {self.bucket!r}") from None
            if code in ("404", "NoSuchBucket"):
                raise StoreUnusable(f"no bucket {self.bucket!r} at {endpoint} (or that endpoint is not an S3 server)"
                                    ) from None
            if code in ("403", "AccessDenied"):
                raise StoreUnusable(f"listing bucket {self.bucket!r} under {self._key('') or '/'} at {endpoint} "
                                    "denied: check the credentials and the bucket's policy") from None
            raise StoreUnusable(f"{endpoint} answered {code or 'an error'} for bucket {self.bucket!r}") from None
        except BotoCoreError as error:
            raise (StoreUnreachable if transient_s3_error(error) else StoreUnusable)(f"S3 at {endpoint}: {error}"
                                                                                    ) from None

    def get(self, key: str) -> Blob | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        return Blob(response["Body"].read(), response["ETag"].strip('"'))

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> None:
        self._conditional_put(key, data, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        if etag is None:
            self._conditional_put(key, data, IfNoneMatch="*")
        else:
            self._conditional_put(key, data, IfMatch=f'"{etag}"')

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                raise PreconditionFailed(f"{self.uri}/{key}: {code}") from error
            raise

    def _objects(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """(key relative to the store, the listing's entry: Size, ETag, ...) of every object under `prefix`."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield (item["Key"][len(self.prefix) + 1:] if self.prefix else item["Key"]), item

    def list(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self._objects(prefix))

    def sizes(self, prefix: str) -> dict[str, int]:
        return {key: item["Size"] for key, item in self._objects(prefix)}

    def listing_fingerprint(self, prefix: str) -> str | None:
        base = prefix.rstrip("/") + "/"
        return listing_hash([(key[len(base):], item["Size"], item["ETag"].strip('"'))
                             for key, item in self._objects(base)])

    def delete_tree(self, prefix: str) -> None:
        for key in self.list(prefix.rstrip("/") + "/"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def upload_dir(self, local: Path, prefix: str) -> None:
        stale = set(self.list(prefix.rstrip("/") + "/"))
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            self.client.upload_file(str(path), self.bucket, self._key(key))
            stale.discard(key)
        for key in stale:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def download_dir(self, prefix: str, local: Path) -> None:
        base = prefix.rstrip("/") + "/"
        keys = self.list(base)
        if not keys:
            raise FileNotFoundError(f"{self.uri}/{prefix}: no such artifact")
        for key in keys:
            target = Path(local) / key[len(base):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, self._key(key), str(target))

    def child(self, prefix: str) -> "S3Store":
        return S3Store(self.bucket, self._key(prefix), self.endpoint_url, self.client)


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    """Open `s3://bucket/prefix` (endpoint from the argument or `AWS_ENDPOINT_URL`) or a local directory."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{uri!r}: an S3 URI needs a bucket (s3://BUCKET/PREFIX)")
        return S3Store(parsed.netloc, parsed.path, endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme == "file" else uri)
    raise ValueError(f"{uri!r}: unsupported store scheme {parsed.scheme!r} (use a path or s3://BUCKET/PREFIX)")


@contextmanager
def local_folder(location: str) -> Iterator[Path]:
    """A local path as it is, or an `s3://bucket/prefix` copied into a temporary folder of the prefix's last name
    (so that names derived from folders, such as a library's source, do not depend on where it is read)."""
    if not location.startswith("s3://"):
        yield Path(location)
        return
    parent, _, name = location.rstrip("/").rpartition("/")
    if parent in ("s3:", "s3:/"):
        raise ValueError(f"{location!r}: give a folder inside the bucket (s3://BUCKET/PREFIX)")
    with tempfile.TemporaryDirectory(prefix="stellar-folder-") as scratch:
        target = Path(scratch) / name
        open_store(parent).download_dir(name, target)
        yield target


def shown_path(path: Path, folder: Path) -> str:
    """`path` relative to `folder` as text any table, log or JSON takes: the bytes of a file name that are not UTF-8
    (Python keeps them as surrogates, which no encoder accepts) written as `\\xNN` escapes."""
    return os.fsencode(path.relative_to(folder).as_posix()).decode("utf-8", "backslashreplace")
