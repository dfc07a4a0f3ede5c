"""Project secrets (issue 30): set, listed and removed by the operator's CLI and by the project's owner over
the API and the web page; stored encrypted; given to executions as environment variables; masked in what
they print, also when a value arrives split across reads; never shown by `exec info`, the API or a page, and
never in the database files. Tried as a hostile user too: another user's project's secrets answer 404.
And the rule every `--...-stdin` option keeps: the value is standard input less one trailing newline."""

from __future__ import annotations

import json
import re
import secrets as random
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
import requests
import typer

from conftest import VhOrch, installation, make_project
from test_api_security import Client, project_id
from test_private_repos import GitHTTP, bare_repo
from test_users import PASSWORD, database_bytes, store_of, with_stdin
from vh_orch.cli.stdin import drop_one_newline
from vh_orch.keyring import KeyRing
from vh_orch.orchestrator.masking import MASK, StreamMask, mask_text, masked_forms
from vh_orch.orchestrator.users import verify_password

TIMEOUT = 60
VALUE = "tok-" + random.token_hex(12)  # this run's secret: no other text in the test holds it
STEPS = r"""
- step:
    name: leak
    image: vh-orch/busybox:test
    command:
      - |-
        echo "length=${#API_KEY}"
      - |-
        printf '%s' "$API_KEY" | cut -c1-6 | tr -d '\n'; sleep 0.3; printf '%s\n' "$API_KEY" | cut -c7-
      - |-
        printf '{"key": "%s", "n": 1}\n' "$API_KEY"
      - |-
        echo "on stderr: $API_KEY" >&2
      - |-
        echo "shadow=$SHADOWED"
    environment-variables:
      - name: SHADOWED
        default: own
      - name: API_KEY
        optional: false
- step:
    name: meta
    image: vh-orch/busybox:test
    command:
      - |-
        printf '{"token": "%s"}\n' "$API_KEY"
      - |-
        printf '{"escaped": "\\u0074%s"}\n' "${API_KEY#t}"
      - |-
        echo model > "$VH_OUTPUTS_DIR/model.txt"
      - |-
        printf '{"token": "%s", "nested": {"k": ["%s"]}, "esc": "\\u0074%s", "valohai.tags": ["%s"]}' \
          "$API_KEY" "$API_KEY" "${API_KEY#t}" "$API_KEY" > "$VH_OUTPUTS_DIR/model.txt.metadata.json"
      - |-
        printf '{"file": "model.txt", "metadata": {"from_jsonl": "%s"}}\n' "$API_KEY" \
          > "$VH_OUTPUTS_DIR/valohai.metadata.jsonl"
"""


# -- masking, byte by byte --------------------------------------------------------------------------------

def masked(chunks: list[bytes], values: list[str]) -> bytes:
    mask = StreamMask(masked_forms(values))
    return b"".join(mask.feed(chunk) for chunk in chunks) + mask.end()


@pytest.mark.parametrize("cut", range(1, len(VALUE)))
def test_a_value_split_across_reads_is_masked_wherever_it_is_cut(cut: int) -> None:
    data = f"before {VALUE} after\n".encode()
    at = len("before ") + cut
    assert masked([data[:at], data[at:]], [VALUE]) == b"before *** after\n"


def test_a_value_arriving_one_byte_a_read_is_masked() -> None:
    data = f"x{VALUE}{VALUE}y\n".encode()
    assert masked([data[i:i + 1] for i in range(len(data))], [VALUE]) == b"x******y\n"


def test_only_what_could_begin_a_value_is_held_back() -> None:
    mask = StreamMask(masked_forms(["secret"]))
    assert mask.feed(b"epoch 1\n") == b"epoch 1\n"  # nothing that begins the value: passed on at once
    assert mask.feed(b"a sec") == b"a "  # "sec" may be the value's start: held
    assert mask.feed(b"ond\n") == b"second\n"  # it was not
    assert mask.feed(b"tail se") == b"tail "
    assert mask.end() == b"se"  # the stream ended: what was held is no value


