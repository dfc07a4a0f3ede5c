"""Private repositories: a project's own deploy key against a real sshd on loopback whose git-shell account
takes that key alone, the Git server's host key pinned (a changed one refused, nothing fetched), an HTTPS
token against `git http-backend` behind Basic auth, and the deploy key shown to the project's owner alone."""

from __future__ import annotations

import base64
import glob
import http.server
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import sshhosts
from conftest import EXAMPLE, VhOrch, eventually
from test_users import PASSWORD, database_bytes, with_stdin

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
FORCED = 'command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"",no-pty,no-port-forwarding,no-agent-forwarding '


@dataclass
class GitServer:
    root: Path
    net: int
    repo: Path  # a bare repository with the demo project on `main`
    host: sshhosts.SSHHost

    @property
    def url(self) -> str:
        return f"ssh://root@{self.host.address}{self.repo}"

    def authorize(self, *public_keys: str) -> None:
        """These keys alone may log in, each to git-shell only (sshd reads the file at every login)."""
        (self.host.folder / "authorized_keys").write_text("".join(FORCED + key + "\n" for key in public_keys))


def bare_repo(root: Path) -> Path:
    work = root / "work"
    subprocess.run(["cp", "-r", str(EXAMPLE), str(work)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "demo"], check=True)
    bare = root / "private.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def new_commit(repo: Path, message: str) -> str:
    """A commit on the bare repository's main (made in a scratch clone); its sha."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["git", "clone", "-q", str(repo), scratch], check=True)
        subprocess.run([*GIT, "-C", scratch, "commit", "-q", "--allow-empty", "-m", message], check=True)
        subprocess.run(["git", "-C", scratch, "push", "-q", "origin", "main"], check=True)
        return subprocess.run(["git", "-C", scratch, "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()


def mirror_has(vh: VhOrch, project: str, sha: str) -> bool:
    mirror = vh.home / "repos" / f"{project}.git"
    return subprocess.run(["git", f"--git-dir={mirror}", "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A root sshd on 127.0.NET.9 whose only account is git-shell, serving one bare repository."""
    root = tmp_path_factory.mktemp("gitserver")
    repo = bare_repo(root)
    with sshhosts.free_net() as net:
        host = sshhosts.make_host(root, 9, net)
        host.start("", sftp=False)
        try:
            yield GitServer(root, net, repo, host)
        finally:
            host.stop()


def add_with_deploy_key(vh: VhOrch, server: GitServer, name: str, *extra: str) -> dict:  # type: ignore[type-arg]
    return vh.json("project", "add", name, "--repo", server.url, "--deploy-key", "generate", *extra)


def stored_project(vh: VhOrch, name: str) -> dict[str, str | None]:
    with closing(sqlite3.connect(vh.home / "state.db")) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM project WHERE name = ?", (name,)).fetchone())


def temporary_git_folders() -> set[str]:
    return set(glob.glob(f"{tempfile.gettempdir()}/vh-orch-git-*"))


