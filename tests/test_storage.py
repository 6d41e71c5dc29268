"""Object storage against a real S3-compatible server: moto's standalone server on loopback.

No mocking decorators: the module starts `ThreadedMotoServer` on 127.0.0.1 (a free port), and the
library talks HTTP to it through boto3 like it would to MinIO. Failures are injected
deterministically with botocore `before-send` hooks on the client passed to the library: a hook
that returns a response short-circuits that one HTTP request, everything else reaches the server.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from pathlib import Path

import pytest

from deepresearch.storage import (
    MANIFEST_NAME,
    ChecksumMismatchError,
    CorruptManifestError,
    IncompleteDirectoryError,
    ObjectNotFoundError,
    StorageConfig,
    StorageError,
    download_dir,
    download_file,
    exists,
    make_client,
    parse_uri,
    storage_uri,
    upload_dir,
    upload_file,
)

MIB = 1024 * 1024
WRITE_OPS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "DeleteObject")


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on a free loopback port, with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }.items():
            mp.setenv(name, value)
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
        ):
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def bucket(endpoint):
    """One bucket for the module (creating buckets on moto is slow); tests get their own prefixes."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    make_client(StorageConfig(endpoint_url=endpoint)).create_bucket(Bucket=name)
    return name


@pytest.fixture
def cfg(endpoint, bucket):
    """A config on a fresh key prefix; small multipart sizes and fast backoff keep the tests quick."""
    return StorageConfig(
        enabled=True,
        endpoint_url=endpoint,
        bucket=bucket,
        prefix=f"t-{uuid.uuid4().hex[:8]}",
        multipart_threshold_mb=5,
        multipart_chunk_mb=5,
        max_attempts=2,
        retry_backoff_s=0.01,
    )


def _write_tree(root: Path, version: int = 1) -> Path:
    """Nested files, a binary file, an empty file, an empty directory, a name with a space."""
    rng = random.Random(version)
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty_dir" / "inner").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"version": version}))
    (root / "a" / "weights.bin").write_bytes(rng.randbytes(70_000))
    (root / "a" / "b" / "deep file.txt").write_text(f"nested v{version}\n")
    (root / "a" / "b" / "empty.txt").write_bytes(b"")
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root: file content, or None for a directory."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


