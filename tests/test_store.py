"""Store behaviour, the same tests on FileStore (tmp folder) and S3Store (moto server over real HTTP)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3server import DUMMY_SECRET, FaultProxy, S3Server, moto_s3, unreachable_endpoint

from musicrec.errors import ConflictError, StoreError
from musicrec.hashing import sha256_bytes, sha256_file
from musicrec.store import (
    FileStore,
    MissingKeyError,
    Store,
    atomic_write,
    check_key,
    open_store,
    safe_key_part,
)

BAD_KEYS = [
    "",
    "/abs",
    "../x",
    "a/../../x",
    "a//b",
    "a/./b",
    ".",
    "a/",
    "a\\b",
    "a/\x00b",
    "a/\nb",
    ".~tmp",
    "x/.~lock",
]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store: a tmp folder, or a fresh prefix in the module's moto bucket."""
    if request.param == "file":
        return open_store((tmp_path / "store").as_uri())
    server: S3Server = request.getfixturevalue("s3")
    return open_store(server.uri(f"t/{uuid.uuid4().hex}"))


def _s3_store(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None, **env: str
) -> Store:
    """An S3Store on a fresh prefix, built under extra MUSICREC_S3_* settings."""
    if endpoint:
        monkeypatch.setenv("MUSICREC_S3_ENDPOINT_URL", endpoint)
    for name, value in env.items():
        monkeypatch.setenv(f"MUSICREC_S3_{name.upper()}", value)
    return open_store(server.uri(f"t/{uuid.uuid4().hex}"))


