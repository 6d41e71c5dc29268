"""S3-compatible object storage (MinIO, AWS S3) for datasets and checkpoints.

    cfg = StorageConfig(enabled=True, endpoint_url="http://minio:9000", bucket="deepresearch")
    uri = storage_uri(cfg, "datasets", config_hash)         # s3://deepresearch/deepresearch/datasets/<hash>
    manifest = upload_dir(Path("out/datasets"), uri, cfg)   # returns the Manifest it wrote
    download_dir(uri, Path("/scratch/datasets"), cfg)       # every file verified against the manifest

A directory at `s3://bucket/key` is stored as

    key/<relative path>   one object per file, carrying its sha256 as metadata (x-amz-meta-sha256)
    key/_MANIFEST.json    every file's path, size and sha256 (and the empty directories); written LAST

Guarantees:

- **Checksummed.** Downloads verify each file's size and sha256 against the manifest and fail
  naming the file on a mismatch; single files are verified against their sha256 metadata.
- **Never partial.** A directory without its manifest is incomplete by definition and downloads
  refuse it. An upload that replaces different content first deletes the old manifest, then writes
  the files, then the new manifest. Downloads write into a temporary directory (or file) next to the
  target and rename it into place, so an interrupted or failed download leaves the previous target
  as it was.
- **Idempotent.** Re-uploading identical content transfers nothing: objects whose sha256 metadata
  and size already match are skipped, and an identical manifest is left alone.
- **Retried.** botocore retries each request (standard mode, `max_attempts`); on top of that each
  file transfer is retried with exponential backoff when it fails for a transient reason
  (connection errors, 5xx, throttling), so a multipart transfer that exhausts botocore's attempts
  on one part starts again rather than failing the whole directory.
- **Multipart** above `multipart_threshold_mb`, in parts of `multipart_chunk_mb` (boto3's
  TransferConfig).

One writer per URI: two concurrent uploads of different content to the same URI are not
coordinated (the pipeline's URIs are content or config-hash addressed, so this does not arise).
Credentials come from the standard boto3 chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, instance or pod roles). boto3 is imported inside the functions that use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepresearch.config import StorageConfig
from deepresearch.errors import DeepResearchError
from deepresearch.io import atomic_dir, content_digest, file_sha256

if TYPE_CHECKING:  # pragma: no cover - typing only
    from boto3.s3.transfer import TransferConfig

log = logging.getLogger(__name__)

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_SCHEMA_VERSION = 1
SHA256_METADATA_KEY = "sha256"  # sent as the x-amz-meta-sha256 header
_MIB = 1024 * 1024
_MAX_BACKOFF_S = 30.0
# S3 bucket naming rules (3-63 chars, lowercase letters, digits, dots, hyphens; no leading/trailing punctuation)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_SHA256_RE = r"^[0-9a-f]{64}$"
# error codes a retry can cure, besides any HTTP 5xx
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequestsException",
    "BandwidthLimitExceeded",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- errors


class StorageError(DeepResearchError):
    """An object-storage operation failed; the message names the URI and what to do."""


class ObjectNotFoundError(StorageError):
    """Nothing is stored at the URI (no object, or no directory: neither manifest nor files)."""


class IncompleteDirectoryError(StorageError):
    """Objects exist under a directory URI but its manifest does not: an upload was interrupted or is running."""


class ChecksumMismatchError(StorageError):
    """A downloaded file's size or sha256 differs from what the manifest (or object metadata) records."""


class CorruptManifestError(StorageError):
    """A directory's manifest does not match its own sha256 metadata or is not a valid manifest."""


# --------------------------------------------------------------------------------------------- config


# --------------------------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class S3Uri:
    """A parsed `s3://bucket/key` URI."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, relpath: str) -> "S3Uri":
        """The URI of `relpath` inside this directory URI."""
        return S3Uri(self.bucket, f"{self.key}/{relpath}" if self.key else relpath)


def parse_uri(uri: str) -> S3Uri:
    """Parse `s3://bucket/key` into bucket and key.

    Args:
        uri: the storage URI.

    Returns:
        The parsed URI; the key may be empty (`s3://bucket`).

    Raises:
        StorageError: the URI does not start with `s3://` or the bucket name is invalid.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(
            f"bad storage URI {uri!r}: expected s3://bucket/key (e.g. s3://deepresearch/datasets/ab12cd34ef56)"
        )
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise StorageError(
            f"bad storage URI {uri!r}: {bucket!r} is not a valid bucket name "
            "(3-63 lowercase letters, digits, dots or hyphens)"
        )
    if any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"bad storage URI {uri!r}: '.' and '..' are not allowed in the key")
    return S3Uri(bucket, key)