class FailFirst:
    """A `before-send` hook failing the first `n` requests of `op` whose URL contains `marker`."""

    def __init__(self, n: int, op: str, marker: str, status: int = 503, code: str = "ServiceUnavailable"):
        self.n, self.op, self.marker, self.status, self.code = n, op, marker, status, code
        self.calls = 0  # matching requests seen, failed or not

    def install(self, client) -> "FailFirst":
        client.meta.events.register(f"before-send.s3.{self.op}", self)
        return self

    def __call__(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse

        if self.marker not in request.url:
            return None
        self.calls += 1
        if self.calls > self.n:
            return None  # let it through to the server
        body = f"<Error><Code>{self.code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, self.status, {"Content-Type": "application/xml"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


class CountWrites:
    """A `before-send` hook counting write requests (it never answers them itself)."""

    def __init__(self, client):
        self.ops: list[str] = []
        client.meta.events.register("before-send.s3", self)

    def __call__(self, request, event_name, **kwargs):
        op = event_name.rsplit(".", 1)[-1]
        if op in WRITE_OPS:
            self.ops.append(op)


# --------------------------------------------------------------------------------------------- round trips


def test_directory_round_trip_with_checksums(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "v1")
    manifest = upload_dir(src, uri, cfg)

    files = {f.path: f for f in manifest.files}
    assert set(files) == {"config.json", "a/weights.bin", "a/b/deep file.txt", "a/b/empty.txt"}
    assert manifest.empty_dirs == ("empty_dir/inner",)
    assert files["a/b/empty.txt"].size == 0
    assert files["a/weights.bin"].sha256 == hashlib.sha256((src / "a/weights.bin").read_bytes()).hexdigest()

    # each object carries its sha256 as x-amz-meta-sha256; the manifest object is the returned one
    client = make_client(cfg)
    key = parse_uri(uri).key
    for f in manifest.files:
        head = client.head_object(Bucket=cfg.bucket, Key=f"{key}/{f.path}")
        assert head["Metadata"]["sha256"] == f.sha256
        assert head["ContentLength"] == f.size
    stored = client.get_object(Bucket=cfg.bucket, Key=f"{key}/{MANIFEST_NAME}")["Body"].read()
    assert stored == manifest.to_bytes()

    dst = tmp_path / "dst"
    assert download_dir(uri, dst, cfg) == manifest
    assert _snapshot(dst) == _snapshot(src)
    assert exists(uri, cfg) and exists(uri + "/", cfg)
    assert not exists(storage_uri(cfg, "datasets", "v2"), cfg)
    assert {p.name for p in tmp_path.iterdir()} == {"src", "dst"}  # no temp directory left


def test_reupload_of_same_content_writes_nothing(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "ckpt")
    first = upload_dir(src, uri, cfg)

    client = make_client(cfg)
    writes = CountWrites(client)
    assert upload_dir(src, uri, cfg, client=client) == first
    assert writes.ops == []


def test_reupload_of_changed_content_replaces_the_directory(cfg, tmp_path):
    uri = storage_uri(cfg, "ckpt")
    upload_dir(_write_tree(tmp_path / "v1", version=1), uri, cfg)
    download_dir(uri, tmp_path / "dst", cfg)

    v2 = _write_tree(tmp_path / "v2", version=2)
    (v2 / "a" / "b" / "deep file.txt").unlink()
    (v2 / "added.txt").write_text("new in v2")
    client = make_client(cfg)
    writes = CountWrites(client)
    upload_dir(v2, uri, cfg, client=client)

    # old manifest removed first, changed/added files sent, the dropped file deleted, new manifest last
    assert writes.ops[0] == "DeleteObject" and writes.ops[-1] == "PutObject"
    assert exists(uri, cfg) and not exists(uri + "/a/b/deep file.txt", cfg)
    download_dir(uri, tmp_path / "dst", cfg)
    assert _snapshot(tmp_path / "dst") == _snapshot(v2)


def test_file_above_threshold_goes_multipart_and_round_trips(cfg, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = random.Random(0).randbytes(11 * MIB)  # 5 MiB parts: 5 + 5 + 1
    (src / "model.safetensors").write_bytes(big)
    (src / "small.json").write_text("{}")
    uri = storage_uri(cfg, "models", "big")
    manifest = upload_dir(src, uri, cfg)

    client = make_client(cfg)
    key = parse_uri(uri).key
    head_big = client.head_object(Bucket=cfg.bucket, Key=f"{key}/model.safetensors")
    head_small = client.head_object(Bucket=cfg.bucket, Key=f"{key}/small.json")
    assert head_big["ETag"].strip('"').endswith("-3")  # a multipart ETag: md5 of part md5s, "-<parts>"
    assert "-" not in head_small["ETag"]
    assert head_big["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()

    assert download_dir(uri, tmp_path / "dst", cfg) == manifest
    assert (tmp_path / "dst" / "model.safetensors").read_bytes() == big


def test_single_file_round_trip(cfg, tmp_path):
    src = tmp_path / "report.md"
    src.write_text("# report\n")
    uri = storage_uri(cfg, "reports", "report.md")
    entry = upload_file(src, uri, cfg)
    assert entry.sha256 == hashlib.sha256(b"# report\n").hexdigest() and entry.size == 9
    assert exists(uri, cfg)

    dst = tmp_path / "out" / "copy.md"
    assert download_file(uri, dst, cfg) == entry
    assert dst.read_text() == "# report\n"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["copy.md"]  # no temp file left


# --------------------------------------------------------------------------------------------- never partial, checksums


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_tampered_object_fails_naming_the_file_and_keeps_the_target(cfg, tmp_path, same_size):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "tamper")
    upload_dir(src, uri, cfg)
    target = tmp_path / "target"
    download_dir(uri, target, cfg)
    before = _snapshot(target)

    # silent corruption: new bytes under the old sha256 metadata
    original = (src / "a" / "weights.bin").read_bytes()
    tampered = bytes([original[0] ^ 0xFF]) + original[1:] if same_size else original + b"!"
    client = make_client(cfg)
    client.put_object(
        Bucket=cfg.bucket,
        Key=f"{parse_uri(uri).key}/a/weights.bin",
        Body=tampered,
        Metadata={"sha256": hashlib.sha256(original).hexdigest()},
    )

    with pytest.raises(ChecksumMismatchError, match="'a/weights.bin'"):
        download_dir(uri, target, cfg)
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "target"]  # temp dir cleaned up

    single = tmp_path / "single.bin"
    with pytest.raises(ChecksumMismatchError, match="weights.bin"):
        download_file(f"{uri}/a/weights.bin", single, cfg)
    assert not single.exists()


def test_prefix_without_manifest_is_refused(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "interrupted")
    client = make_client(cfg)
    # the upload dies at its last step, the manifest: every file is there, the directory is not complete
    FailFirst(99, "PutObject", MANIFEST_NAME, status=403, code="AccessDenied").install(client)
    with pytest.raises(StorageError, match="access denied"):
        upload_dir(src, uri, cfg, client=client)

    assert exists(uri + "/config.json", cfg)
    assert not exists(uri, cfg)
    with pytest.raises(IncompleteDirectoryError, match=MANIFEST_NAME):
        download_dir(uri, tmp_path / "dst", cfg)
    assert not (tmp_path / "dst").exists()

    # re-running the upload completes it, sending only the manifest
    client = make_client(cfg)
    writes = CountWrites(client)
    upload_dir(src, uri, cfg, client=client)
    assert writes.ops == ["PutObject"]
    download_dir(uri, tmp_path / "dst", cfg)
    assert _snapshot(tmp_path / "dst") == _snapshot(src)


def test_corrupt_manifest_is_refused_and_repaired_by_upload(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "corrupt")
    upload_dir(src, uri, cfg)
    make_client(cfg).put_object(
        Bucket=cfg.bucket, Key=f"{parse_uri(uri).key}/{MANIFEST_NAME}", Body=b"{not json"
    )

    with pytest.raises(CorruptManifestError, match="not a valid schema-1 manifest"):
        download_dir(uri, tmp_path / "dst", cfg)
    upload_dir(src, uri, cfg)
    download_dir(uri, tmp_path / "dst", cfg)
    assert _snapshot(tmp_path / "dst") == _snapshot(src)


def test_missing_things_have_clear_errors(cfg, tmp_path):
    with pytest.raises(ObjectNotFoundError, match="nothing stored at"):
        download_dir(storage_uri(cfg, "never", "written"), tmp_path / "dst", cfg)
    with pytest.raises(ObjectNotFoundError, match="no object at"):
        download_file(storage_uri(cfg, "never.txt"), tmp_path / "never.txt", cfg)
    assert not (tmp_path / "dst").exists() and not (tmp_path / "never.txt").exists()

    foreign = parse_uri(storage_uri(cfg, "foreign.txt"))
    make_client(cfg).put_object(Bucket=foreign.bucket, Key=foreign.key, Body=b"x")
    with pytest.raises(StorageError, match="no x-amz-meta-sha256"):
        download_file(str(foreign), tmp_path / "foreign.txt", cfg)

    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/d"
    for call in (
        lambda: upload_dir(_write_tree(tmp_path / "src"), missing, cfg),
        lambda: download_dir(missing, tmp_path / "dst", cfg),
        lambda: exists(missing, cfg),
    ):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-.*' does not exist.*create it"):
            call()


def test_unreachable_endpoint_and_missing_credentials_say_so(endpoint, monkeypatch, tmp_path):
    # `endpoint` only for its credentials in the environment; port 1 refuses connections
    cfg = StorageConfig(enabled=True, endpoint_url="http://127.0.0.1:1", bucket="bucket", max_attempts=1)
    with pytest.raises(StorageError, match="cannot reach http://127.0.0.1:1.*endpoint_url"):
        download_dir("s3://bucket/d", tmp_path / "dst", cfg)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        exists("s3://bucket/d", cfg.model_copy(update={"endpoint_url": endpoint}))


@pytest.mark.parametrize(
    "uri",
    ["/local/path", "http://host/bucket/key", "s3:/bucket/key", "s3://", "s3://Bad_Bucket/key", "s3://b/key"],
)
def test_bad_uri_is_refused(cfg, tmp_path, uri):
    with pytest.raises(StorageError, match="bad storage URI"):
        upload_dir(_write_tree(tmp_path / "src"), uri, cfg)
    with pytest.raises(StorageError, match="bad storage URI"):
        exists(uri, cfg)


def test_directory_uri_needs_a_key_and_no_dot_segments(cfg, tmp_path):
    with pytest.raises(StorageError, match="bad directory URI"):
        download_dir(f"s3://{cfg.bucket}/", tmp_path / "dst", cfg)
    with pytest.raises(StorageError, match=r"'\.\.' are not allowed"):
        download_dir(f"s3://{cfg.bucket}/a/../b", tmp_path / "dst", cfg)


# --------------------------------------------------------------------------------------------- retries


def test_transient_upload_failures_are_retried(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "flaky")
    client = make_client(cfg)
    # 3 failures > botocore's 2 attempts: the first file transfer fails, our retry starts it again
    flaky = FailFirst(3, "PutObject", "config.json").install(client)
    manifest = upload_dir(src, uri, cfg, client=client)
    assert flaky.calls == 4  # 3 × 503 ServiceUnavailable, then the request that reached the server

    download_dir(uri, tmp_path / "dst", cfg)
    assert _snapshot(tmp_path / "dst") == _snapshot(src)
    assert len(manifest.files) == 4


def test_transient_download_failures_are_retried(cfg, tmp_path):
    src = _write_tree(tmp_path / "src")
    uri = storage_uri(cfg, "datasets", "flaky-get")
    upload_dir(src, uri, cfg)
    client = make_client(cfg)
    flaky = FailFirst(3, "GetObject", "weights.bin", status=500, code="InternalError").install(client)
    download_dir(uri, tmp_path / "dst", cfg, client=client)
    assert flaky.calls == 4
    assert _snapshot(tmp_path / "dst") == _snapshot(src)


def test_persistent_failure_gives_up_and_leaves_nothing(cfg, tmp_path):
    src = tmp_path / "one.txt"
    src.write_text("1")
    uri = storage_uri(cfg, "one.txt")
    client = make_client(cfg)
    flaky = FailFirst(99, "PutObject", "one.txt").install(client)
    with pytest.raises(StorageError, match="after 2 attempts"):
        upload_file(src, uri, cfg, client=client)
    assert flaky.calls == 4  # 2 file-level attempts × 2 botocore attempts, then it stops
    assert not exists(uri, cfg)


# --------------------------------------------------------------------------------------------- config


def test_config_validation_and_uris():
    from pydantic import ValidationError

    assert not StorageConfig().enabled
    with pytest.raises(ValidationError, match="needs storage.bucket"):
        StorageConfig(enabled=True)
    with pytest.raises(ValidationError):
        StorageConfig(bucket="b", multipart_chunk_mb=4)  # S3's minimum part size is 5 MiB
    with pytest.raises(ValidationError, match="http"):
        StorageConfig(bucket="bucket", endpoint_url="minio:9000")
    with pytest.raises(ValidationError):
        StorageConfig(bucket="bucket", unknown=1)
    with pytest.raises(StorageError, match="disabled"):
        storage_uri(StorageConfig(), "x")
    cfg = StorageConfig(enabled=True, bucket="my-bucket", prefix="runs/dr")
    assert storage_uri(cfg, "datasets", "/abc/") == "s3://my-bucket/runs/dr/datasets/abc"
    assert parse_uri("s3://my-bucket/a/b.txt").key == "a/b.txt"


def test_world_stage_publishes_the_world_when_storage_is_enabled(cfg, tmp_path):
    """The pipeline's stages upload their artifacts when `storage.enabled`; the URI is content-addressed."""
    from deepresearch.config import load_config
    from deepresearch.io import dir_digest
    from deepresearch.stages import world_stage

    pipeline = load_config("configs/tiny.yaml", ["world.entities_per_type=3", "tracking.enabled=false"])
    pipeline = pipeline.model_copy(update={"storage": cfg})
    res = world_stage(pipeline, tmp_path / "world")
    uri = f"s3://{cfg.bucket}/{cfg.prefix}/worlds/{dir_digest(tmp_path / 'world')[:16]}"
    got = download_dir(uri, tmp_path / "back", cfg)
    assert {f.path for f in got.files} >= {"manifest.json", "documents.jsonl", "index/meta.json"}
    assert (tmp_path / "back" / "documents.jsonl").read_bytes() == (tmp_path / "world" / "documents.jsonl").read_bytes()
    assert res.stage == "world"
