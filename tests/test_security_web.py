"""Sign-in, sessions, pages and terminals as a hostile non-admin meets them: a real `vh-orch serve`, real HTTP
from several loopback addresses, headless chromium, and the real CLI reading what an execution printed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from conftest import BUSYBOX, VhOrch, installation
from test_api_security import Client, package, project_id
from test_users import PASSWORD, with_stdin
from test_web import chromium, csp_refusals, wait_for
from vh_orch.api.throttle import LoginThrottle

TIMEOUT = 60
STATIC = Path(__file__).resolve().parent.parent / "vh_orch" / "web" / "static"
HEADERS = {"content-security-policy", "x-content-type-options", "referrer-policy"}
# What an execution prints to take over a terminal: its title (OSC 0), a clear screen, the clipboard (OSC 52).
STEPS = r"""
- step:
    name: hostile
    image: BUSYBOX
    command:
      - |-
        printf 'title \033]0;pwned\007 clear \033[2J clip \033]52;c;cHduZWQ=\007 end\n'
      - |-
        printf '{"\\u001b]0;key\\u0007": 1, "[red]x[/red]": 2}\n'
""".replace("BUSYBOX", BUSYBOX)
TITLE = "[red]x[/red] [link=https://evil.example]y[/link] \x1b]0;pwned\x07"
RAW = ("\x1b", "\x07")


class FromAddress(HTTPAdapter):
    """Connections from one loopback address: 127.0.0.0/8 gives as many client addresses as a test needs."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def client_at(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(source))
    return session


def get_token(api: str, user: str, password: str, source: str = "127.0.0.1",
              headers: dict[str, str] | None = None) -> requests.Response:
    return client_at(source).post(f"{api}/api/v0/get-token/", data={"username": user, "password": password},
                                  headers=headers or {}, timeout=TIMEOUT)


def browser_session(api: str, user: str, password: str) -> requests.Session:
    """Signed in through the web form, as a browser is: the session cookie in the jar."""
    session = requests.Session()
    answer = session.post(f"{api}/login", data={"username": user, "password": password},
                          headers={"Origin": api}, allow_redirects=False, timeout=TIMEOUT)
    assert answer.status_code == 303, answer.text
    return session


def me(api: str, token: str) -> int:
    return requests.get(f"{api}/api/v0/users/me/", headers={"Authorization": f"Token {token}"},
                        timeout=TIMEOUT).status_code