def storage_uri(cfg: StorageConfig, *parts: str) -> str:
    """The URI of an artifact under the configured bucket and prefix.

    Args:
        cfg: the storage section; must be enabled.
        *parts: key segments, e.g. `("datasets", cfg_hash)`.

    Returns:
        `s3://{bucket}/{prefix}/{parts...}`.

    Raises:
        StorageError: storage is disabled.
    """
    if not cfg.enabled:
        raise StorageError("object storage is disabled: set storage.enabled=true and storage.bucket")
    segments = [cfg.prefix, *(p.strip("/") for p in parts)]
    return f"s3://{cfg.bucket}/" + "/".join(s for s in segments if s)


def _dir_uri(uri: str) -> S3Uri:
    parsed = parse_uri(uri)
    key = parsed.key.strip("/")
    if not key:
        raise StorageError(
            f"bad directory URI {uri!r}: give a key prefix (s3://{parsed.bucket}/some/dir); "
            "a directory is never stored at a bucket's root"
        )
    return S3Uri(parsed.bucket, key)


def _file_uri(uri: str) -> S3Uri:
    parsed = parse_uri(uri)
    if not parsed.key or parsed.key.endswith("/"):
        raise StorageError(f"bad file URI {uri!r}: it must name an object (s3://bucket/path/to/file)")
    return parsed


# --------------------------------------------------------------------------------------------- manifest


class ManifestEntry(BaseModel):
    """One file of a stored directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative POSIX path inside the directory
    size: int = Field(ge=0)  # bytes
    sha256: str = Field(pattern=_SHA256_RE)


class Manifest(BaseModel):
    """Every file of a stored directory; its presence marks the directory complete."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    files: tuple[ManifestEntry, ...]
    empty_dirs: tuple[str, ...] = ()  # object stores have no directories; recorded so they round-trip

    @model_validator(mode="after")
    def _paths_are_safe(self) -> "Manifest":
        seen: set[str] = set()
        for path in [f.path for f in self.files] + list(self.empty_dirs):
            _check_relpath(path)
            if path in seen:
                raise ValueError(f"path {path!r} is listed twice")
            seen.add(path)
        return self

    @property
    def total_bytes(self) -> int:
        """Sum of the files' sizes."""
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        """The directory's content digest (`deepresearch.io.content_digest` over its files)."""
        return content_digest({f.path: f.sha256 for f in self.files})

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, stable file order) as stored in `_MANIFEST.json`."""
        return (json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1) + "\n").encode()


def _check_relpath(path: str) -> None:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"path {path!r} must be relative, without '.', '..' or empty segments")


def build_manifest(local: Path) -> Manifest:
    """Hash every file under a local directory.

    Args:
        local: the directory; symlinked files are followed, symlinked directories refused.

    Returns:
        The manifest (files sorted by path).

    Raises:
        StorageError: `local` is not a directory, contains a symlinked directory, or has a
            top-level `_MANIFEST.json` (which would collide with the manifest object).
    """
    local = Path(local)
    if not local.is_dir():
        raise StorageError(f"cannot upload {local}: not a directory")
    files: list[ManifestEntry] = []
    empty: list[str] = []
    for root, dirnames, filenames in os.walk(local, followlinks=False):
        root_path = Path(root)
        for d in dirnames:
            if (root_path / d).is_symlink():
                raise StorageError(
                    f"cannot upload {local}: {root_path / d} is a symlinked directory; "
                    "copy its content in or remove the link"
                )
        if root_path != local and not dirnames and not filenames:
            empty.append(root_path.relative_to(local).as_posix())
        for name in filenames:
            path = root_path / name
            rel = path.relative_to(local).as_posix()
            if rel == MANIFEST_NAME:
                raise StorageError(
                    f"cannot upload {local}: it contains a top-level {MANIFEST_NAME}, the name reserved "
                    "for the storage manifest; rename that file"
                )
            if not path.is_file():
                raise StorageError(
                    f"cannot upload {local}: {path} is not a regular file (broken link, socket?)"
                )
            files.append(ManifestEntry(path=rel, size=path.stat().st_size, sha256=file_sha256(path)))
    files.sort(key=lambda e: e.path)
    return Manifest(files=tuple(files), empty_dirs=tuple(sorted(empty)))


# --------------------------------------------------------------------------------------------- client, retry, errors


_loader_lock = threading.Lock()
_shared_loader: Any = None


def make_client(cfg: StorageConfig) -> Any:
    """A boto3 S3 client for the configured endpoint, with botocore's standard retry mode.

    Each client gets a fresh session, so credentials are resolved from the environment at call
    time; the parsed service models are shared between sessions, which makes a client cost
    milliseconds instead of a few hundred.

    Args:
        cfg: the storage section.

    Returns:
        A `botocore.client.S3`, safe to use from several threads.
    """
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.loaders import create_loader

    global _shared_loader
    config = Config(
        region_name=cfg.region,
        # total_max_attempts counts the first request too, as AWS_MAX_ATTEMPTS does
        retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
        # MinIO and most S3-compatible servers are addressed by path, not by virtual host
        s3={"addressing_style": "path"} if cfg.endpoint_url else {},
    )
    with _loader_lock:  # boto3 sessions are not thread-safe; creating clients under a lock is
        if _shared_loader is None:
            _shared_loader = create_loader()
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader)
        return boto3.session.Session(botocore_session=core).client(
            "s3", endpoint_url=cfg.endpoint_url, config=config
        )


def _transfer_config(cfg: StorageConfig) -> "TransferConfig":
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=cfg.multipart_threshold_mb * _MIB,
        multipart_chunksize=cfg.multipart_chunk_mb * _MIB,
        # the classic transfer manager everywhere, so part sizes (and ETags) follow the config
        preferred_transfer_client="classic",
    )


def _error_chain(exc: BaseException) -> list[BaseException]:
    # boto3 wraps client errors of transfers (S3UploadFailedError) without `from`, so follow __context__ too
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _client_error(exc: BaseException) -> Any | None:
    from botocore.exceptions import ClientError

    return next((e for e in _error_chain(exc) if isinstance(e, ClientError)), None)


def _error_code(client_error: Any) -> tuple[str, int]:
    err = client_error.response.get("Error", {})
    status = client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(err.get("Code", "")), int(status or 0)


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transfer may succeed: connection trouble, 5xx, throttling."""
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError
    from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceededError

    if isinstance(exc, StorageError):  # our own verdicts (checksum mismatch, ...) are final
        return False
    for e in _error_chain(exc):
        if isinstance(
            e,
            BotoConnectionError
            | HTTPClientError
            | IncompleteReadError
            | RetriesExceededError
            | TransferRetriesExceededError
            | ConnectionError
            | TimeoutError,
        ):
            return True
    ce = _client_error(exc)
    if ce is not None:
        code, status = _error_code(ce)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


