"""The input cache on a machine: one fetch serves every later execution there, safely.

The script itself runs here (LocalShell, as for the local runtimes) for the cache's rules;
test_input_cache_ssh.py runs executions on a real sshd host through a byte-counting proxy.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vh_orch.storage.input_cache import Identity, InputCache, InputCacheError, LocalShell, file_source

MiB = 1024 * 1024


def blob(path: Path, size: int, seed: int) -> str:
    """A file of `size` seeded random bytes; its sha256."""
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = bytes((b + i) % 256 for i, b in enumerate(data[: min(size, 4096)])) + data[4096:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class Source:
    """A source that counts how often the daemon had to send the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sends = 0
        self.lock = threading.Lock()

    def __call__(self) -> tuple[int, Iterator[bytes]]:
        with self.lock:
            self.sends += 1
        return file_source(self.path)


def entries(root: Path) -> dict[str, int]:
    return {p.name: int((p / "size").read_text()) for p in root.iterdir() if p.is_dir() and (p / "data").exists()}


def cache(root: Path, bound: int, pin: str = "c-1-1") -> InputCache:
    return InputCache(LocalShell(), str(root), bound, pin, wait_s=60)


def test_a_second_placement_moves_no_byte_and_gets_an_identical_copy(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    digest = blob(src, 3 * MiB, 1)
    source = Source(src)
    ident = Identity("k-one", 3 * MiB)
    c = cache(tmp_path / "cache", 100 * MiB)
    first = c.place(ident, str(tmp_path / "e1" / "inputs" / "d" / "data.bin"), None, source)
    second = c.place(ident, str(tmp_path / "e2" / "inputs" / "d" / "data.bin"), None, source)
    assert (first.hit, first.sent, second.hit, second.sent) == (False, 3 * MiB, True, 0)
    assert source.sends == 1
    assert first.sha256 == second.sha256 == digest and second.size == 3 * MiB
    placed = tmp_path / "e2" / "inputs" / "d" / "data.bin"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == digest
    # A copy, never a link: writing the execution's file leaves the cache as it was.
    entry = tmp_path / "cache" / "k-one" / "data"
    assert placed.stat().st_ino != entry.stat().st_ino and entry.stat().st_nlink == 1
    placed.write_bytes(b"changed by the execution")
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == digest
    assert oct(entry.stat().st_mode & 0o777) == "0o444" and oct(placed.stat().st_mode & 0o777) != "0o444"


@pytest.mark.parametrize("how", ["same size", "truncated", "times put back"])
def test_a_damaged_entry_is_found_and_fetched_again(tmp_path: Path, how: str) -> None:
    src = tmp_path / "data.bin"
    digest = blob(src, 2 * MiB, 2)
    source = Source(src)
    ident = Identity("k-two", 2 * MiB)
    c = cache(tmp_path / "cache", 100 * MiB)
    c.place(ident, str(tmp_path / "e1" / "x.bin"), None, source)
    entry = tmp_path / "cache" / "k-two" / "data"
    before = entry.stat()
    os.chmod(entry, 0o644)
    with open(entry, "r+b") as fh:
        if how == "truncated":
            fh.truncate(MiB)
        else:
            fh.seek(MiB)
            fh.write(b"\0" * 16)
    if how == "times put back":
        os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(entry, 0o444)
    again = c.place(ident, str(tmp_path / "e2" / "x.bin"), None, source)
    assert "CORRUPT" in again.events and not again.hit and source.sends == 2
    assert again.sha256 == digest == hashlib.sha256((tmp_path / "e2" / "x.bin").read_bytes()).hexdigest()
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == digest
    # Sound again: the next one is a hit.
    assert c.place(ident, str(tmp_path / "e3" / "x.bin"), None, source).hit


def test_an_entry_that_only_looks_changed_is_checked_and_kept(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    blob(src, MiB, 3)
    source = Source(src)
    c = cache(tmp_path / "cache", 100 * MiB)
    c.place(Identity("k"), str(tmp_path / "e1" / "x.bin"), None, source)
    os.utime(tmp_path / "cache" / "k" / "data")  # touched, not changed
    again = c.place(Identity("k"), str(tmp_path / "e2" / "x.bin"), None, source)
    assert again.hit and "CORRUPT" not in again.events and source.sends == 1


def test_a_send_cut_short_leaves_no_entry_and_the_next_one_fetches(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    digest = blob(src, 2 * MiB, 4)

    def broken() -> tuple[int, Iterator[bytes]]:
        size, chunks = file_source(src)

        def cut() -> Iterator[bytes]:
            yield next(chunks)
            raise OSError("the source went away")

        return size, cut()

    c = cache(tmp_path / "cache", 100 * MiB)
    with pytest.raises(InputCacheError, match="cannot read the input: the source went away"):
        c.place(Identity("k-cut"), str(tmp_path / "e1" / "x.bin"), None, broken)
    assert entries(tmp_path / "cache") == {}
    assert not (tmp_path / "e1" / "x.bin").exists()
    source = Source(src)
    placed = c.place(Identity("k-cut"), str(tmp_path / "e2" / "x.bin"), None, source)
    assert not placed.hit and placed.sha256 == digest and source.sends == 1


def test_a_file_that_is_not_what_its_identity_says_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    blob(src, MiB, 5)
    c = cache(tmp_path / "cache", 100 * MiB)
    with pytest.raises(InputCacheError, match="arrived damaged"):
        c.place(Identity("sha256-" + "0" * 64, MiB, "0" * 64), str(tmp_path / "e" / "x.bin"), None, Source(src))
    with pytest.raises(InputCacheError, match="bytes, 5 were expected"):
        c.place(Identity("k-size", 5), str(tmp_path / "e" / "y.bin"), None, Source(src))
    assert entries(tmp_path / "cache") == {}


def test_eviction_keeps_the_bound_and_never_evicts_an_entry_in_use(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    files = {}
    for name in "abcde":
        files[name] = tmp_path / f"{name}.bin"
        blob(files[name], MiB, ord(name))
    bound = 3 * MiB
    used_by_a = cache(root, bound, pin="c-1-1")   # runs on: its entry is in use
    done = cache(root, bound, pin="c-2-1")
    used_by_a.place(Identity("a", MiB), str(tmp_path / "e1" / "a.bin"), None, Source(files["a"]))
    done.place(Identity("b", MiB), str(tmp_path / "e2" / "b.bin"), None, Source(files["b"]))
    done.place(Identity("c", MiB), str(tmp_path / "e2" / "c.bin"), None, Source(files["c"]))
    done.release()
    assert sum(entries(root).values()) == 3 * MiB
    # d needs room: b, the least recently used entry nobody uses, goes; a (in use, older) stays.
    placed = cache(root, bound, pin="c-3-1").place(Identity("d", MiB), str(tmp_path / "e3" / "d.bin"), None,
                                                   Source(files["d"]))
    assert [e for e in placed.events if e.startswith("EVICTED")] == ["EVICTED b"] and placed.cache_bytes <= bound
    assert set(entries(root)) == {"a", "c", "d"}
    # With everything in use, a new file goes straight to its execution, uncached: the bound holds.
    held = cache(root, bound, pin="c-4-1")
    held.place(Identity("c", MiB), str(tmp_path / "e4" / "c.bin"), None, Source(files["c"]))
    placed = cache(root, bound, pin="c-5-1").place(Identity("e", MiB), str(tmp_path / "e5" / "e.bin"), None,
                                                   Source(files["e"]))
    assert "UNCACHED" in placed.events and set(entries(root)) == {"a", "c", "d"}
    assert (tmp_path / "e5" / "e.bin").read_bytes() == files["e"].read_bytes()
    assert sum(entries(root).values()) <= bound
    # A file larger than the whole cache is never cached.
    big = tmp_path / "big.bin"
    blob(big, 4 * MiB, 9)
    placed = done.place(Identity("big", 4 * MiB), str(tmp_path / "e6" / "big.bin"), None, Source(big))
    assert "UNCACHED" in placed.events and "big" not in entries(root)
    # Released, a's entry may go in its turn.
    used_by_a.release()
    held.release()
    cache(root, bound, pin="c-7-1").place(Identity("e", MiB), str(tmp_path / "e7" / "e.bin"), None,
                                          Source(files["e"]))
    assert "a" not in entries(root) and sum(entries(root).values()) <= bound


def test_two_placements_of_one_file_at_once_share_one_send(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    digest = blob(src, 8 * MiB, 6)
    source = Source(src)
    results = []

    def place(n: int) -> None:
        results.append(cache(tmp_path / "cache", 100 * MiB, pin=f"c-{n}-1").place(
            Identity("shared"), str(tmp_path / f"e{n}" / "x.bin"), None, source))

    threads = [threading.Thread(target=place, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert source.sends == 1
    assert sorted(r.hit for r in results) == [False, True, True, True]
    assert {r.sha256 for r in results} == {digest}


def test_hostile_names_and_keys_are_data(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    blob(src, 1000, 7)
    dest = tmp_path / "e" / "$(touch pwned); `touch pwned2` 'x\".bin"
    placed = cache(tmp_path / "cache", 100 * MiB, pin="$(touch pwned3)").place(
        Identity("k"), str(dest), None, Source(src))
    assert dest.read_bytes() == src.read_bytes() and placed.size == 1000
    assert not list(tmp_path.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_a_container_gets_the_entry_itself_to_mount_and_the_process_runtime_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    digest = blob(src, MiB, 8)
    c = cache(tmp_path / "cache", 100 * MiB)
    dest = tmp_path / "e1" / "inputs" / "d" / "x.bin"
    placed = c.place(Identity("k-m"), str(dest), None, Source(src), mount=True)
    assert placed.mount == str(tmp_path / "cache" / "k-m" / "data") and placed.sha256 == digest
    assert dest.parent.is_dir() and not dest.exists()  # docker makes the mount point
    again = c.place(Identity("k-m"), str(tmp_path / "e2" / "x.bin"), None, Source(src), mount=True)
    assert again.hit and again.mount == placed.mount
    # A file that cannot be cached is in the folder, to be used as it is.
    small = cache(tmp_path / "small", 10, pin="c-9-1")
    placed = small.place(Identity("k-big", MiB), str(dest), None, Source(src), mount=True)
    assert placed.mount is None and "UNCACHED" in placed.events and dest.read_bytes() == src.read_bytes()