def page_csrf(session: requests.Session, api: str) -> str:
    page = session.get(f"{api}/account/", timeout=TIMEOUT)
    assert page.status_code == 200
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[tuple[VhOrch, str]]:
    """A daemon with non-admin users (one per test, as sign-in state is per name), on the Docker runtime."""
    with installation(tmp_path_factory.mktemp("security-web") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        for user in ("alice", "carol", "erin", "frank", "gina"):
            with_stdin(vh, PASSWORD + "\n", "user", "add", user, "--password-stdin")
        vh("project", "add", "franks", "--owner", "frank")
        vh.start_daemon()
        yield vh, vh.api_url()


@pytest.fixture(scope="module")
def hostile_run(site: tuple[VhOrch, str]) -> dict[str, Any]:
    """frank's execution that prints terminal escapes, with a hostile title and metadata key, finished."""
    vh, api = site
    frank = Client(api, vh.json("user", "token", "frank")["token"])
    pid = project_id(frank, "franks")
    uploaded = frank.upload(pid, package({"valohai.yaml": STEPS.encode()}))
    assert uploaded.status_code == 201, uploaded.text
    made = frank.post("/api/v0/executions/", json={"project": pid, "commit": uploaded.json()["identifier"],
                                                   "step": "hostile", "title": TITLE})
    assert made.status_code == 201, made.text
    info = vh.wait(made.json()["id"])
    assert info["status"] == "complete", info
    return {"id": info["id"], "project": pid, "commit": uploaded.json()["identifier"], "client": frank}


# -- sign-in ----------------------------------------------------------------------------------------------

def test_a_lockout_at_one_address_leaves_the_user_free_at_their_own(site: tuple[VhOrch, str]) -> None:
    vh, api = site
    # An attacker at 127.0.0.3 guesses alice's password until that address is locked out for her name...
    for _ in range(5):
        assert get_token(api, "alice", "a guess", "127.0.0.3").status_code == 400
    locked = get_token(api, "alice", PASSWORD, "127.0.0.3")
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    web = client_at("127.0.0.3").post(f"{api}/login", data={"username": "alice", "password": PASSWORD},
                                      headers={"Origin": api}, allow_redirects=False, timeout=TIMEOUT)
    assert web.status_code == 200 and "Too many failed sign-ins" in web.text  # the web form shares the count
    # ...and alice, at her own address, signs in as ever, through the API and the web form.
    assert get_token(api, "alice", PASSWORD, "127.0.0.4").status_code == 200
    assert client_at("127.0.0.4").post(f"{api}/login", data={"username": "alice", "password": PASSWORD},
                                       headers={"Origin": api}, allow_redirects=False,
                                       timeout=TIMEOUT).status_code == 303
    # One address trying many names is stopped by the per-address count, for every name.
    for i in range(20):
        assert get_token(api, f"someone{i}", "a guess", "127.0.0.5").status_code == 400
    assert get_token(api, "alice", PASSWORD, "127.0.0.5").status_code == 429
    assert get_token(api, "alice", PASSWORD, "127.0.0.4").status_code == 200


def test_the_throttle_counts_pairs_addresses_and_names_in_bounded_memory() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_pair=5, per_address=20, per_name=100, window_s=300, max_keys=1000,
                             clock=lambda: now[0])
    throttle.succeeded("alice", "10.0.0.1")  # alice signs in from home once
    # A guesser spread over 50 addresses, 2 tries each: the name's ceiling is reached...
    for i in range(100):
        throttle.failed("Alice", f"192.0.2.{i % 50}")
    assert throttle.retry_after("alice", "10.0.0.9") > 0  # ...for a new address,
    assert throttle.retry_after("alice", "10.0.0.1") == 0  # not where she signed in before
    assert throttle.retry_after("bob", "192.0.2.1") == 0
    # An IPv6 client counts as its /64: a new address in it is not a new count.
    for i in range(20):
        throttle.failed(f"u{i}", f"2001:db8::{i:x}")
    assert throttle.retry_after("bob", "2001:db8::ffff") > 0
    assert throttle.retry_after("bob", "2001:db8:0:1::1") == 0
    # A flood of new names and addresses never holds more than the cap...
    for i in range(20_000):
        throttle.failed(f"name{i}", f"198.51.{i // 250}.{i % 250}")
    assert throttle.tracked() <= 2 * 1000
    # ...and what left the window is forgotten as new failures arrive.
    now[0] += 301
    throttle.failed("late", "203.0.113.1")
    assert throttle.tracked() <= 3 + 1  # the last failure's three counts, and alice's known address
    assert throttle.retry_after("alice", "10.0.0.9") == 0


# -- password changes -----------------------------------------------------------------------------------

def test_a_password_set_by_the_operator_ends_every_token_and_session(site: tuple[VhOrch, str]) -> None:
    vh, api = site
    tokens = [vh.json("user", "token", "carol")["token"], get_token(api, "carol", PASSWORD).json()["token"]]
    signed_in = browser_session(api, "carol", PASSWORD)
    assert all(me(api, t) == 200 for t in tokens)
    assert signed_in.get(f"{api}/api/v0/users/me/", timeout=TIMEOUT).status_code == 200

    changed = with_stdin(vh, "a new password\n", "user", "passwd", "carol", "--password-stdin")
    assert "password of carol set; their 3 API token(s) and session(s) were ended" in changed.stdout
    assert [me(api, t) for t in tokens] == [401, 401]
    assert signed_in.get(f"{api}/api/v0/users/me/", timeout=TIMEOUT).status_code == 401
    assert signed_in.get(f"{api}/", allow_redirects=False, timeout=TIMEOUT).headers["location"].startswith("/login")
    assert get_token(api, "carol", PASSWORD).status_code == 400
    assert get_token(api, "carol", "a new password").status_code == 200