def _explain(exc: BaseException, what: str, uri: S3Uri, cfg: StorageConfig) -> StorageError:
    """Turn a boto error into a StorageError that says what failed, where, and what to do."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    where = cfg.endpoint_url or "AWS S3"
    for e in _error_chain(exc):
        if isinstance(e, StorageError):
            return e
        if isinstance(e, NoCredentialsError):
            return StorageError(
                f"{what} {uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the S3/MinIO server"
            )
        if isinstance(e, EndpointConnectionError):
            return StorageError(
                f"{what} {uri}: cannot reach {where} after retries; is the S3/MinIO server running "
                "and storage.endpoint_url right?"
            )
    ce = _client_error(exc)
    if ce is not None:
        code, status = _error_code(ce)
        if code == "NoSuchBucket":
            return _missing_bucket(uri, cfg)
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFoundError(f"{what} {uri}: no object at that key; check the URI")
        if code in _DENIED_CODES or status == 403:
            return StorageError(
                f"{what} {uri}: access denied by {where} ({code or status}); check that the credentials "
                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) may read and write bucket {uri.bucket!r}"
            )
    attempts = f" after {cfg.max_attempts} attempts" if _is_transient(exc) else ""
    return StorageError(f"{what} {uri} failed{attempts} ({where}): {exc}")


def _missing_bucket(uri: S3Uri, cfg: StorageConfig) -> StorageError:
    return StorageError(
        f"bucket {uri.bucket!r} does not exist at {cfg.endpoint_url or 'AWS S3'} (for {uri}); create it "
        f"(`aws s3 mb s3://{uri.bucket}` or `mc mb <alias>/{uri.bucket}`) or set storage.bucket to an existing one"
    )


def _with_retry(fn: Callable[[], T], what: str, uri: S3Uri, cfg: StorageConfig) -> T:
    """Run `fn`, retrying transient failures with exponential backoff; raise a StorageError otherwise."""
    for attempt in range(1, cfg.max_attempts + 1):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            if attempt == cfg.max_attempts or not _is_transient(exc):
                raise _explain(exc, what, uri, cfg) from exc
            delay = min(_MAX_BACKOFF_S, cfg.retry_backoff_s * 2 ** (attempt - 1))
            log.warning(
                "%s %s: transient failure (attempt %d/%d), retrying in %.2fs: %s",
                what,
                uri,
                attempt,
                cfg.max_attempts,
                delay,
                exc,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_bucket(client: Any, uri: S3Uri, cfg: StorageConfig) -> None:
    # head_object answers a bare 404 for a missing bucket too; asking once up front keeps errors precise
    from botocore.exceptions import ClientError

    def head() -> None:
        try:
            client.head_bucket(Bucket=uri.bucket)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in _NOT_FOUND_CODES | {"NoSuchBucket"} or status == 404:
                raise _missing_bucket(uri, cfg) from exc
            raise

    _with_retry(head, "checking bucket of", uri, cfg)


def _head(client: Any, uri: S3Uri, cfg: StorageConfig) -> dict | None:
    """The object's HEAD response, or None when there is no object at the key."""
    from botocore.exceptions import ClientError

    def head() -> dict | None:
        try:
            return client.head_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in _NOT_FOUND_CODES or status == 404:
                return None
            raise

    return _with_retry(head, "reading metadata of", uri, cfg)


