"""The web UI in a real browser: Debian's chromium, headless, driven by selenium through Debian's
chromium-driver (nothing is downloaded), against a running `vh-orch serve` on loopback."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import WAIT_S, VhOrch, installation
from quietserver import serve, shut
from test_api_executions import SCORE, SCORE_STEP
from test_api_security import Client, package, project_id
from test_users import PASSWORD, with_stdin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STEPS = SCORE_STEP + b"""
- step:
    name: chatty
    image: x
    command:
      - sleep 2
      - |-
        for i in $(seq 1 8); do echo "line $i"; echo "{\\"step\\": $i, \\"loss\\": 0.$i}"; sleep 0.4; done
- step:
    name: idle
    image: x
    command: sleep 300
- step:
    name: write
    image: x
    command: echo hello > "$VH_OUTPUTS_DIR/hello.txt"
- step:
    name: read
    image: x
    command: cat "$VH_INPUTS_DIR/data/hello.txt"
    inputs:
      - name: data
- step:
    name: bounded
    image: x
    command: sh score.sh {parameters}
    parameters:
      - name: epochs
        type: integer
        min: 1
        max: 100
        pass-as: "{v}"
      - name: model
        type: string
        choices: [linear, tree]
        pass-as: "{v}"
"""
# Where a run may keep screenshots of the pages (docs/screenshots/ is made this way).
SHOTS = os.environ.get("VH_ORCH_SCREENSHOTS")


def wait_for(what: Callable[[], Any], message: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "chromium and chromium-driver are missing: run `bash scripts/test.sh`, which installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, Client, str, str]]:
    """A daemon (process runtime); alice, with a password, owns project `demo` with the steps above."""
    with installation(tmp_path_factory.mktemp("web") / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
        vh("project", "add", "demo", "--owner", "alice")
        vh.start_daemon()
        alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
        pid = project_id(alice, "demo")
        commit = alice.upload(pid, package({"valohai.yaml": STEPS, "score.sh": SCORE})).json()["identifier"]
        yield vh, alice, pid, commit


def submit(alice: Client, pid: str, commit: str, step: str, **params: Any) -> dict[str, Any]:
    answer = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": step,
                                                     "parameters": params})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def sign_in(driver: Any, api: str, next_path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{api}{next_path}")
    wait_for(lambda: "/login" in driver.current_url, "a signed-out visitor was not sent to sign in")
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    shot(driver, "sign-in")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: driver.current_url == f"{api}{next_path}", f"not back at {next_path}: {driver.current_url}")


def test_a_signed_out_visitor_sees_only_the_sign_in_page(browser: Any, site: tuple[VhOrch, Client, str, str]
                                                         ) -> None:
    from selenium.webdriver.common.by import By

    vh, _, pid, _ = site
    api = vh.api_url()
    browser.delete_all_cookies()
    browser.get(f"{api}/projects/{pid}/")
    assert browser.current_url == f"{api}/login?next=/projects/{pid}/"
    assert "demo" not in browser.page_source
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    error = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[role=alert]"), "no error shown")
    assert "Unable to sign in" in error[0].text
    assert requests.get(f"{api}/api/v0/executions/", timeout=30).status_code == 401


def test_live_logs_and_chart_points_arrive_without_a_reload(browser: Any, site: tuple[VhOrch, Client, str, str]
                                                            ) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "chatty")
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    browser.execute_script("window.__sameDocument = true")
    log = browser.find_element(By.ID, "log")

    def chart_points() -> int:
        return int(browser.find_element(By.ID, "chart").get_attribute("data-points") or 0)

    wait_for(lambda: "line 2" in log.text and chart_points() >= 2, "no log line or chart point arrived")
    # The execution is still running while its lines and points appear.
    seen = chart_points()
    assert vh.json("exec", "info", str(made["id"]))["status"] == "started"
    assert seen < 8
    wait_for(lambda: "line 8" in log.text, "the last lines did not arrive")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "complete", "the status did not turn complete")
    assert browser.execute_script("return window.__sameDocument") is True  # never reloaded
    lines = [line for line in log.text.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, 9)]
    assert "-- complete" in log.text or "complete" in log.text.splitlines()[-1]
    wait_for(lambda: chart_points() == 8, "the chart did not get every point")
    assert browser.execute_script("return document.querySelectorAll('#chart canvas').length") == 1
    latest = browser.find_element(By.CSS_SELECTOR, '#latest tr[data-key="loss"] td').text
    assert latest == "0.8"
    shot(browser, "execution")


def test_the_project_table_sorts_by_a_metadata_key(browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = [submit(alice, pid, commit, "score", a=a) for a in (0.4, 0.9, 0.2)]
    for e in made:
        assert vh.wait(e["id"])["status"] == "complete"
    counters = {e["id"]: e["counter"] for e in made}
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")

    def sort_button() -> Any:
        found = browser.find_elements(By.CSS_SELECTOR, 'button.sort[data-key="accuracy"]')
        return found[0] if found else None

    wait_for(sort_button, "no accuracy column").click()

    def order() -> list[int]:  # read in one go: the table is redrawn every few seconds
        return browser.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll('#executions tbody tr')]"
            ".filter(r => (r.querySelector('td[data-key=accuracy]') || {}).textContent)"
            ".map(r => Number(r.dataset.counter))")

    by_accuracy = [counters[made[1]["id"]], counters[made[0]["id"]], counters[made[2]["id"]]]
    wait_for(lambda: order() == by_accuracy, "not sorted by accuracy, highest first")
    wait_for(sort_button, "no accuracy column").click()
    wait_for(lambda: order() == by_accuracy[::-1], "not sorted by accuracy, lowest first")
    shot(browser, "project")

    # Two of them side by side: parameters, latest metadata, the metric overlaid.
    for e in made[:2]:
        wait_for(lambda e=e: browser.execute_script(
            f"const b = document.querySelector('input.pick[data-id=\"{e['id']}\"]'); if (b) b.click(); return !!b"),
            "no checkbox")
    wait_for(lambda: browser.find_element(By.ID, "compare").is_enabled(), "compare stays disabled")
    browser.find_element(By.ID, "compare").click()
    wait_for(lambda: "/compare/" in browser.current_url, "not on the compare page")

    def cells(key: str) -> list[str]:
        return [td.text for td in browser.find_elements(By.CSS_SELECTOR, f'#cmp-table tr[data-key="{key}"] td')]

    wait_for(lambda: cells("a") == ["0.4", "0.9"], f"parameters not side by side: {cells('a')}")
    assert cells("accuracy") == ["0.4", "0.9"]
    assert browser.find_element(By.ID, "cmp-chart").get_attribute("data-series") == "2"
    shot(browser, "compare")

    browser.get(f"{api}/")
    assert "demo" in browser.find_element(By.CSS_SELECTOR, "main table").text
    shot(browser, "projects")


def test_stop_an_execution_from_its_page(browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "idle")
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "started", "the execution did not start")
    browser.find_element(By.ID, "stop").click()
    browser.switch_to.alert.dismiss()  # "Cancel" changes nothing
    time.sleep(0.5)
    assert vh.json("exec", "info", str(made["id"]))["status"] == "started"
    browser.find_element(By.ID, "stop").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_element(By.ID, "status").text == "stopped", "the status did not turn stopped")
    info = vh.json("exec", "info", str(made["id"]))
    assert info["status"] == "stopped" and "alice" in info["status_reason"]


class Attacker(BaseHTTPRequestHandler):
    """A page of another origin that posts a form to vh-orch when it loads."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802
        body = (f'<form id="f" method="post" action="{self.target}"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_cross_site_post_with_the_session_cookie_is_refused(browser: Any, site: tuple[VhOrch, Client, str, str]
                                                              ) -> None:
    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "idle")
    api = vh.api_url()
    sign_in(browser, api, "/")
    # Another port on the same host is another origin but the same site: the browser sends the cookie.
    Attacker.target = f"{api}/api/v0/executions/{made['id']}/stop/"
    evil = serve(Attacker, "attacker")
    try:
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        wait_for(lambda: "/stop/" in browser.current_url, "the attacker's form was not posted")
        assert "Cross-site request refused" in browser.page_source
    finally:
        shut(evil)
    assert vh.json("exec", "info", str(made["id"]))["status"] in ("queued", "started")
    cookie = browser.get_cookie("vh_orch_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # The same cookie from a script of this site, without the page's CSRF token: refused as well.
    refused = requests.post(Attacker.target, cookies={"vh_orch_session": cookie["value"]},
                            headers={"Origin": api}, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    vh("exec", "stop", str(made["id"]))


def test_run_again_with_a_form_made_from_the_steps_parameters(browser: Any, site: tuple[VhOrch, Client, str, str]
                                                               ) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    first = submit(alice, pid, commit, "bounded", epochs=5, model="linear")
    assert vh.wait(first["id"])["status"] == "complete"
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{first['id']}/")
    browser.find_element(By.CSS_SELECTOR, "#rerun summary").click()
    epochs = wait_for(lambda: browser.find_elements(By.ID, "param-epochs"), "no epochs field")[0]
    assert epochs.get_attribute("value") == "5" and epochs.get_attribute("max") == "100"
    assert Select(browser.find_element(By.ID, "param-model")).first_selected_option.text == "linear"
    before = len(vh.json("exec", "list"))

    epochs.clear()
    epochs.send_keys("500")
    browser.find_element(By.CSS_SELECTOR, "#rerun-form button[type=submit]").click()
    error = wait_for(lambda: browser.find_element(By.ID, "rerun-error").text, "no error shown")
    refused = alice.post(f"/api/v0/executions/{first['id']}/run-again/", json={"parameters": {"epochs": 500}})
    assert refused.status_code == 400 and refused.json()["parameters"][0]["message"] == error  # the API's words
    assert len(vh.json("exec", "list")) == before

    epochs.clear()
    epochs.send_keys("7")
    Select(browser.find_element(By.ID, "param-model")).select_by_visible_text("tree")
    browser.find_element(By.CSS_SELECTOR, "#rerun-form button[type=submit]").click()
    wait_for(lambda: browser.current_url.rstrip("/").split("/")[-1] not in ("", str(first["id"])),
             "not taken to the new execution")
    new_id = int(browser.current_url.rstrip("/").split("/")[-1])
    info = vh.wait(new_id)
    assert info["parameters"] == {"epochs": 7, "model": "tree"} and info["status"] == "complete"
    shot(browser, "execution-run-again")


def test_operations_show_machines_queues_and_cost_to_administrators_only(
        browser: Any, site: tuple[VhOrch, Client, str, str], tmp_path: Path) -> None:
    import json

    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    entry = {"name": "burst", "cloud": "fake", "max_scale": 1, "idle_timeout": "10m", "price_per_hour": 3.0,
             "fake": {"runtime": "process"}}
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "score",
                                                   "parameters": {"a": 0.5}, "environment": "burst"})
    assert made.status_code == 201, made.text
    assert vh.wait(made.json()["id"])["status"] == "complete"
    with_stdin(vh, PASSWORD + "\n", "user", "add", "ops", "--admin", "--password-stdin")
    admin = Client(vh.api_url(), vh.json("user", "token", "ops")["token"])

    # alice is no administrator: the page and its data are not there for her.
    assert alice.get("/api/v0/machines/").status_code == 404
    assert alice.get("/api/v0/cost/").status_code == 404
    api = vh.api_url()
    sign_in(browser, api, "/")
    browser.get(f"{api}/operations/")
    assert "Not found" in browser.page_source and "burst" not in browser.page_source

    cost = admin.get("/api/v0/cost/", params={"hours": 24}).json()
    assert len(cost["hours"]) == 24 and cost["environments"]["burst"][-1] > 0  # the machine costs since it came
    assert all(v == 0 for v in cost["environments"]["local"])
    assert admin.get("/api/v0/cost/", params={"hours": 0}).status_code == 400

    browser.delete_all_cookies()
    browser.get(f"{api}/login?next=/operations/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#environments tr[data-environment="burst"]'),
                   "no row for burst")[0]
    wait_for(lambda: "$3.00" in row.text, f"no cost per hour shown: {row.text}")
    wait_for(lambda: "burst" in browser.find_element(By.ID, "machines").text, "the machine is not listed")
    assert browser.execute_script("return document.querySelectorAll('#cost-chart canvas').length") >= 1
    shot(browser, "operations")


