"""The web UI in a real browser: Debian's chromium, headless, driven by selenium through Debian's
chromium-driver (nothing is downloaded), against a running `vh-orch serve` on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import WAIT_S, VhOrch, eventually, installation
from quietserver import serve, shut
from test_api_executions import SCORE, SCORE_STEP
from test_api_security import Client, package, project_id
from test_users import PASSWORD, with_stdin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STEPS = SCORE_STEP + b"""
- step:
    name: chatty
    image: vh-orch/busybox:test
    command:
      - |-
        for i in $(seq 1 8); do
          [ $i = 3 ] && while [ ! -e /tmp/go ]; do sleep 0.1; done
          echo "line $i"; echo "{\\"step\\": $i, \\"loss\\": 0.$i}"; sleep 0.1
        done
- step:
    name: idle
    image: vh-orch/busybox:test
    command: sleep 300
- step:
    name: write
    image: vh-orch/busybox:test
    command: echo hello > "$VH_OUTPUTS_DIR/hello.txt"
- step:
    name: read
    image: vh-orch/busybox:test
    command: cat "$VH_INPUTS_DIR/data/hello.txt"
    inputs:
      - name: data
- step:
    name: bounded
    image: vh-orch/busybox:test
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
- step:
    name: tune
    image: vh-orch/busybox:test
    command: sh tune.sh {parameters}
    parameters:
      - name: rate
        type: float
        pass-as: "{v}"
      - name: model
        type: string
        pass-as: "{v}"
- step:
    name: fail
    image: vh-orch/busybox:test
    command: exit 3
- step:
    name: long
    image: vh-orch/busybox:test
    command:
      - |-
        for i in $(seq 1 1500); do echo "row $i end"; done
      - sleep 1
      - echo "only on stderr" >&2
- step:
    name: fails
    image: vh-orch/busybox:test
    command:
      - echo "giving up" >&2
      - exit 3
- step:
    name: fit
    image: vh-orch/busybox:test
    command:
      - |-
        for i in 1 2 3 4 5; do echo "{\\"step\\": $i, \\"loss\\": 0.00$((11-2*i)), \\"accuracy\\": 0.$((i+4))}"; done
- step:
    name: ladder
    image: vh-orch/busybox:test
    command: sh ladder.sh {parameters}
    parameters:
      - name: rate
        type: float
        pass-as: "{v}"
      - name: seconds
        type: integer
        pass-as: "{v}"
- step:
    name: train
    image: vh-orch/busybox:test
    command: sh train.sh {parameters}
    parameters:
      - name: learning_rate
        type: float
        pass-as: "{v}"
      - name: batch_size
        type: integer
        pass-as: "{v}"
- step:
    name: nap
    image: vh-orch/busybox:test
    command: sleep {parameters}
    parameters:
      - name: seconds
        type: integer
        pass-as: "{v}"
"""
# accuracy = rate, plus 0.5 for a tree: a grid's best is known in advance.
TUNE = b"""case "$2" in tree) bonus=0.5 ;; *) bonus=0 ;; esac
awk -v r="$1" -v b="$bonus" 'BEGIN { printf "{\\"accuracy\\": %g}\\n", r + b }'
"""
# accuracy = rate at once, then a nap: a task's child that has reported its metric but still runs.
LADDER = b"""echo "{\\"accuracy\\": $1}"; sleep "$2"
"""
# Ten epochs of a made-up fit (the screenshots' runs): the loss falls faster with a higher rate, and
# levels off higher with smaller batches.
TRAIN = rb"""awk -v lr="$1" -v bs="$2" 'BEGIN {
  left = 2.3
  for (e = 1; e <= 10; e++) {
    left *= 1 - 2 * lr
    loss = left + 1.28 / bs
    printf "epoch %d/10: loss %.4f\n", e, loss
    printf "{\"epoch\": %d, \"loss\": %.4f, \"accuracy\": %.4f}\n", e, loss, 1 - loss / 2.5
  }
}'
echo "weights after 10 epochs" > "$VH_OUTPUTS_DIR/model.txt"
"""
FILES = {"valohai.yaml": STEPS, "score.sh": SCORE, "tune.sh": TUNE, "ladder.sh": LADDER, "train.sh": TRAIN}
# Where a run may keep screenshots of the pages (docs/screenshots/ is made this way).
SHOTS = os.environ.get("VH_ORCH_SCREENSHOTS")


def wait_for(what: Callable[[], Any], message: str, timeout: float = WAIT_S) -> Any:
    """`what()` once truthy; an element the page re-rendered meanwhile (stale) counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = what()
        except StaleElementReferenceException:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@contextmanager
def chromium(log_requests: bool = False) -> Iterator[Any]:
    """Headless chromium whose console is kept (`driver.get_log("browser")`: Content Security Policy
    refusals show there) and, with log_requests, every request it makes (`get_log("performance")`)."""
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", **({"performance": "ALL"} if log_requests else {})})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def csp_refusals(driver: Any) -> list[str]:
    """What the page's Content-Security-Policy refused since the console was last read."""
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


@pytest.fixture(autouse=True)
def _pages_keep_to_their_csp(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that drives the pages also shows that they work under their CSP: nothing refused."""
    yield
    if "browser" in request.fixturenames:
        refused = csp_refusals(request.getfixturevalue("browser"))
        assert not refused, f"the page broke its Content-Security-Policy: {refused}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, Client, str, str]]:
    """A daemon running containers (alice is no administrator); alice, with a password, owns project `demo`
    with the steps above."""
    with installation(tmp_path_factory.mktemp("web") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
        vh("project", "add", "demo", "--owner", "alice")
        vh.start_daemon()
        alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
        pid = project_id(alice, "demo")
        commit = alice.upload(pid, package(FILES)).json()["identifier"]
        yield vh, alice, pid, commit


def submit(alice: Client, pid: str, commit: str, step: str, **params: Any) -> dict[str, Any]:
    answer = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": step,
                                                     "parameters": params})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


MAX_SHOT_HEIGHT = 2400  # px: a whole page, up to this tall


def let_go(vh: VhOrch, execution_id: int) -> None:
    """Let a command that holds until /tmp/go exists in its container (`chatty`) go on."""
    container = f"{vh.cluster_id()}-exec-{execution_id}"
    eventually("the held command to be let go", lambda: subprocess.run(
        ["docker", "exec", container, "touch", "/tmp/go"], capture_output=True, timeout=60).returncode == 0)


def shot(driver: Any, name: str, variants: bool = False) -> None:
    """With SHOTS set, NAME.png: the whole page at the window's width; with variants, also NAME-dark.png
    (the dark theme, picked in the page's toggle) and NAME-800.png (800 px wide). The window and the
    theme are as they were afterwards."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    try:
        whole_page(driver, size["width"], Path(SHOTS) / f"{name}.png")
        if variants:
            pick_theme(driver, "dark")
            whole_page(driver, size["width"], Path(SHOTS) / f"{name}-dark.png")
            pick_theme(driver, "system")
            whole_page(driver, 800, Path(SHOTS) / f"{name}-800.png")
    finally:
        if variants:
            pick_theme(driver, "system")
        driver.set_window_size(size["width"], size["height"])
        settle(driver)


def whole_page(driver: Any, width: int, path: Path) -> None:
    """A screenshot of the page from its top, the window made as tall as the page (up to MAX_SHOT_HEIGHT).
    The log keeps the height it has in a 1000 px tall window (it is sized by the window's height)."""
    driver.set_window_size(width, 1000)
    settle(driver)
    driver.execute_script("for (const p of document.querySelectorAll('pre.log')) "
                          "if (p.offsetParent) p.style.height = p.getBoundingClientRect().height + 'px'")
    try:
        driver.set_window_size(width, 400)  # a short page is not padded to the window's height
        settle(driver)
        for _ in range(2):  # the page's height may change with its width; the window's frame is not the page
            tall = driver.execute_script("return [document.documentElement.scrollHeight, innerHeight, outerHeight]")
            driver.set_window_size(width, min(MAX_SHOT_HEIGHT, tall[0] + tall[2] - tall[1]))
            settle(driver)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(path))
    finally:
        driver.execute_script("for (const p of document.querySelectorAll('pre.log')) p.style.height = ''")


def pick_theme(driver: Any, theme: str) -> None:
    """The page's own light/dark toggle (the header's select), as a user picks it."""
    driver.execute_script("const s = document.getElementById('theme'); if (s) { s.value = arguments[0];"
                          "s.dispatchEvent(new Event('change')); }", theme)
    settle(driver)


def settle(driver: Any) -> None:
    """Two animation frames and a moment: charts redrawn after a resize or a theme change."""
    driver.set_script_timeout(WAIT_S)
    driver.execute_async_script("const done = arguments[0];"
                                "requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 150)))")


def sign_in(driver: Any, api: str, next_path: str) -> None:
    from selenium.webdriver.common.by import By

    # Off the last page first: its polls, refused once the cookie is gone, would send it to sign in for
    # itself (`/login?next=` its own address) while this test's page loads. The browser's cookies go
    # through DevTools: about:blank has none of its own to delete.
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get(f"{api}{next_path}")
    wait_for(lambda: "/login" in driver.current_url, "a signed-out visitor was not sent to sign in")
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    shot(driver, "sign-in")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: driver.current_url == f"{api}{next_path}", f"not back at {next_path}: {driver.current_url}")


