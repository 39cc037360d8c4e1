"""S3 test helpers: a real moto ThreadedMotoServer over HTTP on 127.0.0.1 and a fault-injecting HTTP proxy.

    with moto_s3() as s3:                      # env: dummy credentials, region, AWS_ENDPOINT_URL
        store = open_store(s3.uri("runs"))     # s3://<bucket>/runs
        with FaultProxy(s3.endpoint_url) as proxy:
            proxy.fail_next(2)                 # next 2 requests get HTTP 500 InternalError
            proxy.drop_next(1)                 # then 1 request: connection closed without an answer
            proxy.hang_next(1, seconds=3)      # then 1 request: no answer for 3 s, then closed
            proxy.cut_next(1)                  # then 1 request: closed after half of its body was read
            proxy.fail_matching(r"/models/", methods=("PUT",))  # every matching request fails until clear()
            proxy.fail_after(3)                # every request after the next 3 fails until clear()
            proxy.lose_answer_matching("champion.json")  # forwarded, then closed without the answer
            # point a store at proxy.url (e.g. MUSICREC_S3_ENDPOINT_URL) to go through it
    unreachable_endpoint()                     # http://127.0.0.1:<closed port>: connection refused

moto keeps its state per process, so each moto_s3() uses a fresh bucket name. Import this module as
`from s3server import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

DUMMY_KEY_ID = "AKIAMUSICRECTESTKEY1"
DUMMY_SECRET = "musicrec-test-secret-3f9a7c1e5b"  # tests assert this never shows up in an error
_ENV_SET = {
    "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": str(Path(os.devnull).with_name("musicrec-no-aws-config")),
    "AWS_SHARED_CREDENTIALS_FILE": str(Path(os.devnull).with_name("musicrec-no-aws-credentials")),
}
# these would override the fixture's endpoint or credentials
_ENV_UNSET = (
    "AWS_ENDPOINT_URL_S3",
    "MUSICREC_S3_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
)


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 endpoint with one empty bucket."""

    endpoint_url: str
    bucket: str

    def uri(self, prefix: str = "") -> str:
        """s3://bucket[/prefix] for open_store()."""
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{self.bucket}"


@contextlib.contextmanager
def patched_environ(values: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """Set and unset environment variables, restoring the previous values afterwards."""
    saved = {k: os.environ.get(k) for k in (*values, *unset)}
    os.environ.update(values)
    for k in unset:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def moto_s3(bucket: str | None = None) -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 (a free port), create a bucket, point the AWS env at it meanwhile."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    info = S3Server(f"http://{host}:{port}", bucket or f"musicrec-test-{uuid.uuid4().hex[:12]}")
    try:
        with patched_environ({**_ENV_SET, "AWS_ENDPOINT_URL": info.endpoint_url}, _ENV_UNSET):
            client = boto3.session.Session().client("s3", endpoint_url=info.endpoint_url)
            client.create_bucket(Bucket=info.bucket)
            yield info
            _empty_bucket(client, info.bucket)
    finally:
        server.stop()


def _empty_bucket(client: object, bucket: str) -> None:
    """Best effort: drop the bucket so moto's per-process state does not grow across test modules."""
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):  # type: ignore[attr-defined]
            for obj in page.get("Contents", ()):
                client.delete_object(Bucket=bucket, Key=obj["Key"])  # type: ignore[attr-defined]
        client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]