def test_changing_your_own_password_ends_your_other_tokens_and_sessions(site: tuple[VhOrch, str]) -> None:
    vh, api = site
    current, other = (get_token(api, "erin", PASSWORD).json()["token"] for _ in range(2))
    elsewhere = browser_session(api, "erin", PASSWORD)
    url = f"{api}/api/v0/users/me/password/"
    auth = {"Authorization": f"Token {current}"}

    wrong = requests.post(url, data={"old_password": "not it", "new_password": "erin's new one"}, headers=auth,
                          timeout=TIMEOUT)
    assert wrong.status_code == 400 and "old_password" in wrong.json()
    short = requests.post(url, data={"old_password": PASSWORD, "new_password": "short"}, headers=auth,
                          timeout=TIMEOUT)
    assert short.status_code == 400 and "too short" in short.json()["new_password"][0]["message"]
    assert me(api, other) == 200  # nothing changed

    done = requests.post(url, data={"old_password": PASSWORD, "new_password": "erin's new one"}, headers=auth,
                         timeout=TIMEOUT)
    assert done.status_code == 200 and done.json() == {"username": "erin", "ended": 2}
    assert me(api, current) == 200  # the token the change was made with stays
    assert me(api, other) == 401
    assert elsewhere.get(f"{api}/api/v0/users/me/", timeout=TIMEOUT).status_code == 401

    # The web form: CSRF-checked; this browser stays signed in, the others and the API tokens end.
    here, there = browser_session(api, "erin", "erin's new one"), browser_session(api, "erin", "erin's new one")
    form = {"old_password": "erin's new one", "new_password": "erin's third", "again": "erin's third"}
    forged = here.post(f"{api}/account/password", data=form, headers={"Origin": api}, timeout=TIMEOUT)
    assert forged.status_code == 403 and me(api, current) == 200
    csrf = page_csrf(here, api)
    differ = here.post(f"{api}/account/password", data={**form, "again": "something else", "csrf": csrf},
                       headers={"Origin": api}, timeout=TIMEOUT)
    assert differ.status_code == 400 and "differ" in differ.text and me(api, current) == 200
    changed = here.post(f"{api}/account/password", data={**form, "csrf": csrf}, headers={"Origin": api},
                        timeout=TIMEOUT)
    assert changed.status_code == 200 and "Password changed: 2 other session(s) and API token(s) ended" in changed.text
    assert here.get(f"{api}/api/v0/users/me/", timeout=TIMEOUT).json()["username"] == "erin"
    assert there.get(f"{api}/api/v0/users/me/", timeout=TIMEOUT).status_code == 401
    assert me(api, current) == 401
    assert get_token(api, "erin", "erin's third").status_code == 200


# -- pages ----------------------------------------------------------------------------------------------

def assert_guarded(answer: requests.Response, what: str) -> None:
    missing = HEADERS - {k.lower() for k in answer.headers}
    assert not missing, f"{what} ({answer.status_code}) lacks {missing}"
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"


def test_every_page_api_route_and_static_file_carries_the_security_headers(
        site: tuple[VhOrch, str], hostile_run: dict[str, Any]) -> None:
    vh, api = site
    signed_in = browser_session(api, "frank", PASSWORD)
    eid, pid, commit = hostile_run["id"], hostile_run["project"], hostile_run["commit"]
    pages = ["/login", "/", "/account/", f"/projects/{pid}/", f"/executions/{eid}/", f"/compare/?e={eid}",
             "/operations/", "/tasks/999/", "/pipelines/999/", "/datasets/999/", "/api/docs", "/api/openapi.json",
             "/metrics", "/nowhere"]
    statics = [f"/static/{p.relative_to(STATIC).as_posix()}" for p in STATIC.rglob("*") if p.is_file()]
    filled = {"project_id": pid, "ref": str(eid), "identifier": commit, "datum_id": "999", "dataset_id": "999",
              "version_id": "999", "webhook_id": "999"}
    schema = signed_in.get(f"{api}/api/openapi.json", timeout=TIMEOUT).json()
    routes = [re.sub(r"\{(\w+)\}", lambda m: filled[m.group(1)], path)
              for path, ops in schema["paths"].items() if "get" in ops]
    assert len(routes) > 15 and len(statics) > 5
    seen = set()
    for path in [*pages, *statics, "/static/nope.js", *routes]:
        with signed_in.get(f"{api}{path}", stream=True, allow_redirects=False, timeout=TIMEOUT) as answer:
            assert_guarded(answer, path)
            seen.add(answer.status_code)
    signed_out = requests.get(f"{api}/", allow_redirects=False, timeout=TIMEOUT)
    assert signed_out.status_code == 303
    assert_guarded(signed_out, "a redirect to sign in")
    seen.add(signed_out.status_code)
    for refused in (requests.post(f"{api}/api/v0/executions/{eid}/stop/", timeout=TIMEOUT),  # 401
                    signed_in.post(f"{api}/api/v0/executions/{eid}/stop/", timeout=TIMEOUT),  # 403: no CSRF
                    get_token(api, "nobody", "x"),  # 400
                    requests.delete(f"{api}/api/v0/users/me/", timeout=TIMEOUT)):  # 405
        assert_guarded(refused, refused.request.url or "")
        seen.add(refused.status_code)
    assert {200, 303, 400, 401, 403, 404, 405} <= seen
    # A page that is not found is an HTML page of the site with a way home; the API's 404 stays JSON.
    page = signed_in.get(f"{api}/tasks/999/", timeout=TIMEOUT)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html") and 'id="home"' in page.text
    data = signed_in.get(f"{api}/api/v0/tasks/999/", timeout=TIMEOUT)
    assert data.status_code == 404 and data.headers["content-type"] == "application/json" and data.json()["detail"]