def open_rerun_form(driver: Any) -> None:
    """Open an execution page's "run again" form as a person would: click its summary until it is open.
    A click sent while the page still lays itself out (its facts and form arrive after it loads) may
    land beside the summary; the toggle itself is synchronous, so a click never closes it again."""
    from selenium.webdriver.common.by import By

    def opened() -> bool:
        if driver.execute_script("return document.getElementById('rerun').open"):
            return True
        driver.find_element(By.CSS_SELECTOR, "#rerun summary").click()
        return False

    wait_for(opened, "the form did not open")


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
    # The execution is still running (held after its second line) while its lines and points appear.
    assert chart_points() == 2
    assert vh.json("exec", "info", str(made["id"]))["status"] == "started"
    let_go(vh, made["id"])
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


def test_the_hardware_chart_gains_points_while_the_execution_runs(browser: Any,
                                                                   site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "nap", seconds=40)
    sign_in(browser, vh.api_url(), f"/executions/{made['id']}/")
    browser.execute_script("window.__sameDocument = true")

    def points() -> int:
        return int(browser.find_element(By.ID, "hardware").get_attribute("data-points") or 0)

    wait_for(lambda: points() >= 1 and browser.find_element(By.ID, "status").text == "started",
             "no hardware sample reached the page")
    first = points()
    wait_for(lambda: points() > first, "the Hardware chart gained no point while the execution ran")
    assert vh.json("exec", "info", str(made["id"]))["status"] == "started"
    assert browser.execute_script("return document.querySelectorAll('#hardware canvas').length") == 1
    assert browser.find_element(By.ID, "hardware").get_attribute("data-series") == "2"  # CPU and memory, no GPU
    assert "peak memory" in browser.find_element(By.ID, "hardware-note").text
    assert browser.execute_script("return window.__sameDocument") is True  # never reloaded
    shot(browser, "execution-hardware")
    vh("exec", "stop", str(made["id"]))


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
        wait_for(lambda: "Cross-site request refused" in browser.page_source, "the refusal was not shown")
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


def test_run_again_with_a_form_made_from_the_steps_parameters_and_links_both_ways(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    first = submit(alice, pid, commit, "bounded", epochs=5, model="linear")
    assert vh.wait(first["id"])["status"] == "complete"
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{first['id']}/")
    open_rerun_form(browser)
    epochs = wait_for(lambda: browser.find_elements(By.ID, "param-epochs"), "no epochs field")[0]
    assert epochs.get_attribute("value") == "5" and epochs.get_attribute("max") == "100"
    # The select's value, not its option's rendered text (which reads "" while anything hides it).
    wait_for(lambda: browser.find_element(By.ID, "param-model").get_attribute("value") == "linear",
             "the model field does not show the execution's value, linear")
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
    assert info["rerun_of"] == {"id": first["id"], "counter": first["counter"]}
    said = [line for line in vh("exec", "info", str(new_id)).stdout.splitlines() if "re-run of" in line]
    assert len(said) == 1 and said[0].split()[-3:] == [f"#{first['counter']}", "(id", f"{first['id']})"]

    # Links both ways: the new page names its source, the source page lists the new one.
    # (Read and clicked in one go: the facts are drawn again on each status event the stream replays.)
    back = wait_for(lambda: browser.execute_script(
        "const a = document.querySelector('#rerun-of a');"
        "return a && [a.textContent, a.getAttribute('href'), a.parentElement.textContent]"), "no link to the source")
    assert back == [f"#{first['counter']}", f"/executions/{first['id']}/", f"Re-run of #{first['counter']}"]
    shot(browser, "execution-run-again")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#rerun-of a").click() or True, "the link is not there")
    wait_for(lambda: browser.current_url == f"{api}/executions/{first['id']}/", "not taken to the source")
    listed = wait_for(lambda: browser.execute_script(
        f"const a = document.querySelector('#reruns a[href=\"/executions/{new_id}/\"]');"
        "return a && [a.textContent, !document.getElementById('reruns-box').hidden,"
        "document.getElementById('rerun-of').hidden]"), "the source does not list its re-run")
    assert listed == [f"#{info['counter']}", True, True]  # listed; the source was run from no other


def test_operations_show_machines_queues_and_cost_to_administrators_only(
        browser: Any, site: tuple[VhOrch, Client, str, str], tmp_path: Path) -> None:
    import json

    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    entry = {"name": "burst", "cloud": "fake", "max_scale": 1, "idle_timeout": "10m", "price_per_hour": 3.0,
             "pull_policy": "never", "fake": {"runtime": "docker"}}
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "score",
                                                   "parameters": {"a": 0.5}, "environment": "burst"})
    assert made.status_code == 201, made.text
    assert vh.wait(made.json()["id"])["status"] == "complete"
    # An execution with an input on that machine: its input cache fetched one file.
    datum = vh.wait(submit(alice, pid, commit, "write")["id"])["outputs"][0]["datum"]
    reader = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "read",
                                                     "inputs": {"data": [datum]}, "environment": "burst"})
    assert reader.status_code == 201, reader.text
    assert vh.wait(reader.json()["id"])["status"] == "complete"
    with_stdin(vh, PASSWORD + "\n", "user", "add", "ops", "--admin", "--password-stdin")
    admin = Client(vh.api_url(), vh.json("user", "token", "ops")["token"])
    burst = [m for m in admin.get("/api/v0/machines/").json() if m["environment"] == "burst"]
    assert len(burst) == 1 and burst[0]["input_cache"]["misses"] == 1 and burst[0]["input_cache"]["bytes"] > 0, burst

    # alice is no administrator: the page and its data are not there for her.
    assert alice.get("/api/v0/machines/").status_code == 404
    assert alice.get("/api/v0/cost/").status_code == 404
    api = vh.api_url()
    sign_in(browser, api, "/")
    browser.get(f"{api}/operations/")
    wait_for(lambda: "Not found" in browser.page_source, "no not-found page")  # (one run read an empty document)
    assert "burst" not in browser.page_source

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
    cache = browser.find_element(By.XPATH, '//table[@id="machines"]//tr[td[2]="burst"]/td[@class="input-cache"]')
    assert cache.text.endswith(", 0% of 1"), cache.text
    # The chart is drawn once its figures have come (a fetch of its own): waited for, not sampled.
    wait_for(lambda: browser.execute_script("return document.querySelectorAll('#cost-chart canvas').length") >= 1,
             "no cost chart drawn")
    shot(browser, "operations")


