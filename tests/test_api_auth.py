"""The HTTP API of `vh-orch serve`: who may ask, and what they see. Real daemon, real HTTP on loopback."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
import requests

from conftest import VhOrch
from test_users import PASSWORD, database_bytes, with_stdin


@pytest.fixture
def api(vh: VhOrch) -> str:
    with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
    vh("user", "add", "bob")
    vh("project", "add", "mine", "--owner", "alice")
    vh("project", "add", "theirs", "--owner", "bob")
    vh("project", "add", "shared", "--owner", "bob")
    vh("project", "share", "shared", "alice")
    vh.start_daemon()
    return vh.api_url()


def get(url: str, token: str | None = None, scheme: str = "Token") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return requests.get(url, headers=headers, timeout=30)


def login(api: str, username: str, password: str) -> requests.Response:
    return requests.post(f"{api}/api/v0/get-token/", data={"username": username, "password": password}, timeout=30)


def test_no_token_a_wrong_one_and_a_revoked_one_get_401(vh: VhOrch, api: str) -> None:
    me = f"{api}/api/v0/users/me/"
    assert get(me).status_code == 401
    assert get(me).json() == {"detail": "Authentication credentials were not provided."}
    assert get(me, "vho_not-a-token").status_code == 401
    assert get(me, "").status_code == 401
    token = vh.json("user", "token", "alice")["token"]
    assert get(me, token, scheme="Basic").status_code == 401
    answer = get(me, token)
    assert answer.status_code == 200 and answer.json()["username"] == "alice"
    assert get(me, token, scheme="Bearer").json()["username"] == "alice"
    vh("user", "revoke-tokens", "alice")
    revoked = get(me, token)
    assert revoked.status_code == 401 and revoked.json() == {"detail": "Invalid token."}


def test_a_password_login_gives_a_token_and_failed_ones_are_throttled(vh: VhOrch, api: str) -> None:
    answer = login(api, "alice", PASSWORD)
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert get(f"{api}/api/v0/users/me/", token).json()["username"] == "alice"
    wrong = login(api, "alice", "not the password")
    assert wrong.status_code == 400
    assert wrong.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    assert login(api, "bob", "bob has no password").status_code == 400  # a user without one never logs in
    assert login(api, "nobody", PASSWORD).status_code == 400  # the same answer as a wrong password
    for _ in range(4):
        assert login(api, "alice", "guess").status_code == 400
    throttled = login(api, "alice", PASSWORD)  # five failures: even the right password waits
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "too many failed logins" in throttled.json()["message"]
    assert get(f"{api}/api/v0/users/me/", token).status_code == 200  # a token already given still works

    # Neither the password nor a token is in the database or the daemon's log.
    vh.stop_daemon()
    for secret in (PASSWORD, token):
        assert secret.encode() not in database_bytes(vh.home)
        assert secret not in vh.daemon_log.read_text()


def test_users_see_only_their_own_and_shared_projects(vh: VhOrch, api: str) -> None:
    alice = vh.json("user", "token", "alice")["token"]
    bob = vh.json("user", "token", "bob")["token"]
    admin = vh.json("user", "token", "admin")["token"]

    def names(token: str) -> list[str]:
        listed = get(f"{api}/api/v0/projects/?limit=1000", token).json()
        assert listed["count"] == len(listed["results"])
        return [p["name"] for p in listed["results"]]

    assert names(alice) == ["mine", "shared"]
    assert names(bob) == ["shared", "theirs"]
    assert names(admin) == ["mine", "shared", "theirs"]
    ids = {p["name"]: p["id"] for p in get(f"{api}/api/v0/projects/", admin).json()["results"]}
    shown = get(f"{api}/api/v0/projects/{ids['shared']}/", alice).json()
    assert (shown["name"], shown["owner"]["username"]) == ("shared", "bob")
    assert shown["urls"]["display"].startswith(api)  # the request's own host: the client sends its token there
    # Another user's project and one that does not exist answer alike: 404, nothing about it.
    hidden = get(f"{api}/api/v0/projects/{ids['theirs']}/", alice)
    missing = get(f"{api}/api/v0/projects/999999/", alice)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json() == missing.json()
    assert get(f"{api}/api/v0/projects/{ids['theirs']}/", admin).status_code == 200
    bad = get(f"{api}/api/v0/projects/?limit=lots", alice)
    assert bad.status_code == 400 and bad.json()["limit"][0]["code"]


def test_a_user_makes_an_ad_hoc_project_of_their_own_and_a_refusal_names_the_field(vh: VhOrch, api: str) -> None:
    alice = {"Authorization": f"Token {vh.json('user', 'token', 'alice')['token']}"}

    def create(name: str) -> requests.Response:
        return requests.post(f"{api}/api/v0/projects/", data={"name": name}, headers=alice, timeout=30)

    made = create("scratch")
    assert made.status_code == 201
    assert (made.json()["name"], made.json()["owner"], made.json()["repository"]) == \
        ("scratch", {"username": "alice"}, None)
    listed = {p["name"]: p for p in vh.json("project", "list")}
    assert (listed["scratch"]["owner"], listed["scratch"]["repo_url"]) == ("alice", None)
    for name, message in (("scratch", "a project named 'scratch' already exists"),
                          ("theirs", "a project named 'theirs' already exists"),
                          ("../x", "project name '../x' is not valid: use letters, digits, '.', '_' and '-'")):
        refused = create(name)
        assert (refused.status_code, refused.json()) == (400, {"name": [{"message": message, "code": "invalid"}]})


def test_serve_refuses_a_busy_port_and_a_malformed_address(vh: VhOrch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        env = dict(vh.env, VH_ORCH_LISTEN=f"127.0.0.1:{port}")
        busy = subprocess.run([vh.exe, "serve"], env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "--listen HOST:PORT" in busy.stderr
    finally:
        taken.close()
    malformed = subprocess.run([vh.exe, "serve", "--listen", "localhost"], env=vh.env, capture_output=True,
                               text=True, timeout=60)
    assert malformed.returncode == 1 and "is not HOST:PORT" in malformed.stderr
    # --no-http: the daemon runs, with no port, even where the address would be busy.
    with socket.socket() as again:
        again.bind(("127.0.0.1", 0))
        again.listen(1)
        vh.env["VH_ORCH_LISTEN"] = f"127.0.0.1:{again.getsockname()[1]}"
        log = vh.home.parent / "no-http.log"
        with open(log, "wb") as out:
            daemon = subprocess.Popen([vh.exe, "serve", "--no-http"], env=vh.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "vh-orch daemon started" not in log.read_text():
                assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            daemon.terminate()
            assert daemon.wait(60) == 0
        assert "HTTP API on" not in log.read_text()