def test_a_many_line_value_is_masked_whole_and_line_by_line_and_so_is_its_json_form() -> None:
    pem = "-----BEGIN KEY-----\nMIIEabcdef\n-----END KEY-----"
    assert masked([f"a {pem} b\n".encode()], [pem]) == b"a *** b\n"
    # docker's timestamps come between the lines of a value printed by a container
    stamped = "2026-12-07T15:00:00.000000001Z MIIEabcdef\n"
    assert masked([stamped.encode()], [pem]) == b"2026-12-07T15:00:00.000000001Z ***\n"
    quoted = 'pa"ss\\word'
    assert masked([json.dumps({"k": quoted}).encode() + b"\n"], [quoted]) == b'{"k": "***"}\n'
    assert mask_text(f"vh-orch: {VALUE}", masked_forms([VALUE])) == "vh-orch: ***"
    assert MASK == b"***"


def test_a_container_gets_secrets_from_the_docker_clients_environment_not_its_arguments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vh_orch.bootstrap.runtimes import RunSpec, docker_run_args

    spec = RunSpec(execution_id=1, command="true", folder=tmp_path, env={"PLAIN": "shown"}, cluster_id="c",
                   image="img", secret_env={"API_KEY": VALUE})
    args = docker_run_args(spec, str(tmp_path), detach=False, labels={})
    assert "PLAIN=shown" in args and args[args.index("API_KEY") - 1] == "-e"
    assert not any(VALUE in arg for arg in args) and VALUE not in repr(spec)


# -- the stdin rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "value"), [
    ("value\n", "value"), ("value\r\n", "value"), ("value", "value"), ("value\n\n", "value\n"),
    (" spaced value \n", " spaced value "), ("two\nlines\n", "two\nlines"),
])
def test_one_trailing_newline_is_dropped_and_nothing_else(given: str, value: str) -> None:
    assert drop_one_newline(given) == value


def stdin_options() -> set[tuple[str, ...]]:
    """Every `--...-stdin` option of the CLI, as (command path..., option)."""
    from vh_orch.cli.commands import app

    found: set[tuple[str, ...]] = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):  # a group (Typer's own click, not necessarily the `click` package's)
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
            return
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt.endswith("-stdin"):
                    found.add((*path, opt))

    walk(typer.main.get_command(app), ())
    return found


def stored_secret(vh: VhOrch, project: str, name: str) -> str:
    store = store_of(vh)
    (row,) = [r for r in store.list_secrets(store.get_project(project).id) if r.name == name]  # type: ignore[arg-type]
    return KeyRing.load(vh.home, {}).decrypt(row.value).decode()


def registry_password(vh: VhOrch, host: str) -> str:
    store = store_of(vh)
    row = store.registry_credential(host, store.get_environment("local").id)  # type: ignore[arg-type]
    assert row is not None
    return KeyRing.load(vh.home, {}).decrypt(row.password).decode()


def repo_token(vh: VhOrch, project: str) -> str:
    token = store_of(vh).get_project(project).repo_token
    assert token is not None
    return KeyRing.load(vh.home, {}).decrypt(token).decode()


def webhook_secret(vh: VhOrch) -> str:
    (hook,) = store_of(vh).list_webhooks()
    assert hook.secret is not None
    return KeyRing.load(vh.home, {}).decrypt(hook.secret).decode()


def password_is(vh: VhOrch, user: str, password: str) -> bool:
    return verify_password(store_of(vh).get_user(user).password_hash or "", password)


# For every `--...-stdin` option: the command that takes it, and whether what it stored is VALUE
# (TOKEN_REPO: the URL of the token_repo fixture's repository).
TOKEN_REPO = "<token_repo>"
STDIN_CHECKS: dict[tuple[str, ...], tuple[list[str], Any]] = {
    ("user", "add", "--password-stdin"): (
        ["user", "add", "stdin-a", "--password-stdin"], lambda vh, value: password_is(vh, "stdin-a", value)),
    ("user", "passwd", "--password-stdin"): (
        ["user", "passwd", "admin", "--password-stdin"], lambda vh, value: password_is(vh, "admin", value)),
    ("project", "secret", "set", "--value-stdin"): (
        ["project", "secret", "set", "p", "K", "--value-stdin"],
        lambda vh, value: stored_secret(vh, "p", "K") == value),
    ("registry", "add", "--password-stdin"): (
        ["registry", "add", "registry.test:5000", "--username", "u", "--password-stdin"],
        lambda vh, value: registry_password(vh, "registry.test:5000") == value),
    ("project", "add", "--repo-token-stdin"): (  # the first fetch must succeed: a repository that takes any token
        ["project", "add", "tokened", "--repo", TOKEN_REPO, "--repo-token-stdin"],
        lambda vh, value: repo_token(vh, "tokened") == value),
    ("webhook", "add", "--secret-stdin"): (
        ["webhook", "add", "--project", "p", "--url", "http://127.0.0.1:9/hook", "--secret-stdin"],
        lambda vh, value: webhook_secret(vh) == value),
}