# What a route that takes a body is sent (a valid one: what refuses it must be who asks, not the body;
# PROJECT: the project's id).
PROJECT = "<project>"
BODIES: dict[tuple[str, str], Any] = {
    ("put", "/api/v0/projects/{project_id}/secrets/{name}/"): {"value": "planted"},
    ("post", "/api/v0/projects/{project_id}/webhooks/"): {"url": "https://hooks.example.com/planted"},
    ("post", "/api/v0/commits/{identifier}/pipeline-payload/"): {"project": PROJECT, "pipeline": "p"},
    ("post", "/api/v0/executions/{ref}/run-again/"): {},
}
# Pages of one project's things (not in the API's schema).
PROJECT_PAGES = ("/projects/{project_id}/", "/projects/{project_id}/secrets/", "/executions/{ref}/")
# Issue 30's routes: the walk must reach every one of them.
NEW_ROUTES = {"/api/v0/projects/{project_id}/secrets/", "/api/v0/projects/{project_id}/secrets/{name}/",
              "/api/v0/projects/{project_id}/deploy-key/", "/api/v0/projects/{project_id}/deploy-key/rotate/",
              "/api/v0/projects/{project_id}/webhooks/", "/api/v0/webhooks/{webhook_id}/",
              "/api/v0/webhooks/{webhook_id}/deliveries/"}


def test_every_route_and_page_of_a_users_project_answers_another_user_404_and_a_visitor_401(
        site: tuple[VhOrch, str], hostile_run: dict[str, Any]) -> None:
    vh, api = site
    with_stdin(vh, "franks-value\n", "project", "secret", "set", "franks", "FRANKS_KEY", "--value-stdin")
    hook = vh.json("webhook", "add", "-p", "franks", "--url", "http://127.0.0.1:9/franks", "--secret-stdin",
                   stdin="franks-hook\n")
    filled = {"project_id": hostile_run["project"], "ref": str(hostile_run["id"]), "identifier": hostile_run["commit"],
              "webhook_id": str(hook["id"]), "name": "FRANKS_KEY"}
    gina = Client(api, vh.json("user", "token", "gina")["token"])
    schema = gina.get("/api/openapi.json").json()
    walked = set()
    for template, operations in schema["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", template))
        if not names or not names <= set(filled):  # a route of nobody's things, or of things frank has none of
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: filled[m.group(1)], template)
        # A commit is found by its identifier in a project the caller names (the project is what is checked).
        query = {"project": filled["project_id"]} if "{identifier}" in template else None
        for method in operations:
            body = BODIES.get((method, template))
            if isinstance(body, dict) and body.get("project") == PROJECT:
                body = {**body, "project": filled["project_id"]}
            visitor = requests.request(method, f"{api}{path}", params=query, json=body, timeout=TIMEOUT)
            assert visitor.status_code == 401, (method, template, visitor.text)
            other = requests.request(method, f"{api}{path}", params=query, json=body, headers=gina.headers,
                                     timeout=TIMEOUT)
            assert other.status_code == 404, (method, template, other.text)
            assert "franks-" not in other.text and "127.0.0.1:9" not in other.text
            walked.add(template)
    assert NEW_ROUTES <= walked, NEW_ROUTES - walked
    ginas_browser = browser_session(api, "gina", PASSWORD)
    for template in PROJECT_PAGES:
        path = re.sub(r"\{(\w+)\}", lambda m: filled[m.group(1)], template)
        assert ginas_browser.get(f"{api}{path}", timeout=TIMEOUT).status_code == 404, template
        visitor = requests.get(f"{api}{path}", allow_redirects=False, timeout=TIMEOUT)
        assert visitor.status_code == 303 and "/login" in visitor.headers["location"], template
    # Nothing of frank's changed: his secret, his webhook, his project's deploy key.
    assert [s["name"] for s in vh.json("project", "secret", "list", "franks")] == ["FRANKS_KEY"]
    assert [w["id"] for w in vh.json("webhook", "list", "-p", "franks")] == [hook["id"]]
    assert vh.json("project", "key", "franks")["deploy_key"] is None


