"""Every read, write, list and existence check of a location goes through this module.

A location is a URI: a local path (``/data/out``, ``out/run1``, ``file:///data/out``) or ``s3://bucket/key``.
S3 works with AWS and with S3-compatible servers: the endpoint comes from ``INVS_S3_ENDPOINT`` or the standard
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables (or :func:`configure_s3`), and credentials from the
standard AWS chain (environment, ``~/.aws`` config/credentials, instance profile). Credentials are never printed
or logged; error messages name the URI and the cause only.

Writes are atomic: data goes to a temporary file first and appears under its final name only when complete
(a local ``os.replace``; on S3 a single PUT or a completed multipart upload). An interrupted write leaves
nothing under the final name.

Every S3 operation goes through one function (:func:`_s3`) that retries transient errors (unreachable endpoint,
refused or reset connections, timeouts, 5xx, throttling) with exponential backoff: ``attempts`` tries in all,
waiting ``backoff_s`` before the second, doubled per retry up to 30 s, with +-25% jitter (:func:`configure_retries`,
``storage.retry_attempts`` / ``storage.retry_backoff_s`` in the config; 6 tries ride out ~30 s of outage). Each
retry prints one warning line; what still fails is one :class:`StorageError` line. Errors that a retry cannot fix
(missing bucket or key, access denied) fail at once. The pre-flight :func:`check_writable` tries once, so a wrong
endpoint or bucket stops a job in seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from invs.errors import StorageError
from invs.retry import RetryPolicy

T = TypeVar("T")

_S3_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass(frozen=True)
class S3Settings:
    """Where S3 requests go. ``endpoint_url`` None means AWS itself; ``region`` None means the AWS default."""

    endpoint_url: str | None = None
    region: str | None = None


_settings_override: S3Settings | None = None


def configure_s3(endpoint_url: str | None = None, region: str | None = None) -> None:
    """Set the S3 endpoint for this process (overrides the environment). Pass nothing to go back to it."""
    global _settings_override
    _settings_override = None if endpoint_url is None and region is None else S3Settings(endpoint_url, region)


def s3_settings() -> S3Settings:
    """The S3 endpoint and region in force: :func:`configure_s3`, else the environment."""
    if _settings_override is not None:
        return _settings_override
    endpoint = (
        os.environ.get("INVS_S3_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return S3Settings(endpoint or None, region or None)


_retry_policy = RetryPolicy()
_attempts_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("invs_s3_attempts", default=None)


def configure_retries(attempts: int | None = None, backoff_s: float | None = None) -> None:
    """Set how transient S3 errors are retried in this process (None keeps the current value)."""
    global _retry_policy
    _retry_policy = RetryPolicy(
        attempts=_retry_policy.attempts if attempts is None else max(1, int(attempts)),
        backoff_s=_retry_policy.backoff_s if backoff_s is None else max(0.0, float(backoff_s)),
        max_wait_s=_retry_policy.max_wait_s,
    )


def retry_policy() -> RetryPolicy:
    return _retry_policy


@contextlib.contextmanager
def single_attempt() -> Iterator[None]:
    """S3 operations in this block are tried once (fail-fast checks)."""
    token = _attempts_override.set(1)
    try:
        yield
    finally:
        _attempts_override.reset(token)


# ------------------------------------------------------------------------------------------------ URIs


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def parse_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key may be empty. Raises StorageError if malformed."""
    m = _S3_RE.match(uri)
    if m is None and "YOUR-BUCKET" in uri:
        raise StorageError(f"{uri!r} is a placeholder: set your bucket (e.g. --out s3://my-bucket/invs/renders)")
    if m is None:
        raise StorageError(
            f"malformed S3 URI {uri!r}: expected s3://BUCKET/KEY with a 3-63 character lower-case bucket name"
        )
    return m.group("bucket"), (m.group("key") or "").lstrip("/")