class AnyToken(GitHTTP):
    """`git http-backend` that takes any token (the check reads what was stored, and what was sent)."""

    def authorized(self, given: str) -> bool:
        return given.startswith("Basic ")


@pytest.fixture(scope="module")
def token_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """(a repository's URL on a loopback HTTP server that takes any token, the Authorization headers it saw)."""
    root = tmp_path_factory.mktemp("token-repo")
    repo = bare_repo(root)
    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (AnyToken,), {"root": root, "seen": seen}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{repo.name}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_every_stdin_option_is_checked_here() -> None:
    """A new `--...-stdin` option fails this until it is added to STDIN_CHECKS (and so tested below)."""
    assert stdin_options() == set(STDIN_CHECKS)


@pytest.mark.parametrize("option", sorted(STDIN_CHECKS))
def test_every_stdin_option_drops_one_trailing_newline(vh: VhOrch, option: tuple[str, ...],
                                                       request: pytest.FixtureRequest) -> None:
    vh("project", "add", "p")
    args, stored = STDIN_CHECKS[option]
    if TOKEN_REPO in args:
        url, _ = request.getfixturevalue("token_repo")
        args = [url if arg == TOKEN_REPO else arg for arg in args]
    refused = vh(*args, stdin="", check=False)
    assert refused.returncode == 1 and "standard input is empty" in refused.stderr
    value = "a value with  spaces " + random.token_hex(4)
    vh(*args, stdin=value + "\n")
    assert stored(vh, value), f"{' '.join(option)}: what it stored is not what `echo VALUE |` gave"


# -- the CLI ----------------------------------------------------------------------------------------------

def test_the_cli_sets_lists_and_removes_secrets_and_never_prints_a_value(vh: VhOrch) -> None:
    vh("project", "add", "p")
    set_ = with_stdin(vh, VALUE + "\n", "project", "secret", "set", "p", "API_KEY", "--value-stdin")
    assert "set" in set_.stdout and VALUE not in set_.stdout + set_.stderr
    again = with_stdin(vh, "other\n", "project", "secret", "set", "p", "API_KEY", "--value-stdin")
    assert "replaced" in again.stdout
    listed = vh.json("project", "secret", "list", "p")
    assert [s["name"] for s in listed] == ["API_KEY"] and "value" not in listed[0]
    assert stored_secret(vh, "p", "API_KEY") == "other"
    assert VALUE.encode() not in database_bytes(vh.home)
    for args, stdin, message in [
        (["set", "p", "9BAD"], "x\n", "is not an environment variable name"),
        (["set", "p", "VH_JOB_ID"], "x\n", "vh-orch or the command's shell sets itself"),
        (["set", "p", "OK"], None, "--value-stdin"),
        (["set", "nope", "OK"], "x\n", "no project named 'nope'"),
        (["rm", "p", "MISSING"], None, "no secret named 'MISSING'"),
    ]:
        refused = vh("project", "secret", *args, *(["--value-stdin"] if stdin else []), stdin=stdin, check=False)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    vh("project", "secret", "rm", "p", "API_KEY")
    assert vh.json("project", "secret", "list", "p") == []


# -- executions, the API and the pages, on one daemon -----------------------------------------------------

