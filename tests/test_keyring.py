"""The installation's secret key (vh_orch/keyring.py): made by init, private, and what opens what it closed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conftest import VhOrch
from vh_orch.errors import ConfigError
from vh_orch.keyring import KEY_ENV, KEY_FILE_ENV, KeyRing, ensure_key_file


def test_init_makes_a_private_key_that_a_second_init_keeps(tmp_path: Path) -> None:
    vh = VhOrch(tmp_path / "home")
    said = vh("init").stderr + vh("init").stdout
    key = tmp_path / "home" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "secret key" in said and str(key) in said
    first = key.read_bytes()
    vh("init")
    assert key.read_bytes() == first  # never replaced: what it encrypted would be lost


def test_a_value_goes_in_encrypted_and_comes_back_only_with_the_key(tmp_path: Path) -> None:
    assert ensure_key_file(tmp_path, {})
    ring = KeyRing.load(tmp_path, {})
    token = ring.encrypt("hunter2-the-password")
    assert "hunter2" not in token and ring.decrypt(token) == b"hunter2-the-password"
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(ConfigError, match="does not open"):
        ring.decrypt(tampered)
    with pytest.raises(ConfigError, match="does not open"):
        KeyRing([Fernet.generate_key()]).decrypt(token)  # another installation's key


def test_rotation_opens_old_values_and_closes_new_ones_with_the_newest_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    before = KeyRing([old]).encrypt("value")
    both = KeyRing([new, old])
    assert both.decrypt(before) == b"value"
    rotated = both.rotate(before)
    assert KeyRing([new]).decrypt(rotated) == b"value"
    (tmp_path / "keys").write_bytes(new + b"\n" + old + b"\n")
    assert KeyRing.load(tmp_path, {KEY_FILE_ENV: str(tmp_path / "keys")}).keys == 2


def test_a_key_from_the_environment_needs_no_file_and_a_bad_key_says_how_to_make_one(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    assert not ensure_key_file(tmp_path, {KEY_ENV: key})
    assert not (tmp_path / "secret.key").exists()
    assert KeyRing.load(tmp_path, {KEY_ENV: key}).decrypt(KeyRing([key.encode()]).encrypt("x")) == b"x"
    with pytest.raises(ConfigError, match="not a Fernet key.*generate_key"):
        KeyRing.load(tmp_path, {KEY_ENV: "not-a-key"})
    with pytest.raises(ConfigError, match="vh-orch init"):
        KeyRing.load(tmp_path / "nowhere", {})