def normalize(uri: str | os.PathLike[str]) -> str:
    """Check a URI and return its canonical form: ``s3://bucket/key`` or an absolute local path."""
    text = os.fspath(uri)
    if not text or not text.strip():
        raise StorageError("empty location: give a local path or an s3://bucket/prefix URI")
    if text.startswith("file://"):
        text = text[len("file://") :]
        if not text.startswith("/"):
            raise StorageError(f"malformed file URI {uri!r}: expected file:///absolute/path")
    m = _SCHEME_RE.match(text)
    if m:
        if m.group("scheme") != "s3":
            raise StorageError(f"unsupported location {uri!r}: only local paths and s3://bucket/key URIs are supported")
        bucket, key = parse_s3(text)
        key = re.sub(r"/+", "/", key)
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if re.match(r"^s3:/?[^/]", text) or text.startswith("s3:"):
        raise StorageError(f"malformed S3 URI {uri!r}: expected s3://BUCKET/KEY")
    return str(Path(text).expanduser().resolve())


def join(uri: str, *parts: str) -> str:
    """Join path components onto a URI (``/`` separated for S3, ``os.path`` for local paths)."""
    base = normalize(uri)
    if is_s3(base):
        cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
        return "/".join([base.rstrip("/"), *cleaned])
    return str(Path(base, *parts))


def basename(uri: str) -> str:
    return normalize(uri).rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    base = normalize(uri)
    if is_s3(base):
        bucket, key = parse_s3(base)
        head = key.rstrip("/").rsplit("/", 1)[0] if "/" in key.rstrip("/") else ""
        return f"s3://{bucket}/{head}" if head else f"s3://{bucket}"
    return str(Path(base).parent)


# ------------------------------------------------------------------------------------------------ S3 backend


_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@functools.lru_cache(maxsize=8)
def _s3fs_for(settings: S3Settings, credential_env: tuple[str | None, ...]) -> Any:
    """One s3fs instance per (endpoint, credential environment); ``credential_env`` only keys the cache."""
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if settings.endpoint_url:
        client_kwargs["endpoint_url"] = settings.endpoint_url
    if settings.region:
        client_kwargs["region_name"] = settings.region
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs,
        skip_instance_cache=True,
        # botocore's own quick retries inside each of our tries (_s3); a dead endpoint shows within seconds
        config_kwargs={"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 60},
    )


def _s3fs() -> Any:
    return _s3fs_for(s3_settings(), tuple(os.environ.get(v) for v in _CREDENTIAL_VARS))


def s3_filesystem() -> Any:
    """The fsspec ``s3fs.S3FileSystem`` for the current settings (for libraries that take an fsspec filesystem)."""
    return _s3fs()


def arrow_filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for a URI, for pyarrow / Ray Data reads and writes.

    S3 uses pyarrow's native ``S3FileSystem`` with the same endpoint and the credentials botocore resolves.
    """
    import pyarrow.fs as pafs

    base = normalize(uri)
    if not is_s3(base):
        return pafs.LocalFileSystem(), base
    settings = s3_settings()
    kwargs: dict[str, Any] = {"region": settings.region or "us-east-1"}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/") if host else scheme, scheme=scheme if host else "https")
    creds = _botocore_credentials()
    if creds is not None:
        kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key, session_token=creds.token)
    # pyarrow retries inside its own calls (AWS SDK standard backoff, at most 20 s a wait): about as long as _s3
    retries = pafs.AwsStandardS3RetryStrategy(max_attempts=2 * _retry_policy.attempts)
    return pafs.S3FileSystem(retry_strategy=retries, **kwargs), arrow_path(base)


def arrow_path(uri: str) -> str:
    """The path pyarrow filesystems use for a URI: ``bucket/key`` for S3, the absolute path for local files."""
    base = normalize(uri)
    return _s3_path(base).rstrip("/") if is_s3(base) else base


def _botocore_credentials() -> Any:
    import botocore.session

    creds = botocore.session.get_session().get_credentials()
    return None if creds is None else creds.get_frozen_credentials()


def _explain(uri: str, exc: BaseException, action: str) -> StorageError:
    """Turn a backend exception into a one-line StorageError (never including credentials)."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "nosuchbucket" in lowered or "bucket does not exist" in lowered or "specified bucket" in lowered:
        bucket = parse_s3(uri)[0] if is_s3(uri) else "?"
        return StorageError(f"cannot {action} {uri}: bucket {bucket!r} does not exist (create it or fix the URI)")
    if any(
        s in lowered
        for s in (
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "accessdenied",
            "forbidden",
            "invalidtoken",
            "expiredtoken",
            "unable to locate credentials",
            "nocredentials",
        )
    ) or isinstance(exc, PermissionError):
        return StorageError(
            f"cannot {action} {uri}: access denied — check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the "
            "AWS profile in use"
        )
    if any(
        s in lowered
        for s in (
            "could not connect",
            "connect timeout",
            "connection refused",
            "endpointconnectionerror",
            "cannot connect",
            "name or service not known",
        )
    ):
        endpoint = s3_settings().endpoint_url or "AWS S3"
        return StorageError(f"cannot {action} {uri}: S3 endpoint {endpoint} is unreachable")
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"cannot {action} {uri}: no such file or prefix")
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return StorageError(f"cannot {action} {uri}: {first_line[:300]}")


