"""S3 (and S3-compatible: MinIO, moto) implementation of Store: the only module that imports boto3, itself
imported only when an s3:// URI is opened. Credentials come from the standard AWS chain only; every boto
error becomes a StoreError."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from musicrec.errors import ConflictError, StoreError
from musicrec.hashing import sha256_bytes
from musicrec.settings import Settings, SettingsError, get_settings
from musicrec.store.base import OCTET_STREAM, MissingKeyError, Store, atomic_write, check_key, check_prefix

ENDPOINT_HINT = (
    "check that the S3 endpoint is reachable and right: AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 "
    "or MUSICREC_S3_ENDPOINT_URL (MUSICREC_S3_ADDRESSING_STYLE=path for MinIO-like servers)"
)
CREDENTIALS_HINT = (
    "check the AWS credential chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
    "or an instance/task role, and that it may access this bucket"
)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# what the credential chain reads from the environment; a session resolves credentials once and caches them
_CREDENTIAL_ENV = (
    *_SECRET_ENV,
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
)
_SESSIONS: dict[str, boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _s3_settings() -> Settings:
    """The MUSICREC_S3_* settings; a bad value is a StoreError naming the variable."""
    try:
        return get_settings()
    except SettingsError as e:
        raise StoreError(e.message, hint=e.hint) from None


def s3_client_config() -> Config:
    """botocore Config from the environment: standard retries, checksums only when required (S3-compatible
    servers reject the newer CRC headers), addressing style and timeouts."""
    cfg = _s3_settings()
    return Config(
        retries={"total_max_attempts": cfg.s3_max_attempts, "mode": "standard"},
        connect_timeout=cfg.s3_connect_timeout,
        read_timeout=cfg.s3_read_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": cfg.s3_addressing_style},
        max_pool_connections=16,
    )


def make_client(endpoint_url: str | None) -> Any:
    """An S3 client from a shared boto3 session (each new session loads botocore's models again). Sessions are
    keyed by the credential environment, so changing it (tests do) gets a fresh credential lookup."""
    env = "\0".join(os.environ.get(v, "") for v in _CREDENTIAL_ENV)
    fingerprint = sha256_bytes(env.encode())
    config = s3_client_config()
    with _SESSIONS_LOCK:  # creating clients from one session is not thread-safe; using them is
        if fingerprint not in _SESSIONS:
            if len(_SESSIONS) >= 8:
                _SESSIONS.clear()
            _SESSIONS[fingerprint] = boto3.session.Session()
        return _SESSIONS[fingerprint].client("s3", endpoint_url=endpoint_url, config=config)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split s3://bucket/prefix into (bucket, prefix); the prefix is "" or a checked key."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3" or not _BUCKET.match(parts.netloc) or parts.query or parts.fragment:
        raise StoreError(f"invalid S3 URI {uri!r}", hint="use s3://bucket or s3://bucket/prefix")
    prefix = parts.path.strip("/")
    return parts.netloc, check_key(prefix) if prefix else ""


def scrub(text: str) -> str:
    """Mask secret values from the environment, should any ever show up in an error text."""
    for name in _SECRET_ENV:
        secret = os.environ.get(name, "")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class S3Store(Store):
    """Objects under s3://bucket/prefix. Version tokens are ETags; put_if uses If-None-Match / If-Match."""

    def __init__(self, uri: str) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = _s3_settings().s3_endpoint_url or None  # else boto3 uses AWS_ENDPOINT_URL[_S3]
        try:
            self._client = make_client(endpoint)
        except (BotoCoreError, Boto3Error, ValueError) as exc:
            raise StoreError(
                f"cannot set up an S3 client for {self.uri}: {scrub(str(exc))}", hint=ENDPOINT_HINT
            ) from exc
        self._transfer = TransferConfig(
            multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4, use_threads=True
        )
        self._bucket_seen = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None:
        self._call(
            "write",
            key,
            self._client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
        )

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = OCTET_STREAM) -> None:
        if not os.path.isfile(path):
            raise StoreError(f"cannot upload {os.fspath(path)!r} to {self.url_for(key)}: not a readable file")
        self._call(
            "write",
            key,
            self._client.upload_file,
            os.fspath(path),
            self.bucket,
            self._key(key),
            Config=self._transfer,
            ExtraArgs={"ContentType": content_type},
        )

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("read", key, self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._read_body(key, resp)

    def get_file(self, key: str, dest_path: str | os.PathLike[str]) -> None:
        def download(fh: Any) -> None:
            self._call(
                "read",
                key,
                self._client.download_fileobj,
                self.bucket,
                self._key(key),
                fh,
                Config=self._transfer,
            )

        try:
            atomic_write(Path(dest_path), download)
        except OSError as exc:
            raise StoreError(
                f"cannot write {os.fspath(dest_path)!r} from {self.url_for(key)}: {exc}",
                hint="check that the destination folder is writable",
            ) from exc

    def exists(self, key: str) -> bool:
        try:
            self._call("read", key, self._client.head_object, Bucket=self.bucket, Key=self._key(key))
        except MissingKeyError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        folder = check_prefix(prefix)
        full = "/".join(p for p in (self.prefix, folder) if p)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{full}/" if full else ""
            )
            for page in pages:
                keys.extend(o["Key"][strip:] for o in page.get("Contents", ()) if not o["Key"].endswith("/"))
        except (BotoCoreError, Boto3Error, ClientError) as exc:
            self._fail(exc, "list", folder)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        folder = check_prefix(prefix)
        if not folder:
            raise StoreError(f"refusing to delete everything in {self.uri}", hint="pass a non-empty prefix")
        keys = self.list(folder)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            resp = self._call(
                "delete",
                folder,
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            if resp.get("Errors"):
                err = resp["Errors"][0]
                raise StoreError(
                    f"cannot delete {len(resp['Errors'])} object(s) under "
                    f"{self.url_for(folder)}, e.g. {err.get('Key')}: {err.get('Code')}",
                    hint=CREDENTIALS_HINT,
                )

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self._call("read", key, self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        except MissingKeyError:
            return None
        return self._read_body(key, resp), str(resp["ETag"])

    def put_if(self, key: str, data: bytes, expected_token: str | None) -> str:
        cond = {"IfNoneMatch": "*"} if expected_token is None else {"IfMatch": expected_token}
        try:
            resp = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **cond)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _LOST_RACE or (expected_token is not None and code in _NOT_FOUND):
                raise ConflictError(
                    scrub(
                        f"conditional write to {self.url_for(key)} lost ({code}): "
                        f"expected version {expected_token}"
                    ),
                    hint="read the object again (read_versioned) and decide anew",
                ) from exc
            self._fail(exc, "write", key)
        except (BotoCoreError, Boto3Error) as exc:
            self._fail(exc, "write", key)
        return str(resp["ETag"])

    def _call(self, action: str, key: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a client method and translate every failure into a StoreError about key."""
        try:
            return method(*args, **kwargs)
        except (BotoCoreError, Boto3Error, ClientError) as exc:
            self._fail(exc, action, key)

    def _read_body(self, key: str, resp: dict[str, Any]) -> bytes:
        try:
            return bytes(resp["Body"].read())
        except (BotoCoreError, OSError) as exc:
            self._fail(exc, "read", key)

    def _fail(self, exc: BaseException, action: str, key: str) -> NoReturn:
        """Raise the StoreError that says what failed, where, and what to do (secrets masked)."""
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
            exc = exc.__context__
        where = self.url_for(key) if key else self.uri
        cls: type[StoreError] = StoreError
        hint = ENDPOINT_HINT
        if isinstance(exc, ClientError):
            cls, message, hint = self._describe_client_error(exc, action, key, where)
        elif isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            message = f"cannot {action} {where}: no usable AWS credentials ({type(exc).__name__})"
            hint = CREDENTIALS_HINT
        elif isinstance(exc, (BotoConnectionError, HTTPClientError)):
            message = f"cannot {action} {where}: S3 endpoint unreachable or not answering: {exc}"
        else:
            message = f"cannot {action} {where}: {type(exc).__name__}: {exc}"
        raise cls(scrub(message), hint=hint) from exc

    def _describe_client_error(
        self, exc: ClientError, action: str, key: str, where: str
    ) -> tuple[type[StoreError], str, str]:
        """Error class, message and hint for an error answer from S3."""
        err, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        code, status = str(err.get("Code", "")), meta.get("HTTPStatusCode")
        if code == "NoSuchKey" or (code in _NOT_FOUND and self._bucket_exists()):  # HEAD: 404, no body
            return MissingKeyError, f"no object at {where} (key '{key}')", "check the key and the store URI"
        if code in _NOT_FOUND or code == "NoSuchBucket":
            return (
                StoreError,
                f"cannot {action} {where}: bucket '{self.bucket}' does not exist",
                "create the bucket, or fix the store URI (s3://bucket/prefix) or the endpoint",
            )
        if code in _DENIED:
            return StoreError, f"cannot {action} {where}: access denied ({code})", CREDENTIALS_HINT
        tries = meta.get("RetryAttempts", 0) + 1
        message = (
            f"cannot {action} {where}: S3 error {code or '?'} (HTTP {status}) after {tries} "
            f"attempt(s): {err.get('Message', '')}"
        )
        hint = "retry later; raise MUSICREC_S3_MAX_ATTEMPTS if it keeps failing; " + ENDPOINT_HINT
        return StoreError, message, hint

    def _bucket_exists(self) -> bool:
        """HEAD has no error body, so a 404 may mean the bucket is gone; ask once, remember a yes."""
        if not self._bucket_seen:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                return str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket")
            except BotoCoreError:
                return True  # cannot tell; the missing key is the likelier story
            self._bucket_seen = True
        return True
