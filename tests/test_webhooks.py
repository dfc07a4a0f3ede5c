"""Webhooks (issue 30): a project's ended executions, tasks and pipelines are POSTed to a receiver, signed,
retried from stored rows with back-off (across a daemon restart), each try recorded; the project's owner
manages them through the API, where the fetch policy keeps them off the daemon's own networks, and nobody
else can read or change them (404)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import VhOrch, eventually, installation, make_project
from quietserver import QuietHTTPServer, shut

RECEIVER_ADDRESS = "127.0.0.7"
SECRET = "wh-s3cret-Value-5f1c"
STEPS = """
- step:
    name: hello
    image: vh-orch/busybox:test
    command: echo hello
"""
TIMEOUT = 30
PASSWORD = "correct-horse-battery-staple"


class Receiver:
    """A webhook receiver on its own loopback address: records every POST (path, headers, body); a
    path under /fail-once/ answers 500 the first time it is POSTed to, 204 after; /hang answers once
    `release` is set (at most 20 s later)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.posts.append((self.path, dict(self.headers.items()), body))
                    fail = self.path.startswith("/fail-once/") and self.path not in receiver._failed
                    receiver._failed.add(self.path)
                if self.path == "/hang":
                    receiver.release.wait(20)
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = QuietHTTPServer((RECEIVER_ADDRESS, 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.2,), name="webhook-receiver", daemon=True).start()
        self.url = f"http://{RECEIVER_ADDRESS}:{self.server.server_address[1]}"

    def posts_to(self, path: str) -> list[tuple[str, dict[str, str], bytes]]:
        with self._lock:
            return [p for p in self.posts if p[0] == path]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, Receiver]]:
    """One daemon running `local` executions as processes; alice owns `hooks` and `alices`, bob owns `bobs`,
    the administrator `mixed`."""
    root = tmp_path_factory.mktemp("webhooks")
    receiver = Receiver()
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        for user in ("alice", "bob"):
            vh("user", "add", user, "--password-stdin", stdin=PASSWORD + "\n")
        for project, owner in (("hooks", "alice"), ("alices", "alice"), ("bobs", "bob"), ("mixed", "admin"),
                               ("slow", "admin"), ("paged", "alice"), ("sneaky", "alice"), ("urls", "alice")):
            vh("project", "add", project, "--owner", owner)
        vh.project_dir = make_project(root, "proj", STEPS)  # type: ignore[attr-defined]
        vh.start_daemon()
        try:
            yield vh, receiver
        finally:
            shut(receiver.server)


class Client:
    def __init__(self, vh: VhOrch, user: str) -> None:
        self.api = vh.api_url()
        self.headers = {"Authorization": f"Token {vh.json('user', 'token', user)['token']}"}

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.api}{path}", headers=self.headers, timeout=TIMEOUT, **kw)

    def project_id(self, name: str) -> str:
        found = [p["id"] for p in self.call("GET", "/api/v0/projects/").json()["results"] if p["name"] == name]
        assert len(found) == 1, name
        return str(found[0])


def state_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.glob("state.db*")))


def stored_secret(vh: VhOrch, webhook_id: int) -> bytes:
    from vh_orch.keyring import KeyRing

    with sqlite3.connect(vh.home / "state.db") as db:
        (token,) = db.execute("SELECT secret FROM webhook WHERE id = ?", (webhook_id,)).fetchone()
    return KeyRing.load(vh.home, {}).decrypt(token)


# -- the daemon: a failed delivery is retried, signed, after a restart ---------------------------------


