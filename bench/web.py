"""The web UI in Debian's headless chromium: a 1,000,000-line execution's page, and live latency.

    .venv/bin/python bench/web.py [--lines 1000000] [--ticks 100]

1. An execution that printed N lines: from opening its page to its last line being visible.
   Reference: `vh-orch exec logs ID` printing every line to /dev/null.
2. An execution that prints its wall-clock time every 50 ms: from the print to the line being in
   the page (a MutationObserver in the page notes the time). Reference: `vh-orch exec logs --follow`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import fresh_home, percentile, print_table  # noqa: E402
from api import TICKER_PY, start_daemon  # noqa: E402

from vh_orch.orchestrator.users import hash_password  # noqa: E402

PASSWORD = "bench password 1"
STEPS = """\
- step:
    name: many
    image: vh-orch/example-python:3.11
    command: seq 1 {lines}
- step:
    name: ticker
    image: vh-orch/example-python:3.11
    command: python3 ticker.py {ticks}
"""
OBSERVE = """
window.__lat = [];
new MutationObserver((changes) => {
  const now = Date.now() / 1000;
  for (const c of changes) for (const n of c.addedNodes) {
    const m = /^tick (\\S+)/.exec((n.dataset && n.dataset.message) || "");  // a line: time, then message
    if (m) window.__lat.push(now - Number(m[1]));
  }
}).observe(document.getElementById("log"), { childList: true });
"""


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--no-proxy-server",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_until(check, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=100)
    args = parser.parse_args()

    settings, store = fresh_home("web")
    store.create_user("bench", is_admin=True, password_hash=hash_password(PASSWORD))
    folder = settings.home / "project"
    folder.mkdir()
    (folder / "valohai.yaml").write_text(STEPS.format(lines=args.lines, ticks=args.ticks))
    (folder / "ticker.py").write_text(TICKER_PY)
    env = dict(os.environ, VH_ORCH_HOME=str(settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
    daemon, api = start_daemon(env, settings.home / "serve.log")
    cli = str(Path(sys.executable).parent / "vh-orch")
    driver = browser()
    try:
        def run(step: str) -> int:
            out = subprocess.run([cli, "exec", "run", step, "--project", "bench", "--adhoc", str(folder), "--json"],
                                 env=env, capture_output=True, text=True, check=True).stdout
            import json

            return int(json.loads(out)["id"])

        many = run("many")
        subprocess.run([cli, "exec", "wait", str(many), "--timeout", "600"], env=env, check=True)
        driver.get(f"{api}/login")
        driver.find_element("name", "username").send_keys("bench")
        driver.find_element("name", "password").send_keys(PASSWORD)
        driver.find_element("css selector", "form button[type=submit]").click()
        wait_until(lambda: "/login" not in driver.current_url)

        last = str(args.lines)
        opened = []
        for _ in range(5):
            t0 = time.perf_counter()
            driver.get(f"{api}/executions/{many}/")
            wait_until(lambda: driver.execute_script(
                "const l = document.getElementById('log'); const s = l && l.lastElementChild;"
                "return !!s && !!s.previousElementSibling && s.previousElementSibling.dataset.message === arguments[0]",
                last))
            opened.append(time.perf_counter() - t0)
        dom_lines = driver.execute_script("return document.getElementById('log').childElementCount")
        ref = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([cli, "exec", "logs", str(many)], env=env, stdout=subprocess.DEVNULL, check=True)
            ref.append(time.perf_counter() - t0)

        ticker = run("ticker")
        driver.get(f"{api}/executions/{ticker}/")
        driver.execute_script(OBSERVE)
        follow_lat: list[float] = []

        def follow() -> None:
            proc = subprocess.Popen([cli, "exec", "logs", str(ticker), "--follow"], env=env, stdout=subprocess.PIPE,
                                    text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("tick "):
                    follow_lat.append(time.time() - float(line.split()[1]))
            proc.wait(60)

        reader = threading.Thread(target=follow)
        reader.start()
        subprocess.run([cli, "exec", "wait", str(ticker), "--timeout", "300"], env=env, check=True)
        reader.join(60)
        time.sleep(1)
        page_lat = driver.execute_script("return window.__lat")
        assert requests.get(f"{api}/api/docs", timeout=30).status_code == 200
    finally:
        driver.quit()
        daemon.terminate()
        daemon.wait(60)
    ms = lambda xs, q: f"{percentile(xs, q) * 1000:.0f} ms"  # noqa: E731
    print_table(f"web UI in headless chromium ({args.lines:,} lines; {args.ticks} live lines)",
                ["measure", "vh-orch", "reference"], [
                    [f"open a {args.lines:,}-line execution: last line visible (p50 / max of 5)",
                     f"{percentile(opened, 50):.2f} s / {max(opened):.2f} s ({dom_lines} lines in the page)",
                     f"`vh-orch exec logs` of every line to /dev/null: {percentile(ref, 50):.2f} s"],
                    ["live: line printed -> visible in the page (p50 / p95)",
                     f"{ms(page_lat, 50)} / {ms(page_lat, 95)} ({len(page_lat)} lines)",
                     f"`vh-orch exec logs --follow`: {ms(follow_lat, 50)} / {ms(follow_lat, 95)}"],
                ])


if __name__ == "__main__":
    main()