def _matches(head: dict | None, size: int, sha256: str) -> bool:
    return (
        head is not None
        and head.get("ContentLength") == size
        and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == sha256
    )


# --------------------------------------------------------------------------------------------- transfers


def _put_file(client: Any, path: Path, uri: S3Uri, sha256: str, cfg: StorageConfig) -> None:
    transfer = _transfer_config(cfg)
    _with_retry(
        lambda: client.upload_file(
            str(path),
            uri.bucket,
            uri.key,
            ExtraArgs={"Metadata": {SHA256_METADATA_KEY: sha256}},
            Config=transfer,
        ),
        "uploading to",
        uri,
        cfg,
    )


def _get_file(client: Any, uri: S3Uri, path: Path, cfg: StorageConfig) -> None:
    transfer = _transfer_config(cfg)
    _with_retry(
        lambda: client.download_file(uri.bucket, uri.key, str(path), Config=transfer), "downloading", uri, cfg
    )


def _verify(path: Path, size: int, sha256: str, name: str, uri: S3Uri) -> None:
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ChecksumMismatchError(
            f"checksum mismatch for file {name!r} ({uri}): expected {size} bytes, got {actual_size}; "
            "the stored object was changed or corrupted after upload; re-upload the directory"
        )
    actual = file_sha256(path)
    if actual != sha256:
        raise ChecksumMismatchError(
            f"checksum mismatch for file {name!r} ({uri}): expected sha256 {sha256}, got {actual}; "
            "the stored object was changed or corrupted after upload; re-upload the directory"
        )


def _read_manifest(client: Any, d: S3Uri, cfg: StorageConfig) -> Manifest | None:
    """The manifest of the directory at `d`, or None when it has none."""
    from botocore.exceptions import ClientError

    uri = d.child(MANIFEST_NAME)

    def get() -> tuple[bytes, dict] | None:
        try:
            resp = client.get_object(Bucket=uri.bucket, Key=uri.key)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in _NOT_FOUND_CODES or status == 404:
                return None
            raise
        return resp["Body"].read(), resp.get("Metadata", {})

    got = _with_retry(get, "reading manifest", uri, cfg)
    if got is None:
        return None
    body, metadata = got
    expected = metadata.get(SHA256_METADATA_KEY)
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise CorruptManifestError(
            f"checksum mismatch for file {MANIFEST_NAME!r} ({uri}): the manifest does not match its sha256 "
            "metadata; re-upload the directory"
        )
    try:
        return Manifest.model_validate_json(body)
    except ValidationError as exc:
        raise CorruptManifestError(
            f"manifest {uri} is not a valid schema-{MANIFEST_SCHEMA_VERSION} manifest ({exc}); "
            "re-upload the directory"
        ) from exc


def _has_objects(client: Any, d: S3Uri, cfg: StorageConfig) -> bool:
    resp = _with_retry(
        lambda: client.list_objects_v2(Bucket=d.bucket, Prefix=d.key + "/", MaxKeys=1), "listing", d, cfg
    )
    return resp.get("KeyCount", 0) > 0