def test_machines_show_the_gpus_their_instance_type_is_expected_to_have(
        browser: Any, site: tuple[VhOrch, Client, str, str], tmp_path: Path) -> None:
    import json

    from selenium.webdriver.common.by import By

    vh, _, _, _ = site
    # Its one machine is kept booting: its GPUs are what its instance type is said to have.
    entry = {"name": "eight", "cloud": "fake", "min_scale": 1, "max_scale": 1, "idle_timeout": "10m",
             "fake": {"gpus": 8, "boot_seconds": "1h", "runtime": "docker"}}
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    with_stdin(vh, PASSWORD + "\n", "user", "add", "gpu-ops", "--admin", "--password-stdin")
    admin = Client(vh.api_url(), vh.json("user", "token", "gpu-ops")["token"])

    def eight() -> list[dict[str, Any]]:
        return [m for m in admin.get("/api/v0/machines/").json()
                if m["environment"] == "eight" and m["state"] == "provisioning"]

    (machine,) = wait_for(eight, "no booting machine for the environment")
    assert (machine["gpus"], machine["gpu_model"], machine["gpus_expected"]) == (8, None, True), machine
    shown = vh.json("env", "show", "eight", "--json")["gpus"]
    assert shown == [{"machine": machine["id"], "state": machine["state"], "gpus": 8, "gpu_model": None,
                      "gpus_expected": True}]
    assert "8 (expected)" in vh("env", "show", "eight").stdout
    local = vh.json("env", "show", "local", "--json")["gpus"]
    assert local and all(g["gpus"] == 0 and not g["gpus_expected"] for g in local), local
    assert "GPUs of its machines" not in vh("env", "show", "local").stdout

    browser.delete_all_cookies()
    browser.get(f"{vh.api_url()}/login?next=/operations/")
    browser.find_element(By.NAME, "username").send_keys("gpu-ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    cell = wait_for(lambda: browser.find_elements(
        By.XPATH, '//table[@id="machines"]//tr[td[2]="eight"]/td[@class="gpus"]'), "the machine is not listed")[0]
    assert cell.text == "8 (expected)"
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#machines thead th")]
    assert header[browser.execute_script("return arguments[0].cellIndex", cell)] == "GPUs"


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
    def click_the_link() -> bool:  # the page may re-render the list between finding and clicking
        links = browser.find_elements(By.CSS_SELECTOR, '#inputs li[data-input="data"] a')
        if not links or links[0].text != f"#{writer['counter']}":
            return False
        links[0].click()
        return True

    wait_for(click_the_link, f"no link to #{writer['counter']}, the execution whose output the input is")
    wait_for(lambda: browser.current_url == f"{api}/executions/{writer['id']}/", "the link did not lead there")
    download = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#outputs a"), "no output listed")[0]
    assert download.text == "hello.txt" and download.get_attribute("href").endswith("/download/")


def start_task(client: Client, pid: str, commit: str, step: str, varied: dict[str, list[Any]],
               **extra: Any) -> dict[str, Any]:
    """A grid search over these values (`POST /api/v0/tasks/`, the body `vh task run` sends)."""
    body = {"project": pid, "commit": commit, "step": step, "type": "grid_search",
            "parameters": {name: {"style": "multiple", "rules": {"items": items}} for name, items in varied.items()},
            **extra}
    answer = client.post("/api/v0/tasks/", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def finished_task(client: Client, task_id: int) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        task: dict[str, Any] = client.get(f"/api/v0/tasks/{task_id}/").json()
        return task if task["status"] in ("complete", "stopped", "error") else None

    return wait_for(final, f"task {task_id} did not finish")  # type: ignore[no-any-return]


ACCURACY = {"configuration": {"optimization_target_metric": "accuracy"}}


def test_a_task_page_shows_its_executions_live_with_the_best_one_highlighted(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    made = start_task(alice, pid, commit, "tune", {"rate": [0.1, 0.2, 0.3], "model": ["linear", "tree"]},
                      title="rate and model", **ACCURACY)
    api = vh.api_url()
    sign_in(browser, api, f"/tasks/{made['id']}/")
    browser.execute_script("window.__sameDocument = true")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "complete", "the task did not turn complete")
    assert browser.execute_script("return window.__sameDocument") is True  # it came in without a reload
    task = alice.get(f"/api/v0/tasks/{made['id']}/").json()
    children = {c["counter"]: c for c in task["executions"]}
    best = task["best"]["counter"]
    assert children[best]["parameters"] == {"rate": 0.3, "model": "tree"}  # accuracy 0.8

    def rows() -> list[int]:
        return browser.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll('#children tbody tr')].map(r => Number(r.dataset.counter))")

    wait_for(lambda: sorted(rows()) == sorted(children), f"not every execution listed: {rows()}")
    highlighted = browser.find_elements(By.CSS_SELECTOR, "#children tbody tr.best")
    assert [int(r.get_attribute("data-counter")) for r in highlighted] == [best]
    assert browser.find_element(By.ID, "best-link").text == f"#{best}"
    assert browser.find_element(By.ID, "best").text.startswith(f"Best: #{best} with accuracy = 0.8")
    assert "6 complete" in browser.find_element(By.ID, "counts").text

    # Sorted by the metric, highest first, with a click on its column.
    browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="metric:accuracy"]').click()
    by_accuracy = sorted(children, key=lambda n: -children[n]["metadata"]["accuracy"])
    wait_for(lambda: rows() == by_accuracy, f"not sorted by accuracy: {rows()}")

    # The scatter: a point per execution, the best one ringed; per category for a string parameter.
    scatter = browser.find_element(By.ID, "scatter")
    assert scatter.get_attribute("data-points") == "6" and scatter.get_attribute("data-best") == str(best)
    assert browser.execute_script("return document.querySelectorAll('#scatter canvas').length") == 1
    Select(browser.find_element(By.ID, "sc-param")).select_by_visible_text("model")
    wait_for(lambda: scatter.get_attribute("data-param") == "model", "the scatter did not switch parameters")
    assert scatter.get_attribute("data-points") == "6"
    assert browser.execute_script("return document.querySelectorAll('#scatter canvas').length") == 1
    # Parallel coordinates: an axis per varied parameter and the metric, a line per execution.
    axes = [a.get_attribute("data-key") for a in browser.find_elements(By.CSS_SELECTOR, "#parcoords g.axis")]
    assert axes == ["rate", "model", "accuracy"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#parcoords polyline.line")) == 6
    drawn_best = browser.find_elements(By.CSS_SELECTOR, "#parcoords polyline.best")
    assert [int(line.get_attribute("data-counter")) for line in drawn_best] == [best]
    Select(browser.find_element(By.ID, "sc-param")).select_by_visible_text("rate")
    browser.execute_script("document.activeElement.blur()")
    shot(browser, "task", variants=True)

    # An execution of a task links back to it.
    browser.find_element(By.ID, "best-link").click()
    link = wait_for(lambda: browser.find_elements(By.ID, "task-link"), "the execution page has no task link")[0]
    assert link.text == f"!{task['counter']} rate and model"
    wait_for(lambda: browser.find_element(By.ID, "facts").text, "the execution page did not load")
    link.click()
    wait_for(lambda: browser.current_url == f"{api}/tasks/{made['id']}/", "the link did not lead to the task")


def test_the_project_page_lists_its_tasks_and_filters_executions_by_one(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    alone = submit(alice, pid, commit, "score", a=0.5)
    made = start_task(alice, pid, commit, "tune", {"rate": [0.2, 0.4], "model": ["linear"]}, title="two rates")
    task = finished_task(alice, made["id"])
    assert vh.wait(alone["id"])["status"] == "complete"
    in_task = sorted(c["counter"] for c in task["executions"])
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")

    def rows() -> list[int]:
        return browser.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll('#executions tbody tr')].map(r => Number(r.dataset.counter))")

    wait_for(lambda: alone["counter"] in rows(), "the table does not list every execution")
    listed = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'#tasks tr[data-task="{made["id"]}"] a'),
                      "the task is not in the project's list of tasks")
    assert listed[0].text == f"!{task['counter']}" and listed[0].get_attribute("href") == f"{api}/tasks/{made['id']}/"
    Select(browser.find_element(By.ID, "f-task")).select_by_value(str(made["id"]))
    wait_for(lambda: sorted(rows()) == in_task, f"the filter did not narrow the table to the task: {rows()}")
    assert browser.current_url.endswith(f"?task={made['id']}")
    shot(browser, "project-tasks")
    browser.refresh()  # the filter is in the address
    wait_for(lambda: sorted(rows()) == in_task, f"the filter did not survive a reload: {rows()}")
    assert Select(browser.find_element(By.ID, "f-task")).first_selected_option.get_attribute("value") == str(made["id"])