def test_a_deploy_key_project_is_kept_before_its_key_is_installed_and_fetches_once_it_is(
        vh: VhOrch, git_server: GitServer) -> None:
    git_server.authorize(sshhosts.keygen(git_server.root / "someone_else", "someone-else"))
    folders_before = temporary_git_folders()
    added = add_with_deploy_key(vh, git_server, "priv")
    public = added["deploy_key"]
    assert public.startswith("ssh-ed25519 ") and added["git_host_keys"] == []
    assert "refused the project's deploy key" in added["fetch_error"]
    assert "priv" in [p["name"] for p in vh.json("project", "list")]
    refused = vh("project", "fetch", "priv", check=False)
    assert refused.returncode != 0 and "add the public key" in refused.stderr

    # The private half is in the database only encrypted with this installation's key.
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import serialization

    row = stored_project(vh, "priv")
    assert b"OPENSSH PRIVATE KEY" not in database_bytes(vh.home)
    private = Fernet((vh.home / "secret.key").read_bytes().strip()).decrypt(row["deploy_key_private"].encode())
    opened = serialization.load_ssh_private_key(private, password=None)
    assert opened.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
                                            ).decode() == " ".join(public.split()[:2])

    git_server.authorize(" ".join(public.split()[:2]))
    fetched = vh.json("project", "fetch", "priv")
    assert "main" in [r["ref"] for r in fetched["refs"]]
    assert fetched["pinned_host_keys"] == [git_server.host.host_key]  # learnt on the first success
    key = vh.json("project", "key", "priv")
    assert key["deploy_key"] == public and key["git_host_keys"] == [git_server.host.host_key]
    later = new_commit(git_server.repo, "later")
    assert vh.json("project", "fetch", "priv")["refs"] == [{"ref": "main", "identifier": later}]
    assert mirror_has(vh, "priv", later)
    newest = new_commit(git_server.repo, "newest")  # a submission fetches first, with the deploy key
    assert vh.run_json("train", "--project", "priv", "--commit", "main")["commit"]["identifier"] == newest
    # The key file and known_hosts went with each fetch: none made since the start stays (another
    # worker's fetch may hold one for a moment, and it goes too).
    eventually("the fetches' temporary folders to go", lambda: not (temporary_git_folders() - folders_before) or None,
               timeout=30)


def test_a_changed_host_key_stops_fetches_until_the_operator_pins_the_new_one(
        vh: VhOrch, git_server: GitServer) -> None:
    public = add_with_deploy_key(vh, git_server, "pinned")["deploy_key"]
    git_server.authorize(" ".join(public.split()[:2]))
    assert vh.json("project", "fetch", "pinned")["pinned_host_keys"] == [git_server.host.host_key]

    # Another server on the same address, with a host key of its own and the deploy key installed.
    impostor_folder = git_server.root / "impostor"
    impostor_folder.mkdir(exist_ok=True)
    impostor_key = sshhosts.keygen(impostor_folder / "host_key", "impostor")
    impostor = sshhosts.SSHHost(git_server.host.address, 22, impostor_folder, impostor_key)
    moved = new_commit(git_server.repo, "after the swap")
    git_server.host.stop()
    try:
        impostor.start(FORCED + " ".join(public.split()[:2]), sftp=False)
        refused = vh("project", "fetch", "pinned", check=False)
        assert refused.returncode != 0 and "host key is not the one pinned" in refused.stderr
        assert not mirror_has(vh, "pinned", moved)  # nothing fetched
        submitted = vh("exec", "run", "train", "--project", "pinned", "--commit", "main", check=False)
        assert submitted.returncode != 0 and "host key is not the one pinned" in submitted.stderr
        assert vh.json("project", "key", "pinned")["git_host_keys"] == [git_server.host.host_key]

        # The operator checked the new key with the server's owner and pins it.
        repinned = vh.json("project", "fetch", "pinned", "--git-host-key", f"{git_server.host.address} {impostor_key}")
        assert repinned["refs"] == [{"ref": "main", "identifier": moved}] and mirror_has(vh, "pinned", moved)
        assert vh.json("project", "key", "pinned")["git_host_keys"] == [impostor_key]
    finally:
        impostor.stop()
        git_server.host.start(FORCED + " ".join(public.split()[:2]), sftp=False)


def test_a_host_key_given_at_add_is_pinned_before_the_first_fetch(vh: VhOrch, git_server: GitServer) -> None:
    wrong = sshhosts.keygen(git_server.root / "not_the_server", "not-the-server")
    added = add_with_deploy_key(vh, git_server, "given", "--git-host-key", wrong)
    assert added["git_host_keys"] == [wrong] and "host key is not the one pinned" in added["fetch_error"]
    git_server.authorize(" ".join(added["deploy_key"].split()[:2]))
    refused = vh("project", "fetch", "given", check=False)
    assert refused.returncode != 0 and "host key is not the one pinned" in refused.stderr

    bad = vh("project", "add", "bad", "--repo", git_server.url, "--deploy-key", "generate", "--git-host-key",
             "ssh-ed25519 AAAAnot-a-key", check=False)
    assert bad.returncode != 0 and "--git-host-key" in bad.stderr
    assert "bad" not in [p["name"] for p in vh.json("project", "list")]