def test_api_docs_come_from_this_host_alone_and_render(site: tuple[VhOrch, str]) -> None:
    vh, api = site
    html = requests.get(f"{api}/api/docs", timeout=TIMEOUT).text
    assert "<script>" not in html.replace(" ", "")  # no inline script: every script is a file
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert referenced and all(ref.startswith("/") and not ref.startswith("//") for ref in referenced), referenced
    for ref in referenced:
        answer = requests.get(f"{api}{ref}", timeout=TIMEOUT)
        assert answer.status_code == 200, ref
        if ref.endswith(".css"):  # a stylesheet's url(...)s: data: or this host's only
            urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", answer.text)
            assert all(u.startswith(("data:", "/", "#")) or "://" not in u for u in urls), ref
        elif not ref.endswith("-bundle.js"):  # the bundle names hosts in strings; the browser shows what it asks
            assert not re.search(r"https?://", answer.text), ref

    with chromium(log_requests=True) as browser:
        browser.get(f"{api}/api/docs")
        wait_for(lambda: browser.execute_script("return document.querySelectorAll('.opblock').length") > 15,
                 "swagger-ui did not render the API's operations")
        assert "vh-orch" in browser.find_element("css selector", ".title").text
        events = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
        refused = csp_refusals(browser)
    asked = {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}
    assert f"{api}/api/openapi.json" in asked
    strangers = {url for url in asked if not url.startswith((f"{api}/", "data:"))}
    assert not strangers, f"the docs page asked other hosts: {strangers}"
    assert not refused, refused


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, str]]:
    """A daemon behind a TLS proxy at 127.0.0.1 that answers to the host names vh.test and 127.0.0.1 only."""
    with installation(tmp_path_factory.mktemp("proxied") / "home") as vh:
        with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
        vh.env["VH_ORCH_TRUSTED_PROXIES"] = "127.0.0.1"
        vh.start_daemon("--allowed-host", "vh.test", "--allowed-host", "127.0.0.1")
        yield vh, vh.api_url()


def test_only_the_allowed_host_names_are_answered(proxied: tuple[VhOrch, str]) -> None:
    vh, api = proxied
    port = api.rsplit(":", 1)[1]
    for host in ("vh.test", f"vh.test:{port}", f"127.0.0.1:{port}", "VH.TEST"):
        assert requests.get(f"{api}/login", headers={"Host": host}, timeout=TIMEOUT).status_code == 200, host
    for host in ("evil.test", f"localhost:{port}", "vh.test.evil.test", ""):
        refused = requests.get(f"{api}/login", headers={"Host": host}, timeout=TIMEOUT)
        assert refused.status_code == 400, host
        assert "--allowed-host" in refused.json()["message"]
        assert_guarded(refused, f"Host {host!r}")
    bad = vh("serve", "--allowed-host", "https://vh.test/", check=False)
    assert bad.returncode != 0 and "--allowed-host 'https://vh.test/' is not a host name" in bad.stderr