def test_another_users_task_is_not_found_and_a_signed_out_visitor_signs_in_first(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    vh, alice, _, _ = site
    vh("user", "add", "bob")
    vh("project", "add", "hidden", "--owner", "bob")
    bob = Client(vh.api_url(), vh.json("user", "token", "bob")["token"])
    bobs = project_id(bob, "hidden")
    bobs_commit = bob.upload(bobs, package(FILES)).json()["identifier"]
    theirs = start_task(bob, bobs, bobs_commit, "tune", {"rate": [0.7], "model": ["secret-model"]})
    api = vh.api_url()

    browser.delete_all_cookies()
    browser.get(f"{api}/tasks/{theirs['id']}/")
    assert browser.current_url == f"{api}/login?next=/tasks/{theirs['id']}/"

    sign_in(browser, api, "/")
    for ref in (str(theirs["id"]), f"{bobs}:{theirs['counter']}", "999999"):
        browser.get(f"{api}/tasks/{ref}/")
        page = wait_for(lambda: browser.page_source if "Not found" in browser.page_source else None,
                        f"task {ref}: no not-found page")  # (page_source read at once came back empty once)
        assert "secret-model" not in page
    session = {"vh_orch_session": browser.get_cookie("vh_orch_session")["value"]}
    assert requests.get(f"{api}/tasks/{theirs['id']}/", cookies=session, timeout=30).status_code == 404
    assert alice.get(f"/api/v0/tasks/{theirs['id']}/").status_code == 404
    assert bob.get(f"/api/v0/tasks/{theirs['id']}/").status_code == 200


def test_stop_a_task_from_its_page(browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = start_task(alice, pid, commit, "nap", {"seconds": [300, 301]})
    api = vh.api_url()
    sign_in(browser, api, f"/tasks/{made['id']}/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#children [data-status="started"]'),
             "no execution of the task started")
    assert browser.find_element(By.ID, "status").text == "started"

    # The session cookie alone, without the page's CSRF token, stops nothing.
    cookie = browser.get_cookie("vh_orch_session")
    refused = requests.post(f"{api}/api/v0/tasks/{made['id']}/stop/", cookies={"vh_orch_session": cookie["value"]},
                            headers={"Origin": api}, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    browser.find_element(By.ID, "stop").click()
    browser.switch_to.alert.dismiss()  # "Cancel" changes nothing
    time.sleep(0.5)
    assert alice.get(f"/api/v0/tasks/{made['id']}/").json()["status"] == "started"

    browser.find_element(By.ID, "stop").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_element(By.ID, "status").text == "stopped", "the status did not turn stopped")
    assert not browser.find_element(By.ID, "stop").is_displayed()
    task = alice.get(f"/api/v0/tasks/{made['id']}/").json()
    assert task["status"] == "stopped" and "alice" in task["status_reason"]
    assert {c["status"] for c in task["executions"]} == {"stopped"}
    wait_for(lambda: {s.text for s in browser.find_elements(By.CSS_SELECTOR, "#children .status")} == {"stopped"},
             "the executions' statuses did not turn stopped")


# -- charts, theme, task progress and compare (issue 29) ------------------------------------------

PANELS = """return [...document.querySelectorAll(arguments[0] + ' .panel')].map(p => ({
  key: p.dataset.key, scale: p.dataset.scale, min: p.uplot.scales.y.min, max: p.uplot.scales.y.max,
  distr: p.uplot.scales.y.distr, width: p.uplot.width, xticks: p.uplot.axes[0]._values || [],
  lines: p.uplot.series.slice(1).map((s, i) => ({label: s.label, width: s.width, raw: p.uplot.data[i + 1]})),
  legend: p.querySelector('.panel-legend').textContent}))"""


def panels(driver: Any, box: str) -> dict[str, dict[str, Any]]:
    """The uPlot panels drawn in `box` (a CSS selector), by metadata key: y scale, x tick labels, legend."""
    return {p["key"]: p for p in driver.execute_script(PANELS, box)}


def test_loss_and_accuracy_are_drawn_on_separate_scales(browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "fit")
    assert vh.wait(made["id"])["status"] == "complete"
    sign_in(browser, vh.api_url(), f"/executions/{made['id']}/")
    drawn = wait_for(lambda: (p := panels(browser, "#chart")) and set(p) == {"loss", "accuracy"} and p,
                     "the chart has no panel each for loss and accuracy")
    loss, accuracy = drawn["loss"], drawn["accuracy"]
    # loss (0.001-0.009) is not flattened on accuracy's 0.5-0.9 axis: each has a scale of its own.
    assert loss["max"] < 0.05 and accuracy["max"] >= 0.5, drawn
    assert loss["max"] - loss["min"] >= 0.005
    # The x axis is `step`: whole numbers only; the legend shows the last values before any hover.
    assert loss["xticks"] and all(float(t.replace(",", "")).is_integer() for t in loss["xticks"]), loss["xticks"]
    assert loss["legend"] == "loss: 0.001 (last)" and accuracy["legend"] == "accuracy: 0.9 (last)"
    assert browser.find_element(By.ID, "chart-empty").is_displayed() is False
    # Smoothing draws the average over the raw line, which stays (thin, faint) behind it.
    browser.execute_script("const s = document.getElementById('chart-smooth'); s.value = '0.5';"
                           "s.dispatchEvent(new Event('input'))")
    lines = wait_for(lambda: len(p := panels(browser, "#chart")["loss"]["lines"]) == 2 and p, "no raw line kept")
    assert [line["label"] for line in lines] == ["loss (raw)", "loss"] and lines[0]["width"] < lines[1]["width"]
    assert lines[0]["raw"] == [0.009, 0.007, 0.005, 0.003, 0.001] and lines[1]["raw"][-1] > 0.001
    browser.find_element(By.ID, "chart-log").click()
    wait_for(lambda: panels(browser, "#chart")["loss"]["distr"] == 3, "the log-scale toggle changed nothing")
    # Charts follow the window's width.
    browser.set_window_size(800, 1000)
    try:
        wait_for(lambda: panels(browser, "#chart")["loss"]["width"] < loss["width"] - 100, "the chart was not resized")
    finally:
        browser.set_window_size(1400, 1000)


def test_an_execution_without_metadata_says_so_and_shows_no_chart_controls(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "write")
    assert vh.wait(made["id"])["status"] == "complete"
    sign_in(browser, vh.api_url(), f"/executions/{made['id']}/")
    wait_for(lambda: browser.find_element(By.ID, "facts").text, "the execution page did not load")
    empty = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-empty:not([hidden])"), "no empty note")[0]
    assert empty.text == "No metadata yet."
    assert not browser.find_element(By.ID, "chart-controls").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#chart canvas")


def relative_luminance(rgb: tuple[int, ...]) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """WCAG's contrast ratio of two colours (1 to 21; AA asks 4.5 of normal text)."""
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# Each axis's tick-label colour as the canvas draws it, and the card behind it, as computed rgb().
AXIS_INK = """const rgb = (c) => { const probe = document.createElement('span'); probe.style.color = c;
  document.body.append(probe); const out = getComputedStyle(probe).color; probe.remove(); return out; };
return [...document.querySelectorAll(arguments[0])].filter(b => b.uplot || b.querySelector('.panel')).flatMap(b =>
  (b.uplot ? [b.uplot] : [...b.querySelectorAll('.panel')].map(p => p.uplot)).flatMap(u => u.axes.map((a, i) => ({
    ink: rgb(typeof a.stroke === 'function' ? a.stroke(u, i) : a.stroke),
    legend: getComputedStyle(b.querySelector('.panel-legend') || b).color,
    card: getComputedStyle(b.closest('.card')).backgroundColor}))))"""


def rgb_of(css: str) -> tuple[int, ...]:
    return tuple(int(float(part)) for part in css[css.index("(") + 1:css.index(")")].split(",")[:3])


def dark_axes_meeting_aa(driver: Any, charts: str) -> list[dict[str, str]]:
    """The axes of the charts in `charts` (a CSS selector) once redrawn in the dark theme's colours: each
    axis's ink, and the legend's, at WCAG AA contrast against a dark card."""
    def inks() -> list[dict[str, str]]:
        found: list[dict[str, str]] = driver.execute_script(AXIS_INK, charts)
        return found if found and all(contrast(rgb_of(a["ink"]), rgb_of(a["card"])) >= 4.5 for a in found) else []

    found = wait_for(inks, f"the axes of {charts} are not drawn at AA contrast in the dark theme")
    for axis in found:
        assert relative_luminance(rgb_of(axis["card"])) < 0.05  # a dark card, not the light one
        assert contrast(rgb_of(axis["legend"]), rgb_of(axis["card"])) >= 4.5
    return found  # type: ignore[no-any-return]


def test_dark_mode_tick_labels_meet_wcag_aa_and_the_theme_toggle_is_remembered(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "fit")
    assert vh.wait(made["id"])["status"] == "complete"
    sign_in(browser, vh.api_url(), f"/executions/{made['id']}/")
    wait_for(lambda: len(panels(browser, "#chart")) == 2, "the chart was not drawn")

    def theme() -> str:
        return str(browser.execute_script("return document.documentElement.dataset.theme || ''"))

    def background() -> str:
        return str(browser.execute_script("return getComputedStyle(document.body).backgroundColor"))

    try:
        Select(browser.find_element(By.ID, "theme")).select_by_value("light")
        wait_for(lambda: theme() == "light", "the light theme was not applied")
        light = background()
        Select(browser.find_element(By.ID, "theme")).select_by_value("dark")
        wait_for(lambda: theme() == "dark", "the dark theme was not applied")
        assert relative_luminance(rgb_of(background())) < 0.05 < relative_luminance(rgb_of(light))

        assert len(dark_axes_meeting_aa(browser, "#chart, #hardware")) >= 4  # x and y of both panels
        browser.refresh()  # remembered
        wait_for(lambda: len(panels(browser, "#chart")) == 2, "the chart was not drawn after a reload")
        assert theme() == "dark"
        assert Select(browser.find_element(By.ID, "theme")).first_selected_option.get_attribute("value") == "dark"
    finally:
        Select(browser.find_element(By.ID, "theme")).select_by_value("system")  # the other tests see the default
    assert theme() == "" and browser.execute_script("return localStorage.getItem('vh-orch-theme')") is None


def test_a_running_task_shows_its_progress_elapsed_time_and_best_so_far(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = start_task(alice, pid, commit, "ladder", {"rate": [0.7], "seconds": [1, 300]}, **ACCURACY)
    sign_in(browser, vh.api_url(), f"/tasks/{made['id']}/")

    def text() -> str:
        return browser.find_element(By.ID, "progress-text").text  # type: ignore[no-any-return]

    def bar() -> list[float]:
        return browser.execute_script(  # type: ignore[no-any-return]
            "const p = document.getElementById('progress'); return [p.value, p.max]")

    try:
        wait_for(lambda: text() == "1 of 2 finished", f"no progress of one finished child: {text()!r}")
        assert bar() == [1, 2]
        assert browser.find_element(By.ID, "status").text == "started"
        assert browser.find_element(By.ID, "elapsed").text.endswith(" elapsed")
        best = wait_for(lambda: browser.find_element(By.ID, "best").text, "no best shown while running")
        assert best.startswith("Best so far: #")
        shot(browser, "task-running")
    finally:
        alice.post(f"/api/v0/tasks/{made['id']}/stop/")
    wait_for(lambda: text() == "2 of 2 finished", f"the progress did not reach the end: {text()!r}")
    assert bar() == [2, 2]
    wait_for(lambda: browser.find_element(By.ID, "best").text.startswith("Best: #"),  # the task's own status last
             "the best was still called 'so far' after the task ended")


def test_compare_links_to_its_project_adds_and_removes_runs_and_marks_differences(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    runs = [submit(alice, pid, commit, "score", a=a) for a in (0.25, 0.5, 0.25)]
    for run in runs:
        assert vh.wait(run["id"])["status"] == "complete"
    api = vh.api_url()
    first, second, third = (str(r["id"]) for r in runs)
    sign_in(browser, api, f"/compare/?e={first}&e={second}")

    def columns() -> list[str]:
        return [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#cmp-table thead a")]

    wait_for(lambda: len(columns()) == 2, "the compare table has no column per run")
    back = browser.find_element(By.ID, "cmp-project")
    assert back.text == "demo" and back.get_attribute("href").startswith(f"{api}/projects/")
    differing = browser.find_elements(By.CSS_SELECTOR, '#cmp-table tr.differs')
    assert {r.get_attribute("data-key") for r in differing} == {"a", "accuracy"}
    cells = browser.find_elements(By.CSS_SELECTOR, '#cmp-table tr[data-key="a"] td.differs')
    assert [c.text for c in cells] == ["0.25", "0.5"]
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#cmp-chart .panel canvas"), "no compare chart")
    # Each run has one point, at 0 s since its start: a narrow x axis around it, not a default span.
    x_range = browser.execute_script(
        "const s = document.querySelector('#cmp-chart .panel').uplot.scales.x; return [s.min, s.max]")
    assert x_range == [-1, 1], x_range
    try:  # the compare chart in the dark theme: redrawn in its colours
        Select(browser.find_element(By.ID, "theme")).select_by_value("dark")
        assert len(dark_axes_meeting_aa(browser, "#cmp-chart")) == 2
    finally:
        Select(browser.find_element(By.ID, "theme")).select_by_value("system")

    add = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'#cmp-add option[value="{third}"]'),
                   "the run to add is not offered")[0]
    Select(browser.find_element(By.ID, "cmp-add")).select_by_value(add.get_attribute("value"))
    wait_for(lambda: browser.current_url.endswith(f"e={third}") and len(columns()) == 3, "the run was not added")
    browser.find_element(By.CSS_SELECTOR, f'#cmp-table button.remove[data-id="{second}"]').click()
    wait_for(lambda: len(columns()) == 2 and f"e={second}" not in browser.current_url, "the run was not removed")
    # The two left have the same values: nothing is marked.
    assert not browser.find_elements(By.CSS_SELECTOR, "#cmp-table .differs")
    browser.find_element(By.ID, "cmp-project").click()  # the way back
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'#executions tr[data-counter="{runs[0]["counter"]}"]'),
             "the project link did not lead to the project's table")


@pytest.mark.parametrize(("asked", "goes"), [
    ("/projects/1/", "/projects/1/"), ("//evil.example/x", "/"), ("https://evil.example/", "/"),
    ("/\\evil.example", "/"), ("", "/"), ("javascript:alert(1)", "/")])
def test_after_sign_in_only_a_path_of_this_site_is_followed(asked: str, goes: str) -> None:
    from vh_orch.web.pages import safe_next

    assert safe_next(asked) == goes


# -- the execution page's facts, command and run again; its log (issue 29) -------------------------

def fact_pairs_apart(driver: Any) -> list[str]:
    """The facts whose value is neither beside its label on the same row nor directly under it."""
    return driver.execute_script("""
        const apart = [];
        for (const fact of document.querySelectorAll('#facts .fact')) {
          const t = fact.querySelector('dt').getBoundingClientRect();
          const d = fact.querySelector('dd').getBoundingClientRect();
          const sameRow = Math.abs(d.top - t.top) < 4 && d.left >= t.right - 1;
          const stacked = d.top >= t.bottom - 1 && d.top - t.bottom < 12 && Math.abs(d.left - t.left) < 2;
          if (!(sameRow || stacked)) apart.push(fact.dataset.fact);
        }
        return apart;""")


def test_the_facts_grid_keeps_each_label_beside_its_value_and_the_reason_shows_beside_the_status(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "fails",
                                                   "title": "a run that gives up"}).json()
    assert vh.wait(made["id"])["status"] == "error"
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    try:
        for width in (1400, 800):
            browser.set_window_size(width, 1000)
            wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#facts .fact")) >= 10, "no facts shown")
            assert fact_pairs_apart(browser) == [], f"labels apart from their values at {width} px"
        assert browser.find_element(By.ID, "title").text == "a run that gives up"
        assert browser.find_element(By.ID, "step-name").text == "fails"
        # Read in one go: the facts are drawn again on each status event the stream replays (stale elements).
        title, text = wait_for(lambda: browser.execute_script(
            "const s = document.getElementById('commit-sha'); return s && [s.title, s.textContent]"), "no commit sha")
        assert title == commit and len(text) < len(commit)
        banner = wait_for(lambda: browser.find_element(By.ID, "status-banner").text, "no banner beside the status")
        assert banner.count("code 3") == 1  # the reason names the exit code: said once, not twice
        assert browser.find_element(By.ID, "status").text == "error"
    finally:
        browser.set_window_size(1400, 1000)