def test_a_rotated_deploy_key_replaces_the_old_one(vh: VhOrch, git_server: GitServer) -> None:
    old = add_with_deploy_key(vh, git_server, "rotating")["deploy_key"]
    git_server.authorize(" ".join(old.split()[:2]))
    vh("project", "fetch", "rotating")
    new = vh.json("project", "key", "rotating", "--rotate")["deploy_key"]
    assert new.startswith("ssh-ed25519 ") and new != old
    refused = vh("project", "fetch", "rotating", check=False)  # the server still holds the old key alone
    assert refused.returncode != 0 and "refused the project's deploy key" in refused.stderr
    git_server.authorize(" ".join(new.split()[:2]))
    vh("project", "fetch", "rotating")


def test_the_deploy_key_is_shown_to_the_projects_owner_alone(vh: VhOrch, git_server: GitServer) -> None:
    for name in ("alice", "bob"):
        with_stdin(vh, PASSWORD + "\n", "user", "add", name, "--password-stdin")
    added = add_with_deploy_key(vh, git_server, "alices", "--owner", "alice")
    vh("project", "share", "alices", "bob")
    vh.start_daemon()
    api = vh.api_url()
    project_id = added["id"]
    tokens = {name: vh.json("user", "token", name)["token"] for name in ("alice", "bob", "admin")}

    def deploy_key(who: str, method: str = "get", path: str = "") -> requests.Response:
        return requests.request(method, f"{api}/api/v0/projects/{project_id}/deploy-key/{path}",
                                headers={"Authorization": f"Token {tokens[who]}"}, timeout=30)

    shown = deploy_key("alice")
    assert shown.status_code == 200 and shown.json()["deploy_key"] == added["deploy_key"]
    assert "PRIVATE" not in shown.text
    for other in ("bob", "admin"):  # a member, and an administrator who is not the owner
        assert deploy_key(other).status_code == 404
        assert deploy_key(other, "post", "rotate/").status_code == 404
    assert requests.get(f"{api}/api/v0/projects/999999/deploy-key/", timeout=30,
                        headers={"Authorization": f"Token {tokens['alice']}"}).status_code == 404
    # The API's fetch uses the project's key too (bob, a member, may fetch: the key stays the daemon's).
    fetched = requests.post(f"{api}/api/v0/projects/{project_id}/fetch/", timeout=60,
                            headers={"Authorization": f"Token {tokens['bob']}"}).json()
    assert "refused the project's deploy key" in fetched["errors"][0]
    git_server.authorize(" ".join(added["deploy_key"].split()[:2]))
    fetched = requests.post(f"{api}/api/v0/projects/{project_id}/fetch/", timeout=60,
                            headers={"Authorization": f"Token {tokens['bob']}"}).json()
    assert fetched["errors"] == [] and "main" in [c["ref"] for c in fetched["commits"]]
    rotated = deploy_key("alice", "post", "rotate/")
    assert rotated.status_code == 200 and rotated.json()["deploy_key"] not in (None, added["deploy_key"])

    # The project page: the owner sees the key, a member sees the page without it.
    pages = {}
    for who in ("alice", "bob"):
        browser = requests.Session()
        signed = browser.post(f"{api}/login", data={"username": who, "password": PASSWORD, "next": "/"},
                              headers={"Origin": api}, timeout=30)
        assert signed.status_code == 200, signed.text
        pages[who] = browser.get(f"{api}/projects/{project_id}/", timeout=30).text
    assert rotated.json()["deploy_key"] in pages["alice"] and 'id="repo-access-card"' in pages["alice"]
    assert 'id="repo-access-card"' not in pages["bob"] and "ssh-ed25519" not in pages["bob"]