#: Words of errors that a retry cannot fix (checked before the transient ones).
_PERMANENT = (
    "nosuchbucket",
    "bucket does not exist",
    "specified bucket",
    "nosuchkey",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "access denied",
    "forbidden",
    "invalidtoken",
    "expiredtoken",
    "unable to locate credentials",
    "nocredentials",
)
#: Words of errors that go away when the endpoint comes back or stops throttling.
_TRANSIENT = (
    "could not connect",
    "connect timeout",
    "connection refused",
    "connection reset",
    "connection aborted",
    "connection was closed",
    "connectionclosederror",
    "endpointconnectionerror",
    "cannot connect",
    "server disconnected",
    "broken pipe",
    "timed out",
    "timeout",
    "read timeout",
    "incompleteread",
    "slowdown",
    "slow down",
    "throttl",
    "requesttimeout",
    "internalerror",
    "internal error",
    "serviceunavailable",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "(500)",
    "(502)",
    "(503)",
    "(504)",
)
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.EIO}


def is_transient(exc: BaseException) -> bool:
    """Whether a backend error may go away on its own (outage, dropped connection, throttling, 5xx)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, FileNotFoundError | PermissionError) or any(s in text for s in _PERMANENT):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return any(s in text for s in _TRANSIENT)


def _s3(uri: str, action: str, operation: Callable[[], T]) -> T:
    """Run one S3 operation on ``uri``: transient errors are retried per :class:`RetryPolicy` (one warning line
    each), and what still fails becomes a one-line :class:`StorageError` (never including credentials)."""
    policy = _retry_policy
    attempts = _attempts_override.get() or policy.attempts
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as exc:  # backend exceptions vary (botocore, aiohttp, OSError): report them in one line
            error = _explain(uri, exc, action)
            if attempt == attempts or not is_transient(exc):
                if attempt > 1:
                    error = StorageError(f"{error} (after {attempt} tries over {time.monotonic() - started:.0f} s)")
                raise error from exc
            wait = policy.wait_s(attempt)
            print(f"warning: {error}; try {attempt + 1} of {attempts} in {wait:.1f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _head_bucket(fs: Any, bucket: str) -> None:
    """Raise (FileNotFoundError / PermissionError via s3fs) unless the bucket exists and is accessible."""
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"NoSuchBucket: {bucket}") from exc


def _s3_path(uri: str) -> str:
    bucket, key = parse_s3(uri)
    return f"{bucket}/{key}" if key else bucket


# ------------------------------------------------------------------------------------------------ operations


def exists(uri: str) -> bool:
    """True if a file (or, for S3, an object or a non-empty prefix) exists at the URI."""
    uri = normalize(uri)
    if not is_s3(uri):
        return os.path.exists(uri)

    def check() -> bool:
        fs = _s3fs()
        _head_bucket(fs, parse_s3(uri)[0])
        fs.invalidate_cache(_s3_path(uri))
        return bool(fs.exists(_s3_path(uri)))

    return _s3(uri, "check", check)


def read_bytes(uri: str) -> bytes:
    uri = normalize(uri)
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"cannot read {uri}: no such file") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    return _s3(uri, "read", lambda: bytes(_s3fs().cat_file(_s3_path(uri))))


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A binary file object for reading (streams from S3 without downloading the whole object first)."""
    uri = normalize(uri)
    if not is_s3(uri):
        try:
            f = open(uri, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise StorageError(f"cannot read {uri}: no such file") from exc
        with f:
            yield f
        return
    f = _s3(uri, "read", lambda: _s3fs().open(_s3_path(uri), "rb", block_size=8 * 2**20))
    with f:
        yield f


@contextlib.contextmanager
def open_write(uri: str) -> Iterator[IO[bytes]]:
    """A binary file object whose content appears at ``uri`` only when the block exits without an error.

    The data is written to a local temporary file first; on success it is renamed into place (local) or
    uploaded (S3). On an exception the temporary file is removed and nothing appears under ``uri``.
    """
    uri = normalize(uri)
    if is_s3(uri):
        tmp_dir = None
    else:
        tmp_dir = os.path.dirname(uri)
        try:
            os.makedirs(tmp_dir, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if is_s3(uri):
            _s3(uri, "write", lambda: _s3fs().put_file(tmp, _s3_path(uri)))
        else:
            os.replace(tmp, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically."""
    with open_write(uri) as f:
        f.write(data)


def write_text(uri: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def upload_file(local_path: str | os.PathLike[str], uri: str) -> None:
    """Copy a local file to ``uri`` atomically (rename or S3 upload)."""
    uri = normalize(uri)
    if is_s3(uri):
        _s3(uri, "write", lambda: _s3fs().put_file(os.fspath(local_path), _s3_path(uri)))
        return
    with open_write(uri) as dst, open(local_path, "rb") as src:
        shutil.copyfileobj(src, dst, 8 * 2**20)


def download_file(uri: str, local_path: str | os.PathLike[str]) -> None:
    """Copy ``uri`` to a local file (written atomically)."""
    local = normalize(os.fspath(local_path))
    with open_read(uri) as src, open_write(local) as dst:
        shutil.copyfileobj(src, dst, 8 * 2**20)


def list_files(prefix_uri: str, suffix: str = "") -> list[str]:
    """Sorted URIs of all files under a directory/prefix (recursively) whose names end with ``suffix``.

    A prefix that does not exist gives an empty list; a missing bucket or bad credentials raise StorageError.
    """
    uri = normalize(prefix_uri)
    if not is_s3(uri):
        root = Path(uri)
        if not root.is_dir():
            return []
        return sorted(
            str(p)
            for p in root.rglob("*")
            if p.is_file() and p.name.endswith(suffix) and not p.name.startswith(".tmp-")
        )
    bucket, key = parse_s3(uri)

    def find() -> list[str]:
        fs = _s3fs()
        _head_bucket(fs, bucket)  # a missing bucket or bad credentials must not read as "no files"
        path = f"{bucket}/{key.rstrip('/')}" if key else bucket
        fs.invalidate_cache(path)
        try:
            return list(fs.find(path))
        except FileNotFoundError:
            return []

    return sorted(f"s3://{p}" for p in _s3(uri, "list", find) if p.endswith(suffix))


def delete(uri: str) -> None:
    """Remove one file; a missing file is not an error."""
    uri = normalize(uri)
    if not is_s3(uri):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(uri)
        return

    def remove() -> None:
        fs = _s3fs()
        if fs.exists(_s3_path(uri)):
            fs.rm_file(_s3_path(uri))

    _s3(uri, "delete", remove)


def check_writable(uri: str) -> None:
    """Fail fast (StorageError) if ``uri`` cannot be written: bad URI, missing bucket, wrong credentials, an
    endpoint that does not answer (tried once, no retries).

    Writes and removes a small marker object under ``uri``.
    """
    marker = join(uri, f".invs-write-check-{os.getpid()}")
    with single_attempt():
        write_bytes(marker, b"ok")
        delete(marker)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a local file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def local_cache_dir() -> Path:
    """Per-user cache directory for downloads (``INVS_CACHE_DIR`` or ``~/.cache/invs``)."""
    root = Path(os.environ.get("INVS_CACHE_DIR") or Path.home() / ".cache" / "invs")
    root.mkdir(parents=True, exist_ok=True)
    return root