def test_the_command_copies_as_cli_commands_that_keep_a_hostile_value_as_data(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    import shlex

    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    hostile = "it's $(touch /tmp/pwned); `id` \\ \"q\""
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "tune",
                                                   "parameters": {"rate": 0.5, "model": hostile}}).json()
    vh.wait(made["id"])
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    orch = wait_for(lambda: browser.find_element(By.ID, "cli-vh-orch").text, "no vh-orch command shown")
    words = shlex.split(orch)
    assert words[:7] == ["vh-orch", "exec", "run", "tune", "--project", "demo", "--commit"]
    assert words[7] == commit and f"model={hostile}" in words and "rate=0.5" in words
    assert words[words.index(f"model={hostile}") - 1] == "-p"
    vh_words = shlex.split(browser.find_element(By.ID, "cli-vh").text)
    assert vh_words[:5] == ["vh", "exec", "run", "tune", "--adhoc"] and f"--model={hostile}" in vh_words
    assert "--rate=0.5" in vh_words
    assert browser.find_element(By.ID, "command").text.strip()  # the command that ran


def test_run_again_with_another_input_picked_from_earlier_outputs_and_a_title(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    first, second = (submit(alice, pid, commit, "write") for _ in range(2))
    datums = [vh.wait(w["id"])["outputs"][0]["datum"] for w in (first, second)]
    reader = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "read",
                                                     "inputs": {"data": [datums[0]]}}).json()
    vh.wait(reader["id"])
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{reader['id']}/")
    open_rerun_form(browser)
    field = wait_for(lambda: browser.find_elements(By.ID, "input-data"), "no field for the input")[0]
    assert field.get_attribute("value") == datums[0]
    offered = wait_for(lambda: [o.get_attribute("value") for o in
                                browser.find_elements(By.CSS_SELECTOR, "#earlier-outputs option")],
                       "no earlier outputs offered")
    assert datums[1] in offered
    wait_for(lambda: browser.find_element(By.ID, "rerun-environment").get_attribute("value") == "local",
             "the environment is not offered")
    assert browser.find_element(By.ID, "rerun-commit").get_attribute("value") == commit
    field.clear()
    field.send_keys(datums[1])
    browser.find_element(By.ID, "rerun-title").send_keys("reads the second")
    shot(browser, "execution-run-again-inputs")
    browser.find_element(By.CSS_SELECTOR, "#rerun-form button[type=submit]").click()
    wait_for(lambda: browser.current_url.rstrip("/").split("/")[-1] not in ("", str(reader["id"])),
             "not taken to the new execution")
    new_id = int(browser.current_url.rstrip("/").split("/")[-1])
    info = vh.wait(new_id)
    assert info["title"] == "reads the second" and info["status"] == "complete"
    source = {"id": second["id"], "counter": second["counter"]}
    assert alice.get(f"/api/v0/executions/{new_id}/").json()["inputs"] == [
        {"name": "data", "urls": [datums[1]], "outputs_of": [source]}]
    assert wait_for(lambda: browser.find_element(By.ID, "title").text, "no title") == "reads the second"