def unreachable_endpoint() -> str:
    """URL of a local port nobody listens on (bound, then closed): connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class _Fault:
    kind: str  # "status" | "drop" | "hang" | "cut" | "lose"
    status: int = 500
    code: str = "InternalError"
    seconds: float = 0.0


@dataclass
class _Rule:
    """A standing fault: requests whose method and path (query included) match get `fault`, up to `times`
    (None: until clear()), after the first `skip` matching requests have gone through."""

    fault: _Fault
    pattern: re.Pattern[str]
    methods: tuple[str, ...]
    times: int | None = None
    skip: int = 0

    def take(self, method: str, path: str) -> _Fault | None:
        if (self.methods and method not in self.methods) or not self.pattern.search(path):
            return None
        if self.skip > 0:
            self.skip -= 1
            return None
        if self.times is not None:
            if self.times <= 0:
                return None
            self.times -= 1
        return self.fault


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 that forwards to target_url unless a queued fault says otherwise.

    Queued faults are consumed one per request, in the order queued; standing rules (fail_matching,
    fail_after, lose_answer_matching) are checked first and stay until clear(). `requests` counts every
    request seen, `faults_served` those answered by a fault, `log` holds (method, path, outcome) of each."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self._faults: deque[_Fault] = deque()
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.faults_served = 0
        self.log: list[tuple[str, str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, n: int = 1, status: int = 500, code: str = "InternalError") -> None:
        """Answer the next n requests with an S3-style XML error (500 InternalError by default)."""
        self._queue(n, _Fault("status", status=status, code=code))

    def drop_next(self, n: int = 1) -> None:
        """Read the next n requests, then close the connection without answering."""
        self._queue(n, _Fault("drop"))

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Hold the next n requests unanswered for `seconds`, then close (exercises read timeouts)."""
        self._queue(n, _Fault("hang", seconds=seconds))

    def cut_next(self, n: int = 1) -> None:
        """Read only half of the next n request bodies, then close: the upload breaks mid-stream."""
        self._queue(n, _Fault("cut"))

    def fail_matching(
        self,
        pattern: str,
        methods: tuple[str, ...] = (),
        status: int = 500,
        code: str = "InternalError",
        times: int | None = None,
        skip: int = 0,
    ) -> None:
        """Answer every request whose path matches the regex (and method, if given) with an S3 error, after
        letting the first `skip` of them through; `times` caps how many fail (default: all, until clear())."""
        self.inject_matching(pattern, "status", methods, times, skip, status=status, code=code)

    def inject_matching(
        self,
        pattern: str,
        kind: str,
        methods: tuple[str, ...] = (),
        times: int | None = None,
        skip: int = 0,
        status: int = 500,
        code: str = "InternalError",
        seconds: float = 0.0,
    ) -> None:
        """The general standing rule: fault `kind` ("status", "drop", "hang", "cut" or "lose") for requests
        whose path matches the regex (and method, if given), after `skip` of them, at most `times`."""
        if kind not in ("status", "drop", "hang", "cut", "lose"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self._add_rule(
            _Rule(
                _Fault(kind, status=status, code=code, seconds=seconds),
                re.compile(pattern),
                methods,
                times,
                skip,
            )
        )

    def fail_after(self, k: int, status: int = 500, code: str = "InternalError") -> None:
        """Let the next k requests through, then fail every request until clear() (a store that breaks
        for good half-way through a job)."""
        self.fail_matching("", status=status, code=code, skip=k)

    def lose_answer_matching(self, pattern: str, methods: tuple[str, ...] = ("PUT",), times: int = 1) -> None:
        """Forward matching requests to the server (so they take effect), then close the connection without
        the answer: the client cannot tell whether its write happened."""
        self.inject_matching(pattern, "lose", methods, times)

    def clear(self) -> None:
        """Forget the faults not yet served and every standing rule."""
        with self._lock:
            self._faults.clear()
            self._rules.clear()

    def _add_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _queue(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def _next_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            self.requests += 1
            fault = next((f for r in self._rules if (f := r.take(method, path)) is not None), None)
            if fault is None and self._faults:
                fault = self._faults.popleft()
            if fault is not None:
                self.faults_served += 1
            self.log.append((method, path, fault.kind if fault else "ok"))
            return fault


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and 100-continue, as botocore expects
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # stdlib signature
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        fault = self.owner._next_fault(self.command, self.path)
        if fault is not None and fault.kind == "cut":
            self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2)
            self._close()
            return
        body = self._read_body()
        if fault is None:
            self._forward(body)
        elif fault.kind == "status":
            self._send_error(fault)
        elif fault.kind == "lose":
            self._forward(body, answer=False)
            self._close()
        else:
            time.sleep(fault.seconds)
            self._close()

    def _close(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_error(self, fault: _Fault) -> None:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
            f"<Message>injected by FaultProxy</Message><RequestId>fault</RequestId></Error>"
        ).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    def _forward(self, body: bytes, answer: bool = True) -> None:
        skip = {"connection", "expect", "transfer-encoding", "content-length", "proxy-connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner.target, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            if not answer:
                return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                    self.send_header(k, v)
            length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