def browser_session(api: str, user: str) -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{api}/login", data={"username": user, "password": PASSWORD},
                          headers={"Origin": api}, allow_redirects=False, timeout=TIMEOUT)
    assert answer.status_code == 303, answer.text
    return session


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, str, dict[str, Client]]]:
    """One daemon (process runtime: the operator's CLI submits) with alice (project `sec`, shared with
    carol) and bob (project `bobs`)."""
    base = tmp_path_factory.mktemp("secrets")
    with installation(base / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        for user in ("alice", "bob", "carol"):
            with_stdin(vh, PASSWORD + "\n", "user", "add", user, "--password-stdin")
        vh("project", "add", "sec", "--owner", "alice")
        vh("project", "add", "bobs", "--owner", "bob")
        vh("project", "share", "sec", "carol")
        vh.project_dir = make_project(base, "leaky", STEPS)  # type: ignore[attr-defined]
        vh.start_daemon()
        api = vh.api_url()
        yield vh, api, {u: Client(api, vh.json("user", "token", u)["token"]) for u in ("alice", "bob", "carol", "admin")}


def put(client: Client, pid: str, name: str, value: str, **kw: Any) -> requests.Response:
    return requests.put(client.url(f"/api/v0/projects/{pid}/secrets/{name}/"), json={"value": value},
                        headers=client.headers, timeout=TIMEOUT, **kw)


def delete(client: Client, pid: str, name: str) -> requests.Response:
    return requests.delete(client.url(f"/api/v0/projects/{pid}/secrets/{name}/"), headers=client.headers,
                           timeout=TIMEOUT)


def test_a_secret_reaches_the_execution_and_no_copy_of_it_is_stored_or_shown(
        world: tuple[VhOrch, str, dict[str, Client]]) -> None:
    vh, api, clients = world
    alice = clients["alice"]
    pid = project_id(alice, "sec")
    assert put(alice, pid, "API_KEY", VALUE).status_code == 201
    assert put(alice, pid, "SHADOWED", "from-the-secret").status_code == 201
    created = vh.run_json("leak", "--project", "sec", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    info = vh.wait(created["id"])
    assert info["status"] == "complete", info

    lines = [json.loads(line) for line in vh("exec", "logs", str(info["id"]), "--json").stdout.splitlines()]
    texts = [line["text"] for line in lines]
    assert f"length={len(VALUE)}" in texts  # the whole value reached the command
    assert "***" in texts  # printed in two writes 0.3 s apart: masked all the same
    assert '{"key": "***", "n": 1}' in texts and "on stderr: ***" in texts
    assert "shadow=own" in texts  # the step's own variable wins, and the log says so
    assert any("own environment variable SHADOWED is used" in text for text in texts)

    shown = {
        "exec info": json.dumps(vh.json("exec", "info", str(info["id"]))),
        "exec logs": "\n".join(texts),
        "API execution": alice.get(f"/api/v0/executions/{info['id']}/").text,
        "API events": alice.get(f"/api/v0/executions/{info['id']}/events/").text,
        "API metadata": alice.get(f"/api/v0/executions/{info['id']}/metadata/").text,
        "API secrets": alice.get(f"/api/v0/projects/{pid}/secrets/").text,
    }
    page = browser_session(api, "alice")
    for path in (f"/projects/{pid}/", f"/projects/{pid}/secrets/", f"/executions/{info['id']}/"):
        answer = page.get(f"{api}{path}", timeout=TIMEOUT)
        assert answer.status_code == 200, path
        shown[path] = answer.text
    assert "API_KEY" in shown[f"/projects/{pid}/secrets/"]
    for where, text in shown.items():
        assert VALUE not in text, where
    assert VALUE.encode() not in database_bytes(vh.home)
    assert VALUE not in vh.daemon_log.read_text()


def test_a_secret_in_metadata_lines_and_output_metadata_files_is_masked_before_it_is_stored(
        world: tuple[VhOrch, str, dict[str, Client]]) -> None:
    vh, _, clients = world
    alice = clients["alice"]
    pid = project_id(alice, "sec")
    assert put(alice, pid, "API_KEY", VALUE).status_code in (200, 201)
    created = vh.run_json("meta", "--project", "sec", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    info = vh.wait(created["id"])
    assert info["status"] == "complete", info

    # Metadata lines: masked as bytes, and (a value written with \u escapes) once parsed.
    metadata = alice.get(f"/api/v0/executions/{info['id']}/metadata/")
    assert metadata.status_code == 200 and "***" in metadata.text, metadata.text
    texts = [json.loads(line)["text"] for line in vh("exec", "logs", str(info["id"]), "--json").stdout.splitlines()]
    assert '{"token": "***"}' in texts and '{"escaped": "***"}' in texts, texts
    # The sidecar and the jsonl line: the output's metadata holds the mask, its tags too.
    shown = vh.json("exec", "info", str(info["id"]))
    (output,) = shown["outputs"]
    assert output["metadata"] == {"token": "***", "nested": {"k": ["***"]}, "esc": "***", "valohai.tags": ["***"],
                                  "from_jsonl": "***"}, output
    assert output["tags"] == ["***"]

    tail = VALUE[1:]  # the value less its first letter: also what the \u-escaped forms hold
    for where, text in {"exec info": json.dumps(shown), "exec logs": "\n".join(texts),
                        "API metadata": metadata.text,
                        "API execution": alice.get(f"/api/v0/executions/{info['id']}/").text,
                        "API data": alice.get(f"/api/v0/data/?output_execution={info['id']}").text}.items():
        assert tail not in text, where
    assert tail.encode() not in database_bytes(vh.home)


def test_the_owner_manages_secrets_over_the_api_and_values_are_never_returned(
        world: tuple[VhOrch, str, dict[str, Client]]) -> None:
    vh, _, clients = world
    bob = clients["bob"]
    pid = project_id(bob, "bobs")
    first = put(bob, pid, "DB_PASSWORD", "one")
    assert first.status_code == 201 and "one" not in first.text
    again = put(bob, pid, "DB_PASSWORD", "two")
    assert again.status_code == 200 and again.json() == {"name": "DB_PASSWORD", "created": False}
    listed = bob.get(f"/api/v0/projects/{pid}/secrets/").json()
    assert [s["name"] for s in listed["results"]] == ["DB_PASSWORD"] and "two" not in json.dumps(listed)
    assert stored_secret(vh, "bobs", "DB_PASSWORD") == "two"
    bad = put(bob, pid, "not a name", "x")
    assert bad.status_code == 400 and "name" in bad.json()
    assert put(bob, pid, "EMPTY", "").status_code == 400
    assert delete(bob, pid, "DB_PASSWORD").status_code == 204
    assert delete(bob, pid, "DB_PASSWORD").status_code == 404
    assert bob.get(f"/api/v0/projects/{pid}/secrets/").json()["results"] == []


def test_another_user_cannot_read_or_change_a_projects_secrets(
        world: tuple[VhOrch, str, dict[str, Client]]) -> None:
    vh, api, clients = world
    alice, bob, carol, admin = (clients[u] for u in ("alice", "bob", "carol", "admin"))
    pid = project_id(alice, "sec")
    assert put(alice, pid, "HOSTILE_TARGET", "alices").status_code in (200, 201)
    for stranger in (bob, carol):  # carol is a member: she runs executions, she does not manage secrets
        assert stranger.get(f"/api/v0/projects/{pid}/secrets/").status_code == 404
        assert put(stranger, pid, "HOSTILE_TARGET", "changed").status_code == 404
        assert put(stranger, pid, "PLANTED", "planted").status_code == 404
        assert delete(stranger, pid, "HOSTILE_TARGET").status_code == 404
    for name in ("bob", "carol"):
        session = browser_session(api, name)
        assert session.get(f"{api}/projects/{pid}/secrets/", timeout=TIMEOUT).status_code == 404
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"',
                         session.get(f"{api}/account/", timeout=TIMEOUT).text).group(1)  # type: ignore[union-attr]
        posted = session.post(f"{api}/projects/{pid}/secrets", data={"name": "PLANTED", "value": "x", "csrf": csrf},
                              headers={"Origin": api}, timeout=TIMEOUT)
        assert posted.status_code == 404
    assert stored_secret(vh, "sec", "HOSTILE_TARGET") == "alices"
    assert "PLANTED" not in [s["name"] for s in admin.get(f"/api/v0/projects/{pid}/secrets/").json()["results"]]
    assert project_id(carol, "sec") == pid  # she does see the project itself


def test_the_project_page_sets_and_removes_secrets_with_the_csrf_token_only(
        world: tuple[VhOrch, str, dict[str, Client]]) -> None:
    vh, api, clients = world
    pid = project_id(clients["alice"], "sec")
    session = browser_session(api, "alice")
    page = session.get(f"{api}/projects/{pid}/secrets/", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    value = "web-" + random.token_hex(8)
    no_token = session.post(f"{api}/projects/{pid}/secrets", data={"name": "FROM_WEB", "value": value},
                            headers={"Origin": api}, timeout=TIMEOUT)
    assert no_token.status_code == 403
    made = session.post(f"{api}/projects/{pid}/secrets", data={"name": "FROM_WEB", "value": value, "csrf": csrf},
                        headers={"Origin": api}, timeout=TIMEOUT)
    assert made.status_code == 200 and "FROM_WEB" in made.text and value not in made.text
    assert stored_secret(vh, "sec", "FROM_WEB") == value
    removed = session.post(f"{api}/projects/{pid}/secrets/remove", data={"name": "FROM_WEB", "csrf": csrf},
                           headers={"Origin": api}, timeout=TIMEOUT)
    assert removed.status_code == 200 and 'data-secret="FROM_WEB"' not in removed.text
    assert "/secrets/" in session.get(f"{api}/projects/{pid}/", timeout=TIMEOUT).text  # the owner's link


# -- rotating the installation's key ----------------------------------------------------------------------

def encrypted_values(vh: VhOrch) -> dict[str, str]:
    """Every value stored encrypted, by where it is."""
    store = store_of(vh)
    values: dict[str, str] = {}
    for project in store.list_projects():
        rows = store.list_secrets(project.id)  # type: ignore[arg-type]
        values.update({f"{project.name} secret {r.name}": r.value for r in rows})
        for column in ("deploy_key_private", "repo_token"):
            if getattr(project, column) is not None:
                values[f"{project.name} {column}"] = getattr(project, column)
    values.update({f"registry {row.host}": row.password for row, _ in store.list_registries()})
    for hook in store.list_webhooks():
        values[f"webhook {hook.id} url"] = hook.url
        if hook.secret is not None:
            values[f"webhook {hook.id} secret"] = hook.secret
    return values


def opened(ring: KeyRing, where: str, value: str) -> str:
    from vh_orch.orchestrator.webhook_urls import open_url

    return open_url(value, ring.decrypt) if where.endswith(" url") else ring.decrypt(value).decode()


def test_rotate_key_reencrypts_every_stored_secret_and_then_the_old_key_can_go(
        world: tuple[VhOrch, str, dict[str, Client]], token_repo: tuple[str, list[str]]) -> None:
    from cryptography.fernet import Fernet

    vh, _, clients = world
    assert put(clients["alice"], project_id(clients["alice"], "sec"), "API_KEY", VALUE).status_code in (200, 201)
    with_stdin(vh, "repo-token\n", "project", "add", "rot-token", "--repo", token_repo[0], "--repo-token-stdin")
    vh("project", "add", "rot-key", "--repo", "ssh://git@127.0.0.1:9/x.git", "--deploy-key", "generate")
    with_stdin(vh, "registry-password\n", "registry", "add", "rot.test:5000", "--username", "u", "--password-stdin")
    with_stdin(vh, "hook-secret\n", "webhook", "add", "-p", "bobs", "--url", "http://127.0.0.1:9/rot/a-url-token",
               "--secret-stdin")
    key_file = vh.home / "secret.key"
    old, new = key_file.read_bytes().strip(), Fernet.generate_key()
    before = encrypted_values(vh)
    plain = {where: opened(KeyRing([old]), where, value) for where, value in before.items()}

    # Without the old key nothing opens: refused, and nothing changed.
    key_file.write_bytes(new + b"\n")
    refused = vh("rotate-key", check=False)
    assert refused.returncode == 1 and "does not open" in refused.stderr, refused.stderr
    assert encrypted_values(vh) == before

    key_file.write_bytes(new + b"\n" + old + b"\n")  # the new key first, the old one after it
    done = vh.json("rotate-key")
    assert done["reencrypted"] == len(before) and done["keys"] == 2, done
    assert all(done["by_kind"][kind] >= 1 for kind in (
        "project secrets", "deploy keys", "repository tokens", "registry passwords", "webhook secrets",
        "webhook URLs")), done
    key_file.write_bytes(new + b"\n")  # the old key removed
    after = encrypted_values(vh)
    assert after.keys() == before.keys()
    for where, value in after.items():
        assert value != before[where] and opened(KeyRing([new]), where, value) == plain[where], where
    assert stored_secret(vh, "sec", "API_KEY") == VALUE and repo_token(vh, "rot-token") == "repo-token"

    # The daemon reads the key as it goes: an execution still gets its secret, the token still fetches.
    created = vh.run_json("leak", "--project", "sec", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    info = vh.wait(created["id"])
    assert info["status"] == "complete", info
    texts = [json.loads(line)["text"] for line in vh("exec", "logs", str(info["id"]), "--json").stdout.splitlines()]
    assert f"length={len(VALUE)}" in texts and "***" in texts
    assert vh.json("project", "fetch", "rot-token")["refs"] == []
