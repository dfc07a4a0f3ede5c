"""The parsers of user input, in process: each bomb is refused by the bound that names it, and
what is in bounds still reads as before (tests/test_security_bombs.py drives the same through
a real daemon). Metadata is checked on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

import bombs

from vh_orch.api.multipart import MAX_FIELD_BYTES, MAX_PARTS, FormReader, MultipartError
from vh_orch.config.packages import read_package
from vh_orch.config.steps import load_config, load_yaml
from vh_orch.config.yaml_limits import MAX_YAML_CHARS, MAX_YAML_NODES
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.logs import LogIngester, parse_metadata
from vh_orch.orchestrator.metadata_limits import MAX_KEY_CHARS, MAX_VALUE_CHARS, MetadataGate, warning
from vh_orch.orchestrator.store import LogChunk
from vh_orch.orchestrator.store.queries import ExecutionFilter
from vh_orch.storage.bounded_tar import MAX_GLOBAL_HEADERS, MAX_HEADER_BYTES, MAX_HEADER_RUN
from vh_orch.storage.packages import PackageError

CONFIG = b"- step: {name: a, image: x, command: 'true'}\n"
GIB = 1 << 30


def header(name: str, kind: bytes, size: int) -> bytes:
    """One 512-byte tar header that says what follows is `size` bytes of `kind` (past 8 GiB, in
    GNU tar's base-256 form)."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(tarfile.GNU_FORMAT if size >= 8 << 30 else tarfile.USTAR_FORMAT)


def pax_record(keyword: str, value: str) -> bytes:
    """One pax record, "LENGTH KEYWORD=VALUE\\n", its length counting itself."""
    body = f" {keyword}={value}\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return f"{length}{body}".encode()


def archive(*raw: bytes, members: dict[str, bytes] | None = None, fmt: int = tarfile.USTAR_FORMAT,
            pax: dict[str, str] | None = None) -> bytes:
    """Raw header bytes first, then ordinary members (valohai.yaml by default), gzipped."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=pax or {}) as tar:
        for name, data in (members if members is not None else {"valohai.yaml": CONFIG}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(b"".join(raw) + out.getvalue(), mtime=0)


def refusal(tmp_path: Path, data: bytes, **kw: int) -> str:
    path = tmp_path / "upload.tgz"
    path.write_bytes(data)
    with pytest.raises(PackageError) as refused:
        read_package(path, "valohai.yaml", max_unpacked=kw.pop("max_unpacked", 4 * GIB), **kw)
    message = str(refused.value)
    assert "nothing was stored" in message
    return message


def test_an_ordinary_package_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.tgz"
    path.write_bytes(archive(members={"valohai.yaml": CONFIG, "a/" + "n" * 200: b"x", "train.py": b"print(1)\n"},
                             fmt=tarfile.PAX_FORMAT, pax={"comment": "one global header, as git archive writes"}))
    assert read_package(path, "valohai.yaml", max_unpacked=GIB).config_yaml == CONFIG.decode()


@pytest.mark.parametrize(("kind", "words"), [
    (tarfile.XHDTYPE, "pax extended header"),
    (tarfile.XGLTYPE, "global pax header"),
    (tarfile.GNUTYPE_LONGNAME, "GNU long-name header"),
    (tarfile.GNUTYPE_LONGLINK, "GNU long-link header"),
])
def test_an_extension_header_past_64_kib_is_refused_before_it_is_read(tmp_path: Path, kind: bytes, words: str
                                                                     ) -> None:
    # The header says 200 MiB; refused from the size it declares, so no content needs to follow.
    message = refusal(tmp_path, archive(header("././@x", kind, 200 << 20)))
    assert words in message and f"{MAX_HEADER_BYTES // 1024} KiB" in message and "209,715,200" in message


def test_runs_of_extension_headers_and_many_global_headers_are_refused(tmp_path: Path) -> None:
    record = pax_record("comment", "hello")
    block = record + b"\0" * (512 - len(record))
    pax = header("././@PaxHeader", tarfile.XHDTYPE, len(record)) + block
    assert "in a row" in refusal(tmp_path, archive(pax * (MAX_HEADER_RUN + 1)))
    glob = header("././@PaxHeader", tarfile.XGLTYPE, len(record)) + block
    each = b"".join(glob + header(f"f{i}", tarfile.REGTYPE, 0) for i in range(MAX_GLOBAL_HEADERS + 1))
    assert "global pax headers" in refusal(tmp_path, archive(each))


def test_sparse_members_are_refused_before_their_maps_are_read(tmp_path: Path) -> None:
    assert "sparse" in refusal(tmp_path, archive(header("old", tarfile.GNUTYPE_SPARSE, 0)))
    # GNU sparse 1.0 in a pax header: its map, of any length, would be read from the contents.
    records = pax_record("GNU.sparse.major", "1") + pax_record("GNU.sparse.minor", "0")
    pax = header("././@PaxHeader", tarfile.XHDTYPE, len(records)) + records + b"\0" * (512 - len(records))
    assert "sparse" in refusal(tmp_path, archive(pax + header("sparse", tarfile.REGTYPE, 512) + b"9" * 512))


def test_members_past_the_bound_are_refused_and_headers_count_toward_the_unpacked_size(tmp_path: Path) -> None:
    many = {f"f{i}": b"" for i in range(1001)}
    assert "more than 1,000 members" in refusal(tmp_path, archive(members=many), max_members=1000)
    # 300,000 empty members: no content at all, 150 MB of headers in a 150 KB upload.
    empty = archive(header("empty", tarfile.REGTYPE, 0) * 300_000)
    assert len(empty) < 1 << 20
    assert "headers count" in refusal(tmp_path, empty, max_members=1_000_000)


def test_a_member_claiming_more_than_the_bound_is_refused_before_it_is_skipped(tmp_path: Path) -> None:
    assert "unpacks to more than" in refusal(tmp_path, archive(header("huge", tarfile.REGTYPE, 8 << 40)))


# -- valohai.yaml ------------------------------------------------------------------------------

ALIAS_BOMB = bombs.ALIAS_BOMB.decode()


def test_a_nested_alias_bomb_is_refused_before_it_is_built() -> None:
    assert len(ALIAS_BOMB.encode()) < 300
    with pytest.raises(UserInputError, match=f"more than {MAX_YAML_NODES:,} values once its YAML aliases"):
        load_config(ALIAS_BOMB)
    # Merge keys (`<<: *x`) are aliases too: a merge bomb is the same count.
    merges = "- a: &a {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n" + "".join(
        f"- {n}: &{n} {{<<: [{', '.join([f'*{p}'] * 10)}]}}\n" for p, n in zip("abcde", "bcdef", strict=True))
    with pytest.raises(UserInputError, match="YAML aliases"):
        load_yaml(merges)


def test_a_document_past_the_size_bound_is_refused_and_aliases_in_bounds_still_read() -> None:
    with pytest.raises(UserInputError, match="too large"):
        load_yaml("#" * (MAX_YAML_CHARS + 1))
    shared = "- step: {name: a, image: x, command: &c [echo a, echo b]}\n- step: {name: b, image: x, command: *c}\n"
    assert set(load_config(shared).config.steps) == {"a", "b"}
    loop = load_yaml("&a [*a]")  # a recursive alias stays finite here; load_config refuses it
    assert loop[0] is loop
    with pytest.raises(UserInputError, match="is invalid"):
        load_config("- &a {step: {name: a, image: x, command: *a}}\n")


# -- multipart -----------------------------------------------------------------------------------

def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        file = f'; filename="{filename}"' if filename else ""
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{file}\r\n\r\n'.encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def read(tmp_path: Path, body: bytes) -> FormReader:
    reader = FormReader(b"b0undary", tmp_path, frozenset({"data", "description"}))
    try:
        for start in range(0, len(body), 1000):
            reader.feed(body[start:start + 1000])
        reader.finish()
    finally:
        reader.close()
    return reader


def test_a_text_field_past_64_kib_is_refused_as_it_arrives(tmp_path: Path) -> None:
    ok = read(tmp_path, multipart(("data", "d.tgz", b"\0" * 100_000), ("description", None, b"d" * MAX_FIELD_BYTES)))
    assert ok.form.files["data"].read_bytes() == b"\0" * 100_000
    assert ok.form.fields["description"] == "d" * MAX_FIELD_BYTES
    for name, field in (("description", "description"), ("x" * 500, "non_field_errors")):
        with pytest.raises(MultipartError) as refused:
            read(tmp_path, multipart((name, None, b"d" * (MAX_FIELD_BYTES + 1))))
        assert refused.value.field == field and "64 KiB" in str(refused.value)
    with pytest.raises(MultipartError, match=f"more than {MAX_PARTS} parts"):
        read(tmp_path, multipart(*[(f"f{i}", None, b"") for i in range(MAX_PARTS + 1)]))


# -- metadata ------------------------------------------------------------------------------------

def test_metadata_keys_values_and_numbers_are_bounded() -> None:
    assert parse_metadata('{"x": 1e999}') is None  # no JSON number a database would take back
    gate = MetadataGate(["known", 'bad"key'], max_keys=3)
    assert gate.keys == {"known"}
    long_value = "v" * (MAX_VALUE_CHARS + 1)
    point = {"a": 1, "k" * (MAX_KEY_CHARS + 1): 1, "tab\tkey": 1, "big": long_value, "b": 2, "c": 3, "known": 4}
    kept, broken = gate.admit(point, line_chars=5000)
    assert kept == {"a": 1, "b": 2, "known": 4} and broken == ["key", "value", "keys"]
    assert gate.admit({"c": 1, "d": 2}, 20) == (None, [])  # past the bound; each rule is reported once
    assert gate.admit({"a": 5, "d": 2}, 20) == ({"a": 5}, [])


def test_latest_values_are_merged_in_the_database_keeping_every_value_as_written(db_url: str) -> None:
    from test_logs import one_execution

    store, execution = one_execution(db_url)
    first = {"loss": 0.30000000000000004, "big": 1e20, "cfg": {"a": 1, "b": None}, "none": None, "clé": "é",
             "list": [1, "x"], "dots.and[brackets]": True}
    store.append_chunks(execution.id, [LogChunk("stdout", ["p1", "p2"], "2026-01-01 00:00:00.000000",
                                                metadata={0: first, 1: {"loss": 0.5}})])
    assert store.get_execution(execution.id).metadata_latest == {**first, "loss": 0.5}
    # The next batch replaces what it names (an object whole, not merged) and leaves the rest.
    store.append_chunks(execution.id, [LogChunk("stdout", ["p3"], "2026-01-01 00:00:01.000000",
                                                metadata={0: {"cfg": {"c": 2}, "none": 3, "clé": None, 'q"uote': 1}})])
    latest = store.get_execution(execution.id).metadata_latest
    assert latest == {**first, "loss": 0.5, "cfg": {"c": 2}, "none": 3, "clé": None}
    assert isinstance(latest["big"], float)
    assert sorted(store.metadata_keys(execution.id)) == sorted(latest)
    total, rows = store.query_executions(ExecutionFilter(), sort="-loss", limit=10, offset=0)
    assert total == 1 and rows[0].id == execution.id


def test_an_execution_past_its_key_bound_keeps_lines_and_warns_once_across_restarts(db_url: str) -> None:
    from test_logs import one_execution

    store, execution = one_execution(db_url)
    store.append_chunks(execution.id, [LogChunk("stdout", [f"k{i}" for i in range(3)], "2026-01-01 00:00:00.000000",
                                                metadata={i: {f"k{i}": i} for i in range(3)})])
    for attempt in range(2):  # a daemon that re-attaches reads the keys (and its predecessor's warning)
        r, w = os.pipe()
        ingester = LogIngester(store, execution.id, max_metadata_keys=3)  # type: ignore[arg-type]
        ingester.follow(open(r, "rb"), "stdout")
        with open(w, "wb") as out:
            out.write(b'{"k0": -1, "new": 1}\n{"other": 2}\nplain\n')
        assert ingester.close(timeout=60)
        assert store.get_execution(execution.id).metadata_latest == {"k0": -1, "k1": 1, "k2": 2}, attempt
    texts = [e.text for e in store.events_after(execution.id, 0) if e.kind == "log"]  # type: ignore[arg-type]
    assert texts.count(warning("keys", 3)) == 1
    assert texts.count('{"other": 2}') == 2 and texts.count("plain") == 2  # every line stays a log line
    points = store.metadata_after(execution.id)  # type: ignore[arg-type]
    assert [p.data for p in points][-2:] == [{"k0": -1}, {"k0": -1}]