def test_behind_tls_the_session_cookie_is_host_prefixed_and_the_throttle_sees_the_forwarded_client(
        proxied: tuple[VhOrch, str]) -> None:
    vh, api = proxied
    host = api.removeprefix("http://")
    tls = {"X-Forwarded-Proto": "https", "Origin": f"https://{host}"}
    signed = requests.post(f"{api}/login", data={"username": "alice", "password": PASSWORD}, headers=tls,
                           allow_redirects=False, timeout=TIMEOUT)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("__Host-vh_orch_session=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
    secret = signed.cookies["__Host-vh_orch_session"]
    me_url = f"{api}/api/v0/users/me/"
    assert requests.get(me_url, cookies={"__Host-vh_orch_session": secret}, headers=tls,
                        timeout=TIMEOUT).json()["username"] == "alice"
    # Over https a cookie without the prefix (one planted over plain http, say) is not read.
    assert requests.get(me_url, cookies={"vh_orch_session": secret}, headers=tls, timeout=TIMEOUT).status_code == 401
    out = requests.post(f"{api}/logout", data={"csrf": page_csrf_for(api, secret, tls)}, headers=tls,
                        cookies={"__Host-vh_orch_session": secret}, allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code == 303
    assert any(c.startswith("__Host-vh_orch_session=") and "secure" in c.lower()
               for c in out.raw.headers.getlist("set-cookie"))

    # The proxy's X-Forwarded-For names the client: one client locked out, another not...
    for _ in range(5):
        assert get_token(api, "alice", "a guess", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 400
    assert get_token(api, "alice", PASSWORD, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429
    assert get_token(api, "alice", PASSWORD, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200
    # ...and from an address that is not a trusted proxy the header counts for nothing.
    for _ in range(5):
        assert get_token(api, "alice", "a guess", "127.0.0.6", {"X-Forwarded-For": "203.0.113.9"}).status_code == 400
    assert get_token(api, "alice", PASSWORD, "127.0.0.6", {"X-Forwarded-For": "203.0.113.10"}).status_code == 429


def page_csrf_for(api: str, secret: str, headers: dict[str, str]) -> str:
    page = requests.get(f"{api}/account/", cookies={"__Host-vh_orch_session": secret}, headers=headers,
                        timeout=TIMEOUT)
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


# -- terminals ------------------------------------------------------------------------------------------

def test_what_an_execution_printed_cannot_drive_the_operators_terminal(
        site: tuple[VhOrch, str], hostile_run: dict[str, Any]) -> None:
    vh, _ = site
    eid = str(hostile_run["id"])
    logs = vh("exec", "logs", eid).stdout
    assert not any(c in logs for c in RAW), repr(logs)
    assert r"title \x1b]0;pwned\x07 clear \x1b[2J clip \x1b]52;c;cHduZWQ=\x07 end" in logs
    raw = vh("exec", "logs", eid, "--raw").stdout
    assert "title \x1b]0;pwned\x07 clear \x1b[2J clip \x1b]52;c;cHduZWQ=\x07 end" in raw

    info = vh("exec", "info", eid).stdout
    assert not any(c in info for c in RAW), repr(info)
    assert r"[red]x[/red] [link=https://evil.example]y[/link] \x1b]0;pwned\x07" in info  # markup stays text
    metadata = vh("exec", "metadata", eid).stdout
    assert not any(c in metadata for c in RAW), repr(metadata)
    # A key with control characters is no metadata (orchestrator/metadata_limits.py): its line stays a log line.
    assert "[red]x[/red]" in metadata and "0;key" not in metadata
    assert r'{"\u001b]0;key\u0007": 1, "[red]x[/red]": 2}' in logs
    listed = vh("exec", "list", "--sort=-[red]x[/red]").stdout  # a metadata key as a column's name
    assert "[red]x[/red]" in listed and not any(c in listed for c in RAW)

    # --json needs nothing: JSON writes control characters as \u001b, and reads back to what was printed.
    for args in (("exec", "info", eid), ("exec", "metadata", eid), ("exec", "logs", eid)):
        out = vh(*args, "--json").stdout
        assert not any(c in out for c in RAW), args
    assert vh.json("exec", "info", eid)["title"] == TITLE
    assert [sorted(point) for point in vh.json("exec", "metadata", eid)] == [["[red]x[/red]", "_time"]]