def test_the_log_filter_also_hides_lines_streamed_in_after_it_was_set(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "chatty")  # holds after its 2nd line until the test lets it go
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    browser.find_element(By.ID, "log-search").send_keys("LINE 8")
    seen_when_set = browser.execute_script(
        "return Math.max(0, ...[...document.querySelectorAll('#log .line')].map((r) => Number(r.dataset.seq)))")

    def running_duration() -> list[str]:  # [status, duration] as shown together
        return browser.execute_script("const d = document.getElementById('duration');"
                                      "return [document.getElementById('status').textContent, d ? d.textContent : '']")

    first = wait_for(lambda: (lambda s: s[1] if s[0] == "started" and s[1] else None)(running_duration()),
                     "no duration shown while it runs")
    wait_for(lambda: (lambda s: s[0] == "started" and s[1] not in ("", first))(running_duration()),
             "the duration does not tick while it runs")
    let_go(vh, made["id"])
    wait_for(lambda: browser.find_element(By.ID, "status").text == "complete", "it did not complete")
    rows = browser.execute_script("""return [...document.querySelectorAll('#log .line')].map((r) =>
        ({seq: Number(r.dataset.seq), text: r.dataset.message, hidden: r.hidden}))""")
    later = [r for r in rows if r["seq"] > seen_when_set]
    assert any(r["text"] == "line 3" for r in later), "the lines were not streamed in after the filter was set"
    assert [r["text"] for r in rows if not r["hidden"]] == ["line 8"]
    assert browser.find_element(By.CSS_SELECTOR, "#log mark").text == "line 8"
    assert browser.find_element(By.ID, "log-count").text == "1 match"
    browser.find_element(By.ID, "log-next").click()
    assert browser.find_element(By.ID, "log-count").text == "1 of 1"
    assert browser.find_elements(By.CSS_SELECTOR, "#log mark.current")