def test_an_input_links_to_the_execution_whose_output_it_is(browser: Any, site: tuple[VhOrch, Client, str, str]
                                                            ) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    writer = submit(alice, pid, commit, "write")
    datum = vh.wait(writer["id"])["outputs"][0]["datum"]
    reader = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "read",
                                                     "inputs": {"data": [datum]}})
    assert reader.status_code == 201, reader.text
    assert vh.wait(reader.json()["id"])["status"] == "complete"
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{reader.json()['id']}/")
    link = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#inputs li[data-input="data"] a'), "no link")[0]
    assert link.text == f"#{writer['counter']}"
    link.click()
    wait_for(lambda: browser.current_url == f"{api}/executions/{writer['id']}/", "the link did not lead there")
    download = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#outputs a"), "no output listed")[0]
    assert download.text == "hello.txt" and download.get_attribute("href").endswith("/download/")


@pytest.mark.parametrize(("asked", "goes"), [
    ("/projects/1/", "/projects/1/"), ("//evil.example/x", "/"), ("https://evil.example/", "/"),
    ("/\\evil.example", "/"), ("", "/"), ("javascript:alert(1)", "/")])
def test_after_sign_in_only_a_path_of_this_site_is_followed(asked: str, goes: str) -> None:
    from vh_orch.web.pages import safe_next

    assert safe_next(asked) == goes