def upload_dir(local: Path, uri: str, cfg: StorageConfig, *, client: Any = None) -> Manifest:
    """Upload a directory tree, checksummed, with its manifest written last.

    Files whose object already has the same size and sha256 metadata are skipped, so re-uploading
    identical content transfers nothing and resuming an interrupted upload sends only what is
    missing. When the URI holds a different version, its manifest is deleted first (the directory
    is incomplete until the new manifest lands) and files of the old version that the new one
    lacks are deleted. Objects under the prefix that no manifest lists are left alone. A corrupt
    manifest is replaced.

    Args:
        local: the directory to upload.
        uri: `s3://bucket/key-prefix` of the stored directory.
        cfg: the storage section (endpoint, multipart sizes, retries).
        client: an S3 client to use instead of `make_client(cfg)` (tests hook its events).

    Returns:
        The manifest stored at `<uri>/_MANIFEST.json`.

    Raises:
        StorageError: bad URI, missing bucket, access denied, or a transfer that kept failing.
    """
    d = _dir_uri(uri)
    manifest = build_manifest(Path(local))
    client = client or make_client(cfg)
    _check_bucket(client, d, cfg)
    manifest_uri = d.child(MANIFEST_NAME)
    try:
        previous = _read_manifest(client, d, cfg)
        replacing = previous is not None and previous != manifest
    except CorruptManifestError as exc:
        log.warning("%s: replacing it", exc)
        previous, replacing = None, True
    if replacing:
        _with_retry(
            lambda: client.delete_object(Bucket=d.bucket, Key=manifest_uri.key), "deleting", manifest_uri, cfg
        )

    sent = 0
    for entry in manifest.files:
        obj = d.child(entry.path)
        if _matches(_head(client, obj, cfg), entry.size, entry.sha256):
            continue
        _put_file(client, Path(local) / entry.path, obj, entry.sha256, cfg)
        sent += entry.size

    if previous is not None:
        for path in sorted({f.path for f in previous.files} - {f.path for f in manifest.files}):
            stale = d.child(path)
            _with_retry(
                lambda k=stale.key: client.delete_object(Bucket=d.bucket, Key=k), "deleting", stale, cfg
            )

    if previous != manifest:
        body = manifest.to_bytes()
        _with_retry(
            lambda: client.put_object(
                Bucket=d.bucket,
                Key=manifest_uri.key,
                Body=body,
                ContentType="application/json",
                Metadata={SHA256_METADATA_KEY: hashlib.sha256(body).hexdigest()},
            ),
            "writing manifest",
            manifest_uri,
            cfg,
        )
    log.info(
        "uploaded %s -> %s: %d files, %d bytes (%d sent)",
        local,
        d,
        len(manifest.files),
        manifest.total_bytes,
        sent,
    )
    return manifest


def download_dir(uri: str, local: Path, cfg: StorageConfig, *, client: Any = None) -> Manifest:
    """Download a stored directory, verifying every file, and put it in place atomically.

    The files are written into a temporary directory next to `local` and verified against the
    manifest; only then is `local` replaced (its previous content, if any, is removed). On any
    failure the temporary directory is removed and `local` is left as it was.

    Args:
        uri: `s3://bucket/key-prefix` of the stored directory.
        local: the target directory (its parent is created if needed).
        cfg: the storage section.
        client: an S3 client to use instead of `make_client(cfg)`.

    Returns:
        The manifest the download was verified against.

    Raises:
        IncompleteDirectoryError: objects exist under the URI but no manifest.
        ObjectNotFoundError: nothing is stored at the URI, or a listed file is missing.
        ChecksumMismatchError: a file's size or sha256 differs from the manifest (names the file).
        StorageError: bad URI, missing bucket, `local` is a file, or a transfer kept failing.
    """
    d = _dir_uri(uri)
    local = Path(local)
    if local.exists() and not local.is_dir():
        raise StorageError(f"cannot download {d} to {local}: it exists and is not a directory; remove it")
    client = client or make_client(cfg)
    _check_bucket(client, d, cfg)
    manifest = _read_manifest(client, d, cfg)
    if manifest is None:
        if _has_objects(client, d, cfg):
            raise IncompleteDirectoryError(
                f"{d} is incomplete: objects exist under it but no {MANIFEST_NAME}, so an upload was interrupted "
                "or is still running; re-run the upload (upload_dir) and download again"
            )
        raise ObjectNotFoundError(f"nothing stored at {d}: no {MANIFEST_NAME} and no objects; check the URI")

    with atomic_dir(local) as tmp:  # the old copy stays in place until every file is verified
        for rel in manifest.empty_dirs:
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        for entry in manifest.files:
            target = tmp / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            obj = d.child(entry.path)
            _get_file(client, obj, target, cfg)
            _verify(target, entry.size, entry.sha256, entry.path, obj)
    log.info(
        "downloaded %s -> %s: %d files, %d bytes, verified",
        d,
        local,
        len(manifest.files),
        manifest.total_bytes,
    )
    return manifest