def test_the_whole_log_downloads_and_searches_on_the_server_beyond_the_loaded_lines(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    import json

    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = submit(alice, pid, commit, "long")
    assert vh.wait(made["id"])["status"] == "complete"
    api = vh.api_url()
    sign_in(browser, api, f"/executions/{made['id']}/")
    wait_for(lambda: "row 1500 end" in browser.find_element(By.ID, "log").text, "the log's end is not shown")
    assert "row 7 end" not in browser.find_element(By.ID, "log").text  # only the last 1000 events are loaded

    # Search the whole stored log on the server.
    browser.find_element(By.ID, "log-search").send_keys("row 7 end")
    browser.find_element(By.ID, "log-server-search").click()
    found = wait_for(lambda: browser.find_element(By.ID, "log-results-lines").text, "no server search results")
    assert found.splitlines() == ["row 7 end"]
    assert browser.find_element(By.ID, "log-count").text == "0 matches"  # among the loaded lines: none
    assert browser.find_element(By.ID, "log-results-note").text.startswith("1 line of the whole log holds")
    shot(browser, "execution-log-search")
    for hostile in (".*", "%", "row 1_ end", "(a+)+$"):  # plain substrings: no pattern language anywhere
        assert alice.get(f"/api/v0/executions/{made['id']}/events/", params={"search": hostile}).json()["events"] == []
    too_long = alice.get(f"/api/v0/executions/{made['id']}/events/", params={"search": "x" * 201})
    assert too_long.status_code == 400 and "search" in too_long.json()

    # stderr only, and timestamps.
    browser.find_element(By.ID, "log-search").clear()
    browser.execute_script("document.getElementById('log-search').dispatchEvent(new Event('input'))")
    browser.find_element(By.ID, "log-stderr").click()
    visible = browser.execute_script("return [...document.querySelectorAll('#log .line')].filter((r) => !r.hidden)"
                                     ".map((r) => r.dataset.message)")
    assert visible == ["only on stderr"]
    browser.find_element(By.ID, "log-times").click()
    stamp = browser.find_element(By.CSS_SELECTOR, "#log .line.stderr .ts")
    assert stamp.is_displayed() and ":" in stamp.text

    # Download: every line, as `vh-orch exec logs` has them, under a file name.
    link = browser.find_element(By.ID, "download-log").get_attribute("href")
    got = browser.execute_async_script("""const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(async (r) => done({status: r.status, disposition: r.headers.get('Content-Disposition'),
                                                    text: await r.text()}));""", link)
    assert got["status"] == 200 and got["disposition"] == f'attachment; filename="demo-{made["counter"]}-log.txt"'
    printed = [json.loads(line) for line in vh("exec", "logs", str(made["id"]), "--json").stdout.splitlines()]
    assert got["text"].splitlines() == [e["text"] for e in printed if e["kind"] == "log"]
    assert len(got["text"].splitlines()) == 1501

    # Someone else's log is not found.
    vh("user", "add", "carol")
    carol = Client(api, vh.json("user", "token", "carol")["token"])
    assert carol.get(f"/api/v0/executions/{made['id']}/log.txt").status_code == 404
    assert carol.get(f"/api/v0/executions/{made['id']}/events/", params={"search": "row"}).status_code == 404
    assert alice.get(f"/api/v0/executions/{made['id']}/log.txt").status_code == 200


# -- the project table ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table_project(site: tuple[VhOrch, Client, str, str]) -> dict[str, Any]:
    """A project of alice's own: two `score` runs whose values differ only in the 6th digit (titled so
    that title order is the reverse of value order), one stopped and one failed execution."""
    vh, alice, _, _ = site
    vh("project", "add", "table", "--owner", "alice")
    pid = project_id(alice, "table")
    commit = alice.upload(pid, package(FILES)).json()["identifier"]
    scored = [alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "score",
                                                      "parameters": {"a": a}, "title": title}).json()
              for a, title in ((0.996312, "zulu"), (0.996338, "alpha"))]
    idle = submit(alice, pid, commit, "idle")
    failed = submit(alice, pid, commit, "fail")
    vh("exec", "stop", str(idle["id"]))
    for e in [*scored, idle, failed]:
        assert vh.wait(e["id"])["status"] in ("complete", "stopped", "error")
    assert vh.wait(idle["id"])["status"] == "stopped" and vh.wait(failed["id"])["status"] == "error"
    return {"pid": pid, "low": scored[0]["counter"], "high": scored[1]["counter"]}


def table_rows(browser: Any) -> list[int]:
    return browser.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll('#executions tbody tr')].map(r => Number(r.dataset.counter))")


def click_sort(browser: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'button.sort[data-key="{key}"]'),
             f"no sortable {key} column")[0].click()


def test_parameter_and_title_columns_sort_and_the_sort_survives_a_reload(
        browser: Any, site: tuple[VhOrch, Client, str, str], table_project: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    vh, _, _, _ = site
    pid, low, high = table_project["pid"], table_project["low"], table_project["high"]
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/?step=score")
    wait_for(lambda: sorted(table_rows(browser)) == sorted([low, high]), "the step filter from the address was lost")
    click_sort(browser, "parameters.a")
    wait_for(lambda: table_rows(browser) == [high, low], f"not sorted by a, highest first: {table_rows(browser)}")
    assert "ordering=-parameters.a" in browser.current_url and "step=score" in browser.current_url
    browser.refresh()
    wait_for(lambda: table_rows(browser) == [high, low], f"the sort did not survive a reload: {table_rows(browser)}")
    header = browser.find_element(By.CSS_SELECTOR, 'button.sort[data-key="parameters.a"]').find_element(By.XPATH, "..")
    assert header.get_attribute("aria-sort") == "descending"

    # Values that differ in the 6th digit read differently, in parameter and metadata columns alike;
    # the full value on hover; the best accuracy marked once sorted by it.
    for key in ("parameters.a", "accuracy"):
        cells = browser.find_elements(By.CSS_SELECTOR, f'#executions td[data-key="{key}"]')
        texts = [c.text for c in cells]
        assert len(texts) == 2 and texts[0] != texts[1], (key, texts)
        assert {c.get_attribute("title") for c in cells} == {"0.996338", "0.996312"}, key
        assert all(c.value_of_css_property("text-align") == "right" for c in cells)
    click_sort(browser, "accuracy")
    best = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#executions td.best-value[data-key="accuracy"]'),
                    "the best accuracy is not marked")
    assert len(best) == 1 and best[0].get_attribute("title").startswith("0.996338")

    click_sort(browser, "title")  # descending first: zulu (the lower value) above alpha
    wait_for(lambda: table_rows(browser) == [low, high], f"not sorted by title: {table_rows(browser)}")
    assert "ordering=-title" in browser.current_url
    browser.refresh()
    wait_for(lambda: table_rows(browser) == [low, high],
             f"the title sort did not survive a reload: {table_rows(browser)}")
    titles = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#executions td.title a")]
    assert titles == ["zulu", "alpha"]