def _error_texts(exc: BaseException) -> str:
    """str and repr of an exception and of everything chained to it."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


# ---------------------------------------------------------------- behaviour shared by both stores


def test_bytes_round_trip_and_overwrite(store: Store) -> None:
    assert not store.exists("runs/r1/report.json")
    store.put_bytes("runs/r1/report.json", b'{"rmse": 0.9}', content_type="application/json")
    assert store.exists("runs/r1/report.json")
    assert store.get_bytes("runs/r1/report.json") == b'{"rmse": 0.9}'
    store.put_bytes("runs/r1/report.json", b"")
    assert store.get_bytes("runs/r1/report.json") == b""
    assert not store.exists("runs/r1")  # a folder is not an object


def test_file_round_trip(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(os.urandom(300_000))
    store.put_file("models/v1/model.onnx", src)
    dest = tmp_path / "out" / "deeper" / "model.onnx"
    store.get_file("models/v1/model.onnx", dest)
    assert sha256_file(dest) == sha256_file(src)
    assert [p.name for p in dest.parent.iterdir()] == ["model.onnx"]  # no temp file left beside it


def test_list_is_recursive_sorted_and_folder_scoped(store: Store) -> None:
    for key in ["models/v1/sub/b", "models/v1/a", "models/v10/c", "runs/r1/report.json", "top"]:
        store.put_bytes(key, key.encode())
    assert store.list("models/v1") == ["models/v1/a", "models/v1/sub/b"]
    assert store.list("models/v1/") == ["models/v1/a", "models/v1/sub/b"]
    assert store.list() == ["models/v1/a", "models/v1/sub/b", "models/v10/c", "runs/r1/report.json", "top"]
    assert store.list("nothing/here") == []
    assert store.list("top") == []  # an object is not a folder


def test_delete_and_delete_prefix(store: Store) -> None:
    for key in ["models/v1/a", "models/v1/sub/b", "models/v10/c"]:
        store.put_bytes(key, b"x")
    store.delete("models/v1/a")
    store.delete("models/v1/a")  # idempotent
    store.delete_prefix("models/v1")
    assert store.list() == ["models/v10/c"]
    store.delete_prefix("models/v1")  # nothing left: still fine
    with pytest.raises(StoreError, match="refusing"):
        store.delete_prefix("")
    assert store.list() == ["models/v10/c"]


def test_concurrent_puts_are_atomic_and_leave_no_temp_objects(store: Store) -> None:
    payloads = [bytes([i]) * 200_000 for i in range(4)]
    store.put_bytes("scores/part.parquet", payloads[0])
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        for _ in range(5):
            store.put_bytes("scores/part.parquet", data)

    def reader() -> None:
        try:
            for _ in range(20):
                seen.append(store.get_bytes("scores/part.parquet"))
                assert store.list("scores") == ["scores/part.parquet"]
        except (AssertionError, StoreError) as exc:  # surfaced below; lost inside a thread otherwise
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen and all(s in payloads for s in seen)
    assert store.list() == ["scores/part.parquet"]


def test_put_if_create_only(store: Store) -> None:
    token = store.put_if("models/champion.json", b"v1", None)
    with pytest.raises(ConflictError, match=r"models/champion\.json"):
        store.put_if("models/champion.json", b"v2", None)
    assert store.read_versioned("models/champion.json") == (b"v1", token)


def test_put_if_stale_token_conflicts(store: Store) -> None:
    t1 = store.put_if("models/champion.json", b"v1", None)
    t2 = store.put_if("models/champion.json", b"v2", t1)
    assert t2 != t1
    with pytest.raises(ConflictError):
        store.put_if("models/champion.json", b"v3", t1)
    data, token = store.read_versioned("models/champion.json") or (b"", "")
    assert (data, token) == (b"v2", t2)
    assert store.put_if("models/champion.json", b"v3", token)
    assert store.get_bytes("models/champion.json") == b"v3"


def test_put_if_with_token_on_missing_key_conflicts(store: Store) -> None:
    token = store.put_if("a/b", b"x", None)
    store.delete("a/b")
    with pytest.raises(ConflictError):
        store.put_if("a/b", b"y", token)
    assert store.read_versioned("a/b") is None


def test_racing_put_if_exactly_one_wins(store: Store) -> None:
    token = store.put_if("models/champion.json", b"start", None)
    n = 4
    barrier = threading.Barrier(n)
    outcomes: dict[int, str] = {}

    def contender(i: int) -> None:
        barrier.wait()
        try:
            store.put_if("models/champion.json", f"winner {i}".encode(), token)
            outcomes[i] = "won"
        except ConflictError:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, o in outcomes.items() if o == "won"]
    assert len(outcomes) == n and len(winners) == 1
    assert store.get_bytes("models/champion.json") == f"winner {winners[0]}".encode()


def test_missing_key_is_a_store_error_naming_the_key(store: Store, tmp_path: Path) -> None:
    key = "runs/never/report.json"
    for call in (lambda: store.get_bytes(key), lambda: store.get_file(key, tmp_path / "d" / "r.json")):
        with pytest.raises(MissingKeyError, match=key) as info:
            call()
        assert isinstance(info.value, StoreError)
    assert not (tmp_path / "d" / "r.json").exists()
    assert store.read_versioned(key) is None


def test_escaped_data_cannot_leave_the_prefix(store: Store, tmp_path: Path) -> None:
    part = safe_key_part("../../etc")
    store.put_bytes(f"runs/{part}/passwd", b"harmless")
    assert store.list() == [f"runs/{part}/passwd"]
    assert store.get_bytes(f"runs/{part}/passwd") == b"harmless"
    written = list(tmp_path.rglob("passwd"))  # runs/../../etc would be tmp_path/etc: outside the file store
    assert all(p.is_relative_to(tmp_path / "store" / "runs") for p in written)


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_unsafe_raw_keys_are_refused(store: Store, bad: str) -> None:
    for call in (
        lambda: store.put_bytes(bad, b"x"),
        lambda: store.get_bytes(bad),
        lambda: store.exists(bad),
        lambda: store.put_if(bad, b"x", None),
        lambda: store.url_for(bad),
    ):
        with pytest.raises(StoreError, match="invalid store key"):
            call()
    assert store.list() == []


def test_url_for(store: Store, s3_or_none: S3Server | None) -> None:
    url = store.url_for("models/v1/model.onnx")
    assert url == f"{store.uri}/models/v1/model.onnx"
    if s3_or_none is None:
        assert url.startswith("file:///") and Path(url.removeprefix("file://")).is_absolute()
    else:
        assert url.startswith(f"s3://{s3_or_none.bucket}/t/")


@pytest.fixture
def s3_or_none(request: pytest.FixtureRequest) -> S3Server | None:
    return request.getfixturevalue("s3") if request.node.callspec.params.get("store") == "s3" else None


# ---------------------------------------------------------------- keys, URIs, hashing (no server)


@pytest.mark.parametrize(
    "text",
    [
        "../../etc",
        "..",
        ".",
        "",
        "a/b",
        "a\\b",
        "\x00\n\x7f",
        "%2F",
        ".~lock",
        "B00004T9UF",
        "Beyoncé / Jay-Z",
        "x" * 1000,
        "\ud800",
    ],
)
def test_safe_key_part_is_always_one_valid_segment(text: str) -> None:
    part = safe_key_part(text)
    assert check_key(part) == part and "/" not in part and not part.startswith(".")
    assert 0 < len(part) <= 200


def test_safe_key_part_keeps_plain_ids_and_stays_distinct() -> None:
    assert safe_key_part("B00004T9UF") == "B00004T9UF"
    assert safe_key_part("run-2026_11_27.1") == "run-2026_11_27.1"
    texts = ["a/b", "a%2Fb", "a%b", "", "%", ".a", "%2Ea", "x" * 300, "x" * 301, "x" * 299 + "y"]
    assert len({safe_key_part(t) for t in texts}) == len(texts)


def test_open_store_picks_the_implementation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = open_store(None)
    assert isinstance(default, FileStore) and default.root == tmp_path / ".musicrec" / "store"
    assert open_store("").uri == default.uri
    assert isinstance(rel := open_store("some/dir"), FileStore) and rel.root == tmp_path / "some" / "dir"
    spaced = open_store((tmp_path / "with space").as_uri())
    assert isinstance(spaced, FileStore) and spaced.root == tmp_path / "with space"
    assert open_store(f"file://localhost{tmp_path}").uri == tmp_path.as_uri()
    s3store = open_store("s3://some-bucket/pre/fix/")
    assert type(s3store).__name__ == "S3Store" and s3store.uri == "s3://some-bucket/pre/fix"
    assert open_store("s3://some-bucket").url_for("a/b") == "s3://some-bucket/a/b"


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://host/x",
        "file://otherhost/x",
        "file:relative",
        "s3://",
        "s3://ab",
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "s3://bucket/p?x=1",
    ],
)
def test_bad_uris_are_store_errors(uri: str) -> None:
    with pytest.raises(StoreError):
        open_store(uri)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_ATTEMPTS", "many"),
        ("MAX_ATTEMPTS", "0"),
        ("ADDRESSING_STYLE", "sideways"),
        ("READ_TIMEOUT", "-1"),
    ],
)
def test_bad_s3_settings_are_store_errors(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"MUSICREC_S3_{name}", value)
    with pytest.raises(StoreError, match=f"MUSICREC_S3_{name}"):
        open_store("s3://some-bucket/p")


def test_hashing_helpers(tmp_path: Path) -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_bytes(b"") == empty
    (tmp_path / "f").write_bytes(b"x" * 3_000_000)
    assert sha256_file(tmp_path / "f") == sha256_bytes(b"x" * 3_000_000)


def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")

    def half_then_crash(fh: object) -> None:
        fh.write(b"new, but only ha")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(dest, half_then_crash)
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_file_objects_are_readable_by_others(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put_bytes("a/b", b"x")
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- S3 only: config, faults, secrets


@pytest.mark.s3
def test_multipart_upload_round_trip(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _s3_store(s3, monkeypatch)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 << 20))  # above the 8 MiB multipart threshold
    store.put_file("models/v1/big.bin", src)
    _, token = store.read_versioned("models/v1/big.bin") or (b"", "")
    assert token.strip('"').endswith("-2")  # two parts
    store.get_file("models/v1/big.bin", tmp_path / "back.bin")
    assert sha256_file(tmp_path / "back.bin") == sha256_file(src)


@pytest.mark.s3
def test_path_addressing_and_explicit_endpoint(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = _s3_store(s3, monkeypatch, endpoint=s3.endpoint_url, addressing_style="path")
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


@pytest.mark.s3
def test_missing_bucket_is_a_clear_error(s3: S3Server) -> None:
    bucket = f"musicrec-missing-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{bucket}/p")
    for call in (
        lambda: store.get_bytes("k"),
        lambda: store.put_bytes("k", b"x"),
        lambda: store.exists("k"),
        lambda: store.list(),
        lambda: store.read_versioned("k"),
    ):
        with pytest.raises(StoreError, match=f"bucket '{bucket}' does not exist"):
            call()


@pytest.mark.s3
def test_unreachable_endpoint_fails_fast(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _s3_store(s3, monkeypatch, endpoint=unreachable_endpoint(), max_attempts="2", connect_timeout="1")
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"runs/r1/report\.json") as info:
        store.put_bytes("runs/r1/report.json", b"{}")
    assert time.monotonic() - started < 10
    assert "unreachable" in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)


@pytest.mark.s3
@pytest.mark.parametrize(
    "inject",
    [
        lambda p: p.fail_next(2),
        lambda p: p.drop_next(1),
        lambda p: p.fail_next(1, status=503, code="SlowDown"),
    ],
    ids=["two-500s", "dropped-connection", "503-slowdown"],
)
def test_transient_faults_are_retried(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, inject: Callable[[FaultProxy], None]
) -> None:
    with FaultProxy(s3.endpoint_url) as proxy:
        store = _s3_store(s3, monkeypatch, endpoint=proxy.url)
        inject(proxy)
        store.put_bytes("runs/r1/report.json", b"{}")
        assert proxy.faults_served >= 1 and proxy.requests == proxy.faults_served + 1
        assert store.get_bytes("runs/r1/report.json") == b"{}"


@pytest.mark.s3
def test_read_timeout_is_retried(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(s3.endpoint_url) as proxy:
        store = _s3_store(s3, monkeypatch, endpoint=proxy.url, read_timeout="0.5")
        proxy.hang_next(1, seconds=2)
        store.put_bytes("k", b"v")
        assert store.get_bytes("k") == b"v" and proxy.faults_served == 1


@pytest.mark.s3
def test_persistent_500s_end_in_a_store_error(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(s3.endpoint_url) as proxy:
        store = _s3_store(s3, monkeypatch, endpoint=proxy.url, max_attempts="2")
        proxy.fail_next(5)
        with pytest.raises(StoreError, match="InternalError") as info:
            store.get_bytes("runs/r1/report.json")
        assert proxy.requests == 2
        assert "after 2 attempt(s)" in str(info.value) and "runs/r1/report.json" in str(info.value)


@pytest.mark.s3
def test_credentials_never_appear_in_errors(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == DUMMY_SECRET
    failures: list[BaseException] = []

    def collect(make: Callable[[], Store], action: Callable[[Store], object]) -> None:
        with pytest.raises(StoreError) as info:
            action(make())
        failures.append(info.value)

    good = _s3_store(s3, monkeypatch)
    collect(lambda: good, lambda s: s.get_bytes("missing"))
    collect(lambda: good, lambda s: s.put_if("x", b"1", '"not-a-token"'))
    collect(lambda: good, lambda s: s.get_bytes(f"runs/{DUMMY_SECRET}/x"))  # even a key holding it is masked
    collect(lambda: open_store(f"s3://musicrec-missing-{uuid.uuid4().hex[:8]}"), lambda s: s.get_bytes("k"))
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_next(10)
        collect(
            lambda: _s3_store(s3, monkeypatch, endpoint=proxy.url, max_attempts="1"),
            lambda s: s.put_file("k", tmp_path / "absent"),
        )
        collect(
            lambda: _s3_store(s3, monkeypatch, endpoint=proxy.url, max_attempts="1"),
            lambda s: s.put_bytes("k", b"x"),
        )
    collect(
        lambda: _s3_store(s3, monkeypatch, endpoint=unreachable_endpoint(), max_attempts="1"),
        lambda s: s.list(),
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # secret alone is not a credential: NoCredentialsError
    collect(lambda: _s3_store(s3, monkeypatch), lambda s: s.get_bytes("k"))
    assert "no usable AWS credentials" in str(failures[-1])
    for exc in failures:
        assert DUMMY_SECRET not in _error_texts(exc)