def test_a_receiver_that_fails_the_first_delivery_gets_a_signed_retry_after_a_restart(
        world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    path = "/fail-once/executions"
    hook = vh.json("webhook", "add", "--project", "hooks", "--url", receiver.url + path,
                   "--events", "execution.ended", "--secret-stdin", stdin=SECRET + "\n")
    assert hook["has_secret"] and SECRET not in json.dumps(hook)
    assert stored_secret(vh, hook["id"]) == SECRET.encode()  # one trailing newline dropped, no more

    created = vh.run_json("hello", "--project", "hooks", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    assert vh.wait(created["id"])["status"] == "complete"
    eventually("the first (refused) POST", lambda: receiver.posts_to(path))
    first = eventually("the first try recorded", lambda: [
        d for d in vh.json("webhook", "deliveries", str(hook["id"])) if d["attempts"] == 1])[0]
    assert first["status"] == "pending" and first["last_status_code"] == 500 and first["next_attempt_at"]
    assert [t["status_code"] for t in first["tries"]] == [500]

    vh.stop_daemon()  # the retry is a row: a new daemon sends it
    vh.start_daemon()
    eventually("the retried POST", lambda: len(receiver.posts_to(path)) >= 2, timeout=60)
    done = eventually("the delivery recorded as delivered", lambda: [
        d for d in vh.json("webhook", "deliveries", str(hook["id"])) if d["status"] == "delivered"])[0]
    assert done["attempts"] == 2 and [t["status_code"] for t in done["tries"]] == [500, 204]
    assert done["delivered_at"] and done["event_id"] == first["event_id"]

    (_, h1, b1), (_, h2, body) = receiver.posts_to(path)[:2]
    assert b1 == body and h1["X-Vh-Orch-Event-Id"] == h2["X-Vh-Orch-Event-Id"] == done["event_id"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(h2["X-Vh-Orch-Signature"], expected)
    assert h2["X-Vh-Orch-Event"] == "execution.ended" and h2["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert sent["event"] == "execution.ended"
    execution = sent["execution"]
    assert (execution["id"], execution["counter"], execution["project"], execution["status"], execution["step"]) == (
        created["id"], created["counter"], "hooks", "complete", "hello")
    assert execution["url"].startswith("http://127.0.0.1:") and execution["url"].endswith(
        f"/executions/{created['id']}/")
    assert SECRET.encode() not in state_bytes(vh.home)


def test_a_webhook_only_hears_the_events_it_asked_for_and_slack_gets_text(world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    tasks_only = vh.json("webhook", "add", "-p", "mixed", "--url", receiver.url + "/tasks-only",
                         "--events", "task.ended")
    slack = vh.json("webhook", "add", "-p", "mixed", "--url", receiver.url + "/slack", "--format", "slack",
                    "--events", "execution.ended,pipeline.ended")
    assert not slack["has_secret"]
    created = vh.run_json("hello", "--project", "mixed", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    assert vh.wait(created["id"])["status"] == "complete"
    _, headers, body = eventually("the slack POST", lambda: receiver.posts_to("/slack"))[0]
    assert "X-Vh-Orch-Signature" not in headers
    text = json.loads(body)
    assert list(text) == ["text"] and f"mixed execution #{created['counter']}" in text["text"]
    assert "ended complete" in text["text"]
    assert vh.json("webhook", "deliveries", str(tasks_only["id"])) == []
    assert receiver.posts_to("/tasks-only") == []


def test_a_receiver_that_never_answers_holds_up_nothing(world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    for path in ("/hang", "/after"):
        vh("webhook", "add", "-p", "slow", "--url", receiver.url + path, "--events", "execution.ended")
    try:
        first = vh.run_json("hello", "--project", "slow", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
        eventually("the POST that hangs", lambda: receiver.posts_to("/hang"))
        second = vh.run_json("hello", "--project", "slow", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
        assert vh.wait(second["id"])["status"] == "complete"
        eventually("both ends at the other receiver", lambda: len(receiver.posts_to("/after")) == 2)
        assert sorted(json.loads(body)["execution"]["id"] for _, _, body in receiver.posts_to("/after")) == [
            first["id"], second["id"]]
    finally:
        receiver.release.set()


# -- what every end queues, in its own transaction ------------------------------------------------------


def test_every_end_of_an_execution_task_or_pipeline_queues_one_delivery_per_webhook(db_url: str) -> None:
    from test_state import seeded

    from vh_orch.orchestrator.models import Execution, Pipeline, Task, Webhook
    from vh_orch.values import ExecutionStatus, PipelineStatus, TaskStatus

    store, seeded_project, seeded_commit, seeded_env = seeded(db_url)
    store.public_url = "https://orch.example.com"
    project, commit, env = seeded_project.id, seeded_commit.id, seeded_env.id
    other = store.create_project("q", None, None).id
    assert project is not None and other is not None and commit is not None and env is not None

    def hook(project_id: int, url: str, events: list[str]) -> int:
        made = store.add_webhook(Webhook(project_id=project_id, url=url, events=events)).id
        assert made is not None
        return made

    every = hook(project, "http://a.invalid/", ["execution.ended", "task.ended", "pipeline.ended"])
    tasks_only = hook(project, "http://b.invalid/", ["task.ended"])
    elsewhere = hook(other, "http://c.invalid/", ["execution.ended"])

    execution = store.create_execution(Execution(project_id=project, commit_id=commit, step="train<b>", command="true",
                                                 environment_id=env, counter=0)).id
    assert execution is not None
    assert store.webhook_deliveries(every) == []
    store.set_status(execution, ExecutionStatus.STARTED)
    store.set_status(execution, ExecutionStatus.ERROR, reason="exit code 3")
    store.set_status(execution, ExecutionStatus.COMPLETE)  # a final status stays
    task = store.create_task(Task(project_id=project, commit_id=commit, step="s", type="grid", environment_id=env,
                                  counter=0)).id
    assert task is not None
    store.set_task_status(task, TaskStatus.STARTED)
    store.set_task_status(task, TaskStatus.COMPLETE)
    store.set_task_status(task, TaskStatus.ERROR)
    pipeline = store.create_pipeline(Pipeline(project_id=project, commit_id=commit, counter=0), []).id
    assert pipeline is not None
    store.set_pipeline_status(pipeline, PipelineStatus.STOPPED, reason="asked")

    bodies = {d.event: json.loads(d.body) for d in store.webhook_deliveries(every)}
    assert sorted(bodies) == ["execution.ended", "pipeline.ended", "task.ended"]
    shown = bodies["execution.ended"]["execution"]
    assert (shown["id"], shown["project"], shown["status"], shown["status_reason"], shown["step"], shown["url"]) == (
        execution, "p", "error", "exit code 3", "train<b>", f"https://orch.example.com/executions/{execution}/")
    assert (bodies["task.ended"]["task"]["status"], bodies["task.ended"]["task"]["counter"]) == ("complete", 1)
    assert (bodies["pipeline.ended"]["pipeline"]["status"], bodies["pipeline.ended"]["pipeline"]["status_reason"]) == (
        "stopped", "asked")
    assert [d.event for d in store.webhook_deliveries(tasks_only)] == ["task.ended"]
    assert store.webhook_deliveries(elsewhere) == []

    # claimed deliveries are held (no second sender takes them), and a failed try comes back after its back-off
    due = store.claim_due_deliveries(10, hold_s=120)
    assert len(due) == 4 and store.claim_due_deliveries(10, hold_s=120) == []
    from vh_orch.orchestrator.webhooks import next_try_at

    store.record_delivery_try(due[0].id, datetime.now(UTC), 502, "HTTP 502", next_try_at(1, datetime.now(UTC)))
    row = next(d for d in store.webhook_deliveries(due[0].webhook_id) if d.id == due[0].id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 502)
    store.record_delivery_try(due[1].id, datetime.now(UTC), None, "refused", None)
    row = next(d for d in store.webhook_deliveries(due[1].webhook_id) if d.id == due[1].id)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "refused")

    store.remove_webhook(every)
    assert store.webhook_deliveries(every) == []


# -- pure parts ------------------------------------------------------------------------------------------


def test_retries_back_off_over_about_an_hour_and_the_first_comes_within_15_seconds() -> None:
    from vh_orch.orchestrator.webhooks import next_try_at

    now = datetime(2026, 1, 1)
    times = []
    attempts = 1
    while (at := next_try_at(attempts, now)) is not None:
        times.append(at - now)
        attempts += 1
    assert times[0] <= timedelta(seconds=15)
    assert attempts >= 5, "at least 5 tries"
    assert timedelta(minutes=45) <= sum(times, timedelta()) <= timedelta(minutes=90)
    assert times == sorted(times)


def test_slack_text_keeps_anyones_text_as_text() -> None:
    from vh_orch.orchestrator.store.webhooks import slack_text

    text = slack_text({"event": "execution.ended", "execution": {
        "project": "p", "counter": 4, "step": "<!channel> hi", "status": "error",
        "status_reason": "a & b <http://evil|x>", "url": "https://orch.example.com/executions/9/"}})
    assert text.startswith("<https://orch.example.com/executions/9/|p execution #4>")
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "&lt;http://evil|x&gt;" in text
    assert "a &amp; b" in text


# -- the CLI's values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "kept"), [("v\n", "v"), ("v", "v"), ("v\n\n", "v\n"), ("v\r\n", "v"),
                                             (" v \n", " v ")])
def test_secret_stdin_drops_one_trailing_newline(world: tuple[VhOrch, Receiver], given: str, kept: str) -> None:
    vh, receiver = world
    hook = vh.json("webhook", "add", "-p", "bobs", "--url", receiver.url + "/never", "--secret-stdin", stdin=given)
    try:
        assert stored_secret(vh, hook["id"]) == kept.encode()
    finally:
        vh("webhook", "rm", str(hook["id"]))


def test_the_cli_refuses_bad_values_and_names_them(world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    for args, words in ((("--url", "ftp://x/"), "http"), (("--url", "http://u:p@x/"), "password"),
                        (("--url", receiver.url, "--events", "execution.started"), "execution.started"),
                        (("--url", receiver.url, "--format", "xml"), "json or slack"),
                        (("--url", receiver.url, "--secret-stdin"), "empty")):
        out = vh("webhook", "add", "-p", "bobs", *args, check=False, stdin="")
        assert out.returncode != 0 and words in out.stderr, (args, out.stderr)
    assert vh("webhook", "rm", "999999", check=False).returncode != 0
    assert vh("webhook", "deliveries", "999999", check=False).returncode != 0


# -- the API: the owner's, nobody else's ----------------------------------------------------------------


def test_only_the_owner_manages_a_projects_webhooks_and_the_api_keeps_them_off_local_networks(
        world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    alice, bob, admin = Client(vh, "alice"), Client(vh, "bob"), Client(vh, "admin")
    pid = alice.project_id("alices")
    hooks = f"/api/v0/projects/{pid}/webhooks/"

    refused = alice.call("POST", hooks, json={"url": receiver.url + "/api", "events": ["execution.ended"]})
    assert refused.status_code == 400 and "own networks" in refused.json()["url"][0]["message"], refused.text
    for url in ("http://localhost:9/x", "http://169.254.169.254/latest", "http://[::1]:80/", "http://10.1.2.3/"):
        assert alice.call("POST", hooks, json={"url": url}).status_code == 400, url
    bad = alice.call("POST", hooks, json={"url": "https://hooks.example.com/x", "events": "execution.begun"})
    assert bad.status_code == 400 and "events" in bad.json()

    made = alice.call("POST", hooks, json={"url": "https://hooks.example.com/x", "events": "task.ended,pipeline.ended",
                                           "secret": SECRET, "format": "slack"})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert SECRET not in made.text and hook["has_secret"] and hook["restricted"] and hook["created_by"] == "alice"
    assert hook["events"] == ["task.ended", "pipeline.ended"]
    listed = alice.call("GET", hooks)
    assert [w["id"] for w in listed.json()["results"]] == [hook["id"]] and SECRET not in listed.text
    assert alice.call("GET", f"/api/v0/webhooks/{hook['id']}/deliveries/").json()["results"] == []

    # bob: not his project, nor his webhook; a member of the project is not its owner either
    vh("project", "share", "alices", "bob")
    try:
        for method, path, body in (("GET", hooks, None), ("POST", hooks, {"url": "https://hooks.example.com/b"}),
                                   ("GET", f"/api/v0/webhooks/{hook['id']}/deliveries/", None),
                                   ("DELETE", f"/api/v0/webhooks/{hook['id']}/", None),
                                   ("DELETE", "/api/v0/webhooks/999999/", None)):
            answer = bob.call(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert SECRET not in answer.text and "hooks.example.com" not in answer.text
    finally:
        vh("project", "unshare", "alices", "bob")
    assert [w["id"] for w in vh.json("webhook", "list", "-p", "alices") if w["id"] == hook["id"]] == [hook["id"]]
    assert bob.call("GET", f"/api/v0/projects/{bob.project_id('bobs')}/webhooks/").status_code == 200

    assert [w["id"] for w in admin.call("GET", hooks).json()["results"]] == [hook["id"]]
    assert alice.call("DELETE", f"/api/v0/webhooks/{hook['id']}/").status_code == 200
    assert alice.call("GET", hooks).json()["results"] == []
    assert SECRET.encode() not in state_bytes(vh.home)


def test_a_name_that_resolves_into_loopback_is_refused_where_an_api_webhook_connects(
        world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    alice = Client(vh, "alice")
    port = receiver.server.server_address[1]
    # `127.7` is a name to the URL check (IPv4's shorthand: the C library resolves it to 127.0.0.7, no DNS)
    made = alice.call("POST", f"/api/v0/projects/{alice.project_id('sneaky')}/webhooks/",
                      json={"url": f"http://127.7:{port}/sneaky", "events": ["execution.ended"]})
    assert made.status_code == 201, made.text
    operators = vh.json("webhook", "add", "-p", "sneaky", "--url", f"http://127.7:{port}/operator",
                        "--events", "execution.ended")  # the operator's CLI is not restricted
    ran = vh.run_json("hello", "--project", "sneaky", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    assert vh.wait(ran["id"])["status"] == "complete"
    eventually("the operator's webhook delivered", lambda: receiver.posts_to("/operator"))
    tried = eventually("the refused try recorded", lambda: [
        d for d in alice.call("GET", f"/api/v0/webhooks/{made.json()['id']}/deliveries/").json()["results"]
        if d["attempts"] >= 1])[0]
    assert tried["status"] == "pending" and tried["last_status_code"] is None
    assert "127.0.0.7 is a loopback address" in tried["last_error"], tried
    assert receiver.posts_to("/sneaky") == []
    for hook in (made.json()["id"], operators["id"]):
        vh("webhook", "rm", str(hook))


def test_a_webhooks_url_is_stored_encrypted_and_shown_by_its_host_and_last_characters_alone(
        world: tuple[VhOrch, Receiver]) -> None:
    vh, receiver = world
    token = "T0k" + secrets.token_hex(10)  # as in Slack's incoming-webhook URLs: the path is the credential
    delivered = f"/services/T0/B0/{token}"
    dead = f"http://{RECEIVER_ADDRESS}:1/services/T0/B1/{token}x"  # nothing listens: the error quotes the path
    hook = vh.json("webhook", "add", "-p", "urls", "--url", receiver.url + delivered, "--events", "execution.ended")
    refused = vh.json("webhook", "add", "-p", "urls", "--url", dead, "--events", "execution.ended")
    assert hook["url"] == f"{receiver.url}/…{token[-4:]}"
    assert refused["url"] == f"http://{RECEIVER_ADDRESS}:1/…{token[-3:]}x"
    ran = vh.run_json("hello", "--project", "urls", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    assert vh.wait(ran["id"])["status"] == "complete"
    eventually("the POST to the whole URL", lambda: receiver.posts_to(delivered))  # the sender opened it
    tried = eventually("the refused try recorded", lambda: [
        d for d in vh.json("webhook", "deliveries", str(refused["id"])) if d["attempts"] >= 1])[0]
    assert tried["last_status_code"] is None and "/…" in tried["last_error"], tried

    alice = Client(vh, "alice")
    pid = alice.project_id("urls")
    browser, site = signed_in(vh, "alice")
    page = browser.get(f"{site}/projects/{pid}/", timeout=TIMEOUT).text
    assert f"…{token[-4:]}" in page
    shown = {"CLI list": vh("webhook", "list", "-p", "urls").stdout,
             "CLI list --json": json.dumps(vh.json("webhook", "list", "-p", "urls")),
             "CLI deliveries": json.dumps(tried),
             "API list": alice.call("GET", f"/api/v0/projects/{pid}/webhooks/").text,
             "API deliveries": alice.call("GET", f"/api/v0/webhooks/{refused['id']}/deliveries/").text,
             "page": page}
    for where, text in shown.items():
        assert token not in text, where
    assert token.encode() not in state_bytes(vh.home)
    assert token not in vh.daemon_log.read_text()
    for made in (hook, refused):
        vh("webhook", "rm", str(made["id"]))


# -- the project page ------------------------------------------------------------------------------------


def signed_in(vh: VhOrch, user: str) -> tuple[requests.Session, str]:
    site = vh.api_url()
    browser = requests.Session()
    browser.trust_env = False
    answer = browser.post(f"{site}/login", data={"username": user, "password": PASSWORD, "next": "/"},
                          headers={"Origin": site}, timeout=TIMEOUT, allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return browser, site


def test_the_project_page_shows_webhooks_to_the_owner_only_and_adds_them_with_the_csrf_token(
        world: tuple[VhOrch, Receiver]) -> None:
    vh, _ = world
    pid = Client(vh, "alice").project_id("hooks")
    browser, site = signed_in(vh, "alice")
    page = browser.get(f"{site}/projects/{pid}/", timeout=TIMEOUT)
    assert page.status_code == 200 and 'id="webhooks-card"' in page.text and "/static/webhooks.js" in page.text
    assert browser.get(f"{site}/static/webhooks.js", timeout=TIMEOUT).status_code == 200
    csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    body = {"url": "https://hooks.example.com/page", "events": ["pipeline.ended"], "secret": SECRET}
    path = f"{site}/api/v0/projects/{pid}/webhooks/"
    assert browser.post(path, json=body, headers={"Origin": site}, timeout=TIMEOUT).status_code == 403  # no token
    made = browser.post(path, json=body, headers={"Origin": site, "X-CSRF-Token": csrf}, timeout=TIMEOUT)
    assert made.status_code == 201, made.text
    page = browser.get(f"{site}/projects/{pid}/", timeout=TIMEOUT).text
    assert "https://hooks.example.com/…page" in page and "hooks.example.com/page" not in page and SECRET not in page

    vh("project", "share", "hooks", "bob")
    try:
        bobs_browser, _ = signed_in(vh, "bob")
        bobs_view = bobs_browser.get(f"{site}/projects/{pid}/", timeout=TIMEOUT)
        assert bobs_view.status_code == 200  # a member sees the project, not its webhooks
        assert "webhooks-card" not in bobs_view.text and "hooks.example.com" not in bobs_view.text
    finally:
        vh("project", "unshare", "hooks", "bob")
    removed = browser.delete(f"{site}/api/v0/webhooks/{made.json()['id']}/",
                             headers={"Origin": site, "X-CSRF-Token": csrf}, timeout=TIMEOUT)
    assert removed.status_code == 200, removed.text


@pytest.mark.slow
def test_the_owner_adds_and_removes_a_webhook_in_the_browser_under_the_pages_csp(
        world: tuple[VhOrch, Receiver]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    from test_web import chromium, csp_refusals, wait_for

    vh, _ = world
    site = vh.api_url()
    pid = Client(vh, "alice").project_id("paged")
    with chromium() as browser:
        browser.get(f"{site}/login?next=/projects/{pid}/")
        browser.find_element(By.NAME, "username").send_keys("alice")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for(lambda: browser.find_elements(By.ID, "webhook-form"), "no webhooks card for the owner")

        browser.find_element(By.ID, "webhook-url").send_keys("http://127.0.0.1:9/x")
        browser.find_element(By.ID, "webhook-add").click()
        error = wait_for(lambda: [e for e in browser.find_elements(By.ID, "webhook-error") if e.is_displayed()],
                         "a refused URL showed no error")[0]
        assert "own networks" in error.text

        browser.find_element(By.ID, "webhook-url").clear()
        browser.find_element(By.ID, "webhook-url").send_keys("https://hooks.example.com/from-page")
        browser.find_element(By.ID, "webhook-secret").send_keys(SECRET)
        browser.find_element(By.CSS_SELECTOR, 'input[name="webhook-event"][value="task.ended"]').click()
        Select(browser.find_element(By.ID, "webhook-format")).select_by_value("slack")
        browser.find_element(By.ID, "webhook-add").click()
        row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#webhooks tbody tr"), "the webhook not listed")
        assert "https://hooks.example.com/…page" in row[0].text and SECRET not in browser.page_source
        assert "from-page" not in browser.page_source
        (made,) = vh.json("webhook", "list", "-p", "paged")
        assert (made["events"], made["format"], made["has_secret"], made["created_by"]) == (
            ["execution.ended", "pipeline.ended"], "slack", True, "alice")
        assert stored_secret(vh, made["id"]) == SECRET.encode()

        browser.find_element(By.CSS_SELECTOR, f'button.webhook-remove[data-webhook="{made["id"]}"]').click()
        wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, "#webhooks tbody tr"), "the webhook stayed")
        assert vh.json("webhook", "list", "-p", "paged") == []
        refused = csp_refusals(browser)
    assert not refused, refused