def test_the_column_picker_is_remembered_and_in_the_address(
        browser: Any, site: tuple[VhOrch, Client, str, str], table_project: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    vh, _, _, _ = site
    pid = table_project["pid"]
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/?step=score")
    browser.find_element(By.CSS_SELECTOR, "#columns-picker summary").click()
    offered = wait_for(lambda: [b.get_attribute("data-column") for b in
                                browser.find_elements(By.CSS_SELECTOR, "#columns-list input")], "no columns offered")
    assert offered.index("meta:accuracy") < offered.index("param:a"), offered  # the step's metadata first
    box = browser.find_element(By.CSS_SELECTOR, '#columns-list input[data-column="meta:accuracy"]')
    assert box.is_selected()
    box.click()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, '#executions td[data-key="accuracy"]'),
             "the unpicked column is still shown")
    assert "columns=" in browser.current_url and "meta%3Aaccuracy" not in browser.current_url
    browser.get(f"{api}/projects/{pid}/?step=score")  # remembered for the project in this browser, not the address
    wait_for(lambda: table_rows(browser), "no rows")
    assert not browser.find_elements(By.CSS_SELECTOR, '#executions td[data-key="accuracy"]')
    browser.find_element(By.CSS_SELECTOR, "#columns-picker summary").click()
    browser.find_element(By.ID, "columns-reset").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#executions td[data-key="accuracy"]'),
             "the step's defaults did not come back")


def test_stopped_and_error_badges_differ_and_the_page_fits_800_px(
        browser: Any, site: tuple[VhOrch, Client, str, str], table_project: dict[str, Any]) -> None:
    vh, _, pid, _ = site
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{table_project['pid']}/")

    def colour(status: str) -> str:
        return browser.execute_script(  # type: ignore[no-any-return]
            f"const b = document.querySelector('#executions .status[data-status={status}]');"
            "return b ? getComputedStyle(b).color : ''")

    stopped, error = wait_for(lambda: (colour("stopped"), colour("error")) if colour("error") else None,
                              "no stopped and error badges")
    assert stopped and stopped != error, (stopped, error)

    # Every column of the busy project: a table far wider than 800 px, which scrolls inside its card.
    vh, alice, pid, commit = site
    for made in (submit(alice, pid, commit, "bounded", epochs=5, model="tree"),
                 submit(alice, pid, commit, "tune", rate=0.3, model="linear")):
        vh.wait(made["id"])
    every = ["title", "step", "started", "duration", "environment", "creator", "param:a", "param:epochs",
             "param:model", "param:rate", "param:seconds", "meta:accuracy", "meta:loss", "meta:step"]
    browser.get(f"{api}/projects/{pid}/?columns={','.join(every)}")
    wait_for(lambda: table_rows(browser), "no rows")
    try:
        browser.set_window_size(800, 1000)
        wait_for(lambda: browser.execute_script("return innerWidth") <= 800, "the window did not narrow")
        widths = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
        assert widths[0] <= widths[1], f"the page is wider than the window at 800 px: {widths}"
        box = browser.execute_script("const b = document.querySelector('#executions').parentElement;"
                                     "return [b.scrollWidth, b.clientWidth]")
        assert box[0] > box[1], f"the table is not wider than its box, so this proves nothing: {box}"
        pinned = browser.execute_script(
            "const s = document.querySelector('#executions td.pin-status'); return getComputedStyle(s).position")
        assert pinned == "sticky"
    finally:
        browser.set_window_size(1400, 1000)


def test_a_missing_or_forbidden_execution_page_is_html_with_a_link_home(
        browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, _, _ = site
    api = vh.api_url()
    vh("user", "add", "dave")  # not carol: the log test above made her in this module's installation
    vh("project", "add", "daves", "--owner", "dave")
    dave = Client(api, vh.json("user", "token", "dave")["token"])
    dpid = project_id(dave, "daves")
    theirs = submit(dave, dpid, dave.upload(dpid, package(FILES)).json()["identifier"], "score", a=0.1)
    sign_in(browser, api, "/")
    for path in ("/executions/999999/", f"/executions/{theirs['id']}/", "/nowhere/at/all"):
        browser.get(f"{api}{path}")
        home = wait_for(lambda: browser.find_elements(By.ID, "home"), f"{path}: no link home")[0]
        assert home.get_attribute("href") == f"{api}/"
        assert browser.find_elements(By.CSS_SELECTOR, "header.top a.brand"), f"{path}: not inside the site's layout"
        assert "score" not in browser.find_element(By.TAG_NAME, "main").text
    shot(browser, "not-found")
    home.click()
    wait_for(lambda: browser.current_url == f"{api}/", "the link did not lead home")
    session = {"vh_orch_session": browser.get_cookie("vh_orch_session")["value"]}
    page = requests.get(f"{api}/executions/{theirs['id']}/", cookies=session, timeout=30)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    answer = alice.get(f"/api/v0/executions/{theirs['id']}/")  # the API keeps JSON
    assert answer.status_code == 404 and answer.json()["detail"]


@pytest.mark.screenshots
def test_a_project_in_use_as_the_screenshots_show_it(browser: Any, site: tuple[VhOrch, Client, str, str]) -> None:
    """docs/screenshots/: training runs as a user has them after an afternoon: the project table by
    accuracy with the parameters beside it, the best run's charts and log, three runs compared."""
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    settings = [(0.05, 32, "baseline"), (0.1, 64, None), (0.2, 32, "faster"), (0.2, 128, "bigger batches"),
                (0.4, 64, None)]
    runs = []
    for rate, batch, title in settings:
        answer = alice.post("/api/v0/executions/", json={
            "project": pid, "commit": commit, "step": "train", "title": title,
            "parameters": {"learning_rate": rate, "batch_size": batch}})
        assert answer.status_code == 201, answer.text
        runs.append(answer.json())
    done = {run["id"]: vh.wait(run["id"]) for run in runs}
    assert all(info["status"] == "complete" for info in done.values())
    ranked = sorted(done, key=lambda i: -done[i]["metadata_latest"]["accuracy"])
    api = vh.api_url()
    sign_in(browser, api, "/")

    columns = ["title", "started", "duration", "param:learning_rate", "param:batch_size", "meta:accuracy",
               "meta:loss", "meta:epoch"]
    browser.get(f"{api}/projects/{pid}/?step=train&ordering=-accuracy&columns={','.join(columns)}")
    wait_for(lambda: table_rows(browser) == [done[i]["counter"] for i in ranked], "not sorted by accuracy")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#executions td.best-value")) == 1
    shot(browser, "project", variants=True)

    browser.get(f"{api}/executions/{ranked[0]}/")
    wait_for(lambda: set(panels(browser, "#chart")) == {"loss", "accuracy"}, "no chart of loss and accuracy")
    wait_for(lambda: "epoch 10/10" in browser.find_element(By.ID, "log").text, "the log did not load")
    shot(browser, "execution", variants=True)

    browser.get(f"{api}/compare/?" + "&".join(f"e={i}" for i in (ranked[0], ranked[2], ranked[-1])))
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#cmp-chart .panel canvas")) >= 1, "no compare chart")
    assert {r.get_attribute("data-key") for r in browser.find_elements(By.CSS_SELECTOR, "#cmp-table tr.differs")} \
        >= {"learning_rate", "accuracy"}
    shot(browser, "compare", variants=True)