def upload_file(local: Path, uri: str, cfg: StorageConfig, *, client: Any = None) -> ManifestEntry:
    """Upload one file with its sha256 as object metadata (skipped if the object already matches).

    Args:
        local: the file.
        uri: `s3://bucket/key` of the object.
        cfg: the storage section.
        client: an S3 client to use instead of `make_client(cfg)`.

    Returns:
        The file's entry (`path` is the key's last segment).

    Raises:
        StorageError: `local` is not a file, bad URI, missing bucket, or the transfer kept failing.
    """
    obj = _file_uri(uri)
    local = Path(local)
    if not local.is_file():
        raise StorageError(f"cannot upload {local} to {obj}: not a file")
    entry = ManifestEntry(
        path=PurePosixPath(obj.key).name, size=local.stat().st_size, sha256=file_sha256(local)
    )
    client = client or make_client(cfg)
    _check_bucket(client, obj, cfg)
    if not _matches(_head(client, obj, cfg), entry.size, entry.sha256):
        _put_file(client, local, obj, entry.sha256, cfg)
    return entry


def download_file(uri: str, local: Path, cfg: StorageConfig, *, client: Any = None) -> ManifestEntry:
    """Download one object, verify it against its sha256 metadata, and rename it into place.

    Args:
        uri: `s3://bucket/key` of the object (uploaded by `upload_file` or `upload_dir`).
        local: the target file (its parent is created if needed); replaced only after verification.
        cfg: the storage section.
        client: an S3 client to use instead of `make_client(cfg)`.

    Returns:
        The file's entry as recorded by the object's metadata.

    Raises:
        ObjectNotFoundError: no object at the URI.
        ChecksumMismatchError: the content differs from its sha256 metadata.
        StorageError: the object has no sha256 metadata, bad URI, missing bucket, or the transfer kept failing.
    """
    obj = _file_uri(uri)
    local = Path(local)
    if local.is_dir():
        raise StorageError(f"cannot download {obj} to {local}: it is a directory; give a file path")
    client = client or make_client(cfg)
    _check_bucket(client, obj, cfg)
    head = _head(client, obj, cfg)
    if head is None:
        raise ObjectNotFoundError(f"no object at {obj}; check the URI")
    sha256 = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
    if sha256 is None:
        raise StorageError(
            f"cannot verify {obj}: it has no x-amz-meta-{SHA256_METADATA_KEY} metadata (not uploaded by "
            "deepresearch.storage); re-upload it with upload_file"
        )
    entry = ManifestEntry(path=PurePosixPath(obj.key).name, size=head["ContentLength"], sha256=sha256)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{local.name}.partial-", dir=local.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _get_file(client, obj, tmp, cfg)
        _verify(tmp, entry.size, entry.sha256, entry.path, obj)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, local)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entry


def exists(uri: str, cfg: StorageConfig, *, client: Any = None) -> bool:
    """Whether a complete directory (its manifest) or an object is stored at the URI.

    A directory whose upload never finished (objects but no manifest) does not exist.

    Args:
        uri: `s3://bucket/key`.
        cfg: the storage section.
        client: an S3 client to use instead of `make_client(cfg)`.

    Returns:
        True when `<uri>/_MANIFEST.json` or an object at exactly `<uri>` exists.

    Raises:
        StorageError: bad URI or missing bucket (a misconfiguration, not an absent artifact).
    """
    parsed = parse_uri(uri)
    key = parsed.key.strip("/")
    client = client or make_client(cfg)
    _check_bucket(client, parsed, cfg)
    if not key:
        return True
    d = S3Uri(parsed.bucket, key)
    if _head(client, d.child(MANIFEST_NAME), cfg) is not None:
        return True
    return not parsed.key.endswith("/") and _head(client, d, cfg) is not None