# --- HTTPS with a token ----------------------------------------------------------------------------

TOKEN = "tok-" + "x" * 30 + "-secret"


class GitHTTP(http.server.BaseHTTPRequestHandler):
    """`git http-backend` (smart HTTP) behind Basic auth with the token as the password."""

    root: Path
    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def authorized(self, given: str) -> bool:
        return given == "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    def _serve(self) -> None:
        given = self.headers.get("Authorization") or ""
        self.seen.append(given)
        if not self.authorized(given):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "PATH": "/usr/bin:/bin",
               "CONTENT_TYPE": self.headers.get("Content-Type") or "", "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding") or "",
               "GIT_PROTOCOL": self.headers.get("Git-Protocol") or ""}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
        status = next((int(value.split()[0]) for name, value in headers if name == "Status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name != "Status":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_like(git_server: GitServer) -> Iterator[tuple[str, list[str]]]:
    """(the repository's URL on a loopback HTTP server, the Authorization headers it saw)."""
    seen: list[str] = []
    handler = type("Handler", (GitHTTP,), {"root": git_server.repo.parent, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{git_server.repo.name}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_repository_is_fetched_with_a_token_kept_out_of_urls_files_and_the_database(
        vh: VhOrch, https_like: tuple[str, list[str]]) -> None:
    url, seen = https_like
    refused = with_stdin(vh, "not-the-token\n", "project", "add", "wrong", "--repo", url, "--repo-token-stdin",
                         check=False)
    assert refused.returncode != 0
    assert "wrong" not in [p["name"] for p in vh.json("project", "list")]
    assert not (vh.home / "repos" / "wrong.git").exists()

    added = with_stdin(vh, TOKEN + "\n", "project", "add", "tokened", "--repo", url, "--repo-token-stdin", "--json")
    assert added.json()["has_token"] is True and added.json()["fetch_error"] is None
    # The token reached the server, its trailing newline dropped (as `echo TOKEN |` sends it).
    assert "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() in seen
    assert vh.json("project", "fetch", "tokened")["refs"] == []
    mirror = vh.home / "repos" / "tokened.git"
    assert TOKEN.encode() not in database_bytes(vh.home)
    assert not [p for p in mirror.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert stored_project(vh, "tokened")["repo_url"] == url

    plain = with_stdin(vh, TOKEN + "\n", "project", "add", "plain", "--repo", "http://192.0.2.1/x.git",
                       "--repo-token-stdin", check=False)
    assert plain.returncode != 0 and "HTTPS" in plain.stderr  # never sent over plain HTTP off this machine


# --- the pieces, without a server ------------------------------------------------------------------

def test_host_keys_are_read_from_known_hosts_keyscan_and_bare_lines_and_a_mismatched_type_is_refused(
        tmp_path: Path) -> None:
    from vh_orch.errors import UserInputError
    from vh_orch.storage.git_auth import fingerprint, parse_host_keys

    key = sshhosts.keygen(tmp_path / "k", "k")
    kind, blob = key.split()
    for text in (key, f"git.example.com {key}", f"[git.example.com]:2222,10.0.0.1 {key} comment",
                 f"# ssh-keyscan\n\n{key}\n{key}\n"):
        assert parse_host_keys(text) == (key,), text
    for text in (f"ssh-rsa {blob}", f"{kind} AAAA{blob}", f"@cert-authority * {key}", "ssh-ed25519", "", "hello"):
        with pytest.raises(UserInputError, match="--git-host-key"):
            parse_host_keys(text)
    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True,
                            check=True).stdout
    assert fingerprint(key) == listed.split()[1]


def test_a_git_session_keeps_the_key_and_token_in_private_files_and_the_environment_and_removes_them() -> None:
    from vh_orch.storage.git_auth import TOKEN_ENV, GitCredentials, generate_deploy_key, git_session

    _, private = generate_deploy_key("t")
    with git_session(GitCredentials(private_key=private, token=TOKEN)) as session:
        env = session.env
        folder = Path(env["GIT_ASKPASS"]).parent
        assert folder.stat().st_mode & 0o777 == 0o700
        key_file = folder / "deploy_key"
        assert key_file.read_bytes() == private and key_file.stat().st_mode & 0o777 == 0o600
        ssh = env["GIT_SSH_COMMAND"]
        assert f"-i {key_file}" in ssh and "StrictHostKeyChecking=accept-new" in ssh
        assert [name for name, value in env.items() if TOKEN in value] == [TOKEN_ENV]
        answers = [subprocess.run([env["GIT_ASKPASS"], prompt], env=env, capture_output=True, text=True,
                                  check=True).stdout for prompt in ("Username for 'https://h': ", "Password: ")]
        assert answers == ["x-access-token\n", TOKEN + "\n"]
    assert not folder.exists()
    with pytest.raises(RuntimeError), git_session(GitCredentials(private_key=private)) as failing:
        kept = Path(failing.env["GIT_SSH_COMMAND"].split("-i ", 1)[1].split()[0])
        raise RuntimeError("the fetch failed")
    assert not kept.parent.exists()


def test_a_stdin_value_loses_exactly_one_trailing_newline(vh: VhOrch, https_like: tuple[str, list[str]]) -> None:
    url, seen = https_like
    seen.clear()
    # One newline dropped, the other kept: a token of two lines is refused before anything is sent.
    two = with_stdin(vh, TOKEN + "\n\n", "project", "add", "two", "--repo", url, "--repo-token-stdin", check=False)
    assert two.returncode != 0 and "more than one line" in two.stderr and seen == []
    empty = with_stdin(vh, "\n", "project", "add", "empty", "--repo", url, "--repo-token-stdin", check=False)
    assert empty.returncode != 0 and "empty" in empty.stderr and seen == []
    assert with_stdin(vh, TOKEN + "\r\n", "project", "add", "crlf", "--repo", url, "--repo-token-stdin",
                      "--json").json()["has_token"]


def test_a_new_installation_key_reencrypts_deploy_keys_and_tokens(vh: VhOrch, git_server: GitServer,
                                                                   https_like: tuple[str, list[str]]) -> None:
    from cryptography.fernet import Fernet

    from vh_orch.keyring import KeyRing
    from vh_orch.orchestrator.store import Store

    add_with_deploy_key(vh, git_server, "keyed")
    with_stdin(vh, TOKEN + "\n", "project", "add", "tokened", "--repo", https_like[0], "--repo-token-stdin")
    before = {name: stored_project(vh, name) for name in ("keyed", "tokened")}
    old = (vh.home / "secret.key").read_bytes().strip()
    new = Fernet.generate_key()
    ring = KeyRing([new, old])
    counts = Store(f"sqlite:///{vh.home / 'state.db'}").reencrypt_secrets(ring.rotate)
    assert (counts["deploy keys"], counts["repository tokens"], sum(counts.values())) == (1, 1, 2)
    (vh.home / "secret.key").write_bytes(new + b"\n")  # the old key dropped: the values open with the new one
    assert vh.json("project", "fetch", "tokened")["refs"] == []  # the token opened with the new key alone
    only_new = KeyRing([new])
    for name, column in (("keyed", "deploy_key_private"), ("tokened", "repo_token")):
        stored = stored_project(vh, name)[column]
        assert stored != before[name][column]
        assert only_new.decrypt(stored) == Fernet(old).decrypt(before[name][column].encode())
    assert only_new.decrypt(stored_project(vh, "tokened")["repo_token"]) == TOKEN.encode()
