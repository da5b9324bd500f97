"""Storage URIs against the local disk and a real SeaweedFS S3 server on 127.0.0.1."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import local_s3
from invs import storage
from invs.errors import StorageError

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------------------ URIs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.tar", "s3://bucket/a/b.tar"),
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket//a//b", "s3://bucket/a/b"),
        ("file:///tmp/x", "/tmp/x"),
    ],
)
def test_normalize(uri: str, expected: str) -> None:
    assert storage.normalize(uri) == expected


def test_relative_local_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("out/x") == str(tmp_path / "out" / "x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty location"),
        ("s3://", "malformed S3 URI"),
        ("s3:/bucket/key", "malformed S3 URI"),
        ("s3://Bad_Bucket/key", "malformed S3 URI"),
        ("s3://ab/key", "malformed S3 URI"),
        ("gs://bucket/key", "unsupported location"),
        ("http://example.com/x", "unsupported location"),
        ("file://relative/path", "malformed file URI"),
        ("s3://YOUR-BUCKET/invs/renders", "placeholder"),
    ],
)
def test_malformed_uris_get_one_line_errors(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as info:
        storage.normalize(uri)
    assert "\n" not in str(info.value)


def test_join_parent_basename() -> None:
    assert storage.join("s3://b-1/x/", "shards", "a.tar") == "s3://b-1/x/shards/a.tar"
    assert storage.parent("s3://b-1/x/shards/a.tar") == "s3://b-1/x/shards"
    assert storage.parent("s3://b-1/x") == "s3://b-1"
    assert storage.basename("s3://b-1/x/shards/a.tar") == "a.tar"
    assert storage.join("/tmp/out", "manifest", "p.parquet") == "/tmp/out/manifest/p.parquet"


# ------------------------------------------------------------------------------------------------ local


def test_local_round_trip_and_listing(tmp_path: Path) -> None:
    root = str(tmp_path / "out")
    storage.write_bytes(storage.join(root, "shards", "a.tar"), b"A")
    storage.write_text(storage.join(root, "shards", "sub", "b.tar"), "B")
    storage.write_text(storage.join(root, "config.yaml"), "x: 1")
    assert storage.read_bytes(storage.join(root, "shards", "a.tar")) == b"A"
    assert storage.list_files(storage.join(root, "shards"), ".tar") == [
        storage.join(root, "shards", "a.tar"),
        storage.join(root, "shards", "sub", "b.tar"),
    ]
    assert storage.list_files(storage.join(root, "missing")) == []
    assert storage.exists(storage.join(root, "config.yaml"))
    storage.delete(storage.join(root, "config.yaml"))
    storage.delete(storage.join(root, "config.yaml"))  # missing is fine
    assert not storage.exists(storage.join(root, "config.yaml"))
    with pytest.raises(StorageError, match="no such file"):
        storage.read_bytes(storage.join(root, "config.yaml"))


def test_failed_local_write_leaves_nothing(tmp_path: Path) -> None:
    target = str(tmp_path / "d" / "file.bin")
    storage.write_bytes(target, b"old")
    with pytest.raises(RuntimeError), storage.open_write(target) as f:
        f.write(b"half of the new conte")
        raise RuntimeError("crash mid-write")
    assert storage.read_bytes(target) == b"old"
    assert os.listdir(tmp_path / "d") == ["file.bin"]  # no temporary left behind


def test_write_is_invisible_until_complete(tmp_path: Path) -> None:
    target = str(tmp_path / "file.bin")
    with storage.open_write(target) as f:
        f.write(b"x" * 1000)
        assert not os.path.exists(target)
        assert storage.list_files(str(tmp_path)) == []  # temporaries are not listed
    assert storage.read_bytes(target) == b"x" * 1000


# ------------------------------------------------------------------------------------------------ S3


@pytest.mark.s3
def test_s3_round_trip_listing_and_streaming(s3_bucket: str, tmp_path: Path) -> None:
    base = f"{s3_bucket}/run1"
    storage.write_bytes(f"{base}/shards/a.tar", b"A" * 10)
    storage.write_bytes(f"{base}/shards/b.tar", b"B" * 20)
    storage.write_text(f"{base}/config.yaml", "x: 1")
    assert storage.read_bytes(f"{base}/shards/a.tar") == b"A" * 10
    assert storage.list_files(f"{base}/shards", ".tar") == [f"{base}/shards/a.tar", f"{base}/shards/b.tar"]
    assert storage.list_files(f"{base}/nothing-here") == []
    assert storage.exists(f"{base}/config.yaml") and not storage.exists(f"{base}/nope")
    with storage.open_read(f"{base}/shards/b.tar") as f:
        assert f.read(5) == b"BBBBB"
    local = tmp_path / "b.tar"
    storage.download_file(f"{base}/shards/b.tar", local)
    assert local.read_bytes() == b"B" * 20
    storage.upload_file(local, f"{base}/copy.tar")
    assert storage.read_bytes(f"{base}/copy.tar") == b"B" * 20
    storage.delete(f"{base}/copy.tar")
    assert not storage.exists(f"{base}/copy.tar")
    storage.check_writable(f"{base}/checked")


@pytest.mark.s3
def test_failed_s3_write_leaves_nothing(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/x/file.bin"
    with pytest.raises(RuntimeError), storage.open_write(uri) as f:
        f.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert not storage.exists(uri)
    assert storage.list_files(f"{s3_bucket}/x") == []


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error(s3_server: local_s3.S3Server) -> None:
    for call in (
        lambda: storage.write_bytes("s3://no-such-bucket-here/a", b"x"),
        lambda: storage.read_bytes("s3://no-such-bucket-here/a"),
        lambda: storage.list_files("s3://no-such-bucket-here/prefix"),
        lambda: storage.check_writable("s3://no-such-bucket-here/out"),
    ):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.s3
def test_wrong_credentials_are_a_clear_error_that_never_shows_the_secret(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.write_bytes(f"{s3_bucket}/ok", b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    for call in (
        lambda: storage.read_bytes(f"{s3_bucket}/ok"),
        lambda: storage.write_bytes(f"{s3_bucket}/new", b"x"),
        lambda: storage.list_files(f"{s3_bucket}/"),
    ):
        with pytest.raises(StorageError, match="access denied") as info:
            call()
        assert "super-secret-value" not in str(info.value)
        assert "\n" not in str(info.value)


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def quick_retries() -> Iterator[storage.RetryPolicy]:
    """Two tries 0.2 s apart (the default policy rides out half a minute)."""
    saved = storage.retry_policy()
    storage.configure_retries(attempts=2, backoff_s=0.2)
    try:
        yield storage.retry_policy()
    finally:
        storage.configure_retries(saved.attempts, saved.backoff_s)


def test_unreachable_endpoint_is_one_line_after_its_retries_and_never_shows_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quick_retries: storage.RetryPolicy
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    storage.configure_s3("http://127.0.0.1:9")  # discard port: nothing listens
    try:
        for call, action in (
            (lambda: storage.read_bytes("s3://some-bucket/a"), "read"),
            (lambda: storage.write_bytes("s3://some-bucket/a", b"x"), "write"),
            (lambda: storage.list_files("s3://some-bucket/p"), "list"),
        ):
            with pytest.raises(StorageError) as info:
                call()
            message = str(info.value)
            assert message.startswith(f"cannot {action} s3://some-bucket/")
            tries = " (after 2 tries over" if action == "read" else ""
            assert f"S3 endpoint http://127.0.0.1:9 is unreachable{tries}" in message, message
            assert "\n" not in message and SECRET not in message
            storage.configure_retries(attempts=1)  # one retried call shows the retries; the others, their messages
        with pytest.raises(StorageError, match="unreachable") as info:
            storage.check_writable("s3://some-bucket/out")  # the pre-flight check tries once
        assert "tries" not in str(info.value)
    finally:
        storage.configure_s3(None)
    printed = capsys.readouterr()
    assert printed.err.count("warning: cannot") == 1 and "try 2 of 2" in printed.err  # one per retry
    assert SECRET not in printed.out + printed.err


def test_the_command_line_says_an_unreachable_s3_in_one_line_without_the_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INVS_S3", "RAY_ADDRESS"))}
    env |= {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID", "AWS_SECRET_ACCESS_KEY": SECRET}
    env |= {"INVS_S3_ENDPOINT": "http://127.0.0.1:9", "AWS_REGION": "us-east-1"}
    proc = subprocess.run(
        [sys.executable, "render/main.py", "--objects", "samples", "--out", "s3://invs-bucket/renders"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: render.out: cannot write s3://invs-bucket/renders/.invs-write-check-"
        + proc.stderr.split(".invs-write-check-")[1].split(":")[0]
        + ": S3 endpoint http://127.0.0.1:9 is unreachable"
    ], proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("read timed out"), True),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), True),
        (OSError("An error occurred (SlowDown) when calling the PutObject operation: Please reduce your rate"), True),
        (OSError("An error occurred (503) when calling the HeadObject operation: Service Unavailable"), True),
        (FileNotFoundError("The specified key does not exist."), False),
        (PermissionError("AccessDenied"), False),
        (OSError("An error occurred (NoSuchBucket) when calling the PutObject operation"), False),
        (ValueError("bad argument"), False),
    ],
)
def test_transient_errors_are_told_from_permanent_ones(error: Exception, transient: bool) -> None:
    assert storage.is_transient(error) is transient


def test_backoff_doubles_up_to_its_ceiling() -> None:
    policy = storage.RetryPolicy(attempts=8, backoff_s=1.0, max_wait_s=30.0)
    waits = [policy.wait_s(k) for k in range(1, 8)]
    for wait, nominal in zip(waits, [1, 2, 4, 8, 16, 30, 30], strict=True):
        assert 0.75 * nominal <= wait <= 1.25 * nominal


@pytest.mark.s3
def test_a_write_during_a_short_outage_is_retried_and_lands_whole(
    s3_server: local_s3.S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from tests.fault_proxy import FaultProxy

    saved = storage.retry_policy()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        storage.configure_s3(proxy.url)
        storage.configure_retries(attempts=6, backoff_s=0.5)
        try:
            storage.write_bytes(f"{s3_bucket}/before", b"x")
            proxy.cut()
            threading.Timer(8.0, proxy.restore).start()  # longer than botocore's own quick retries
            payload = os.urandom(3 * 2**20)
            storage.write_bytes(f"{s3_bucket}/during", payload)  # refused at first, then through
        finally:
            storage.configure_s3(None)
            storage.configure_retries(saved.attempts, saved.backoff_s)
    assert storage.read_bytes(f"{s3_bucket}/during") == payload
    assert storage.list_files(s3_bucket) == [f"{s3_bucket}/before", f"{s3_bucket}/during"]
    assert "warning: cannot write" in capsys.readouterr().err


@pytest.mark.s3
def test_pyarrow_reads_and_writes_parquet_through_the_same_settings(s3_bucket: str) -> None:
    fs, path = storage.arrow_filesystem(f"{s3_bucket}/tables/t.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), path, filesystem=fs)
    assert storage.exists(f"{s3_bucket}/tables/t.parquet")
    assert pq.read_table(path, filesystem=fs).column("a").to_pylist() == [1, 2, 3]


@pytest.mark.s3
def test_seaweedfs_enforces_credentials(s3_server: local_s3.S3Server) -> None:
    import boto3
    import botocore.exceptions

    good = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )
    good.list_buckets()
    bad = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="nobody",
        aws_secret_access_key="nothing",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError):
        bad.list_buckets()
