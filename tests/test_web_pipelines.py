"""Pipelines, datasets and starting work from the web UI, in a real browser (Debian's chromium through
selenium and chromium-driver, as tests/test_web.py drives it) against one `vh-orch serve` for the module:
the pipeline page's graph, live, with Approve and Stop; the project page's "New execution", "New task"
and "New pipeline" forms (a bad value shows the API's own message and creates nothing); datasets and
the execution that made each version. Alice is no administrator: everything goes the API's way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from conftest import VhOrch, eventually, installation
from test_api_security import Client, package, project_id
from test_users import PASSWORD, with_stdin
from test_web import _pages_keep_to_their_csp, browser, shot, sign_in, wait_for  # noqa: F401 (fixtures)

STEPS = b"""
- step:
    name: bounded
    image: vh-orch/busybox:test
    command: echo {parameters}
    parameters:
      - name: epochs
        type: integer
        min: 1
        max: 100
        default: 5
        pass-as: "{v}"
      - name: model
        type: string
        choices: [linear, tree]
        default: linear
        pass-as: "{v}"
- step:
    name: read
    image: vh-orch/busybox:test
    command: ls "$VH_INPUTS_DIR"
    inputs:
      - name: data
        optional: true
- step:
    name: nap
    image: vh-orch/busybox:test
    command: sleep {parameter-value:seconds}
    parameters:
      - name: seconds
        type: integer
        default: 300
- step:
    name: publish
    image: vh-orch/busybox:test
    command:
      - echo one > "$VH_OUTPUTS_DIR/one.txt"
      - echo two > "$VH_OUTPUTS_DIR/two.txt"
      - >-
        printf '%s\\n' '{"file": "one.txt", "metadata": {"valohai.dataset-versions": ["dataset://shots/v1"]}}'
        '{"file": "two.txt", "metadata": {"valohai.dataset-versions": ["dataset://shots/v1"]}}'
        > "$VH_OUTPUTS_DIR/valohai.metadata.jsonl"
- task:
    name: sweep
    step: bounded
    type: grid_search
    parameters:
      - name: epochs
        style: multiple
        rules: {items: [1, 2]}
- pipeline:
    name: chain
    parameters:
      - name: epochs
        targets: [first.parameter.epochs]
        default: 3
    nodes:
      - name: first
        type: execution
        step: bounded
      - name: second
        type: execution
        step: bounded
    edges:
      - [first.parameter.epochs, second.parameter.epochs]
- pipeline:
    name: gated
    nodes:
      - name: first
        type: execution
        step: bounded
      - name: held
        type: execution
        step: bounded
        actions:
          - when: node-starting
            then: require-approval
    edges:
      - [first.parameter.epochs, held.parameter.epochs]
- pipeline:
    name: slow
    nodes:
      - name: nap
        type: execution
        step: nap
      - name: after
        type: execution
        step: bounded
    edges:
      - [nap.parameter.seconds, after.parameter.epochs]
"""
FILES = {"valohai.yaml": STEPS}
Site = tuple[VhOrch, Client, str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A daemon running containers; alice (no administrator, with a password) owns project `demo`."""
    with installation(tmp_path_factory.mktemp("webpipes") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
        vh("project", "add", "demo", "--owner", "alice")
        vh.start_daemon()
        alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
        pid = project_id(alice, "demo")
        commit = alice.upload(pid, package(FILES)).json()["identifier"]
        yield vh, alice, pid, commit


def start_pipeline(client: Client, pid: str, commit: str, name: str, **parameters: Any) -> dict[str, Any]:
    """What the "New pipeline" form does: the converted payload, then the pipelines route."""
    payload = client.post(f"/api/v0/commits/{commit}/pipeline-payload/",
                          json={"project": pid, "pipeline": name, "parameters": parameters})
    assert payload.status_code == 200, payload.text
    made = client.post("/api/v0/pipelines/", json=payload.json())
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def pipeline(client: Client, pipeline_id: int) -> dict[str, Any]:
    answer = client.get(f"/api/v0/pipelines/{pipeline_id}/")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def node_states(browser: Any) -> dict[str, str]:
    return browser.execute_script(  # type: ignore[no-any-return]
        "return Object.fromEntries([...document.querySelectorAll('#graph g.node')]"
        ".map(g => [g.dataset.node, g.dataset.status]))")


def listed_pipelines(browser: Any) -> list[list[str]]:
    """The project page's pipelines, top to bottom: id, counter, link, status (read in one go: the
    table is rebuilt every few seconds)."""
    return browser.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll('#pipelines tbody tr')].map(r => [r.dataset.pipeline,"
        " r.querySelector('a').textContent, r.querySelector('a').getAttribute('href'),"
        " r.querySelector('.status').textContent])")


def counts(vh: VhOrch, alice: Client, pid: str) -> tuple[int, int, int]:
    """How many executions, tasks and pipelines exist (a refused form must change none)."""
    tasks = alice.get(f"/api/v0/tasks/?project={pid}").json()["count"]
    pipelines = alice.get(f"/api/v0/pipelines/?project={pid}").json()["count"]
    return len(vh.json("exec", "list")), tasks, pipelines


def open_form(browser: Any, api: str, pid: str, kind: str, what: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    if not browser.current_url.startswith(f"{api}/projects/{pid}/"):
        browser.get(f"{api}/projects/{pid}/")
    browser.find_element(By.ID, f"new-{kind}").click()
    wait_for(lambda: any(o.get_attribute("value") == what
                         for o in browser.find_elements(By.CSS_SELECTOR, "#new-what option")),
             f"the {kind} form does not offer {what}")
    Select(browser.find_element(By.ID, "new-what")).select_by_value(what)


def set_field(browser: Any, field_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(value)


def submit_refused(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "new-submit").click()
    shown: str = wait_for(lambda: browser.find_element(By.ID, "new-error").text, "no error shown")
    return shown


def landed_on(browser: Any, api: str, kind: str) -> int:
    wait_for(lambda: browser.current_url.startswith(f"{api}/{kind}/"), f"not taken to the new {kind[:-1]}'s page")
    return int(browser.current_url.rstrip("/").split("/")[-1])


# -- the API the forms read ----------------------------------------------------------------------

def test_a_commits_definitions_list_typed_steps_tasks_and_pipelines(site: Site) -> None:
    vh, alice, pid, commit = site
    answer = alice.get(f"/api/v0/commits/{commit}/definitions/?project={pid}")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    steps = {s["name"]: s for s in found["steps"]}
    epochs = next(p for p in steps["bounded"]["parameters"] if p["name"] == "epochs")
    assert (epochs["type"], epochs["min"], epochs["max"], epochs["default"]) == ("integer", 1, 100, 5)
    model = next(p for p in steps["bounded"]["parameters"] if p["name"] == "model")
    assert model["choices"] == ["linear", "tree"]
    assert steps["read"]["inputs"] == [{"name": "data", "default": [], "optional": True, "description": None}]
    assert found["tasks"] == [{"name": "sweep", "step": "bounded", "body": {
        "type": "grid_search", "parameters": {"epochs": {"style": "multiple", "rules": {"items": [1, 2]}}},
        "configuration": {}}}]
    chain = next(p for p in found["pipelines"] if p["name"] == "chain")
    assert chain["nodes"] == ["first", "second"]
    [param] = chain["parameters"]  # typed as the step parameter it sets
    assert (param["name"], param["type"], param["min"], param["max"]) == ("epochs", "integer", 1, 100)
    assert param["default"] == 3

    # The converted payload, as `vh pipeline run` would post it, with a parameter's value in place.
    payload = alice.post(f"/api/v0/commits/{commit}/pipeline-payload/",
                         json={"project": pid, "pipeline": "chain", "parameters": {"epochs": 9}}).json()
    first = next(n for n in payload["nodes"] if n["name"] == "first")
    assert payload["parameters"]["epochs"]["expression"] == 9 and first["template"]["commit"] == commit
    assert payload["project"] == pid and payload["title"] == "chain"
    refused = alice.post(f"/api/v0/commits/{commit}/pipeline-payload/",
                         json={"project": pid, "pipeline": "chain", "parameters": {"nope": 1}})
    assert refused.status_code == 400 and "has no parameter 'nope'" in refused.json()["parameters"][0]["message"]
    unknown = alice.post(f"/api/v0/commits/{commit}/pipeline-payload/", json={"project": pid, "pipeline": "zzz"})
    assert unknown.status_code == 400 and "unknown pipeline 'zzz'" in unknown.json()["pipeline"][0]["message"]
    assert alice.get(f"/api/v0/commits/~{'0' * 64}/definitions/?project={pid}").status_code == 404


def test_another_users_commit_definitions_and_pipeline_are_not_found(browser: Any, site: Site) -> None:
    vh, alice, pid, commit = site
    vh("user", "add", "bob")
    vh("project", "add", "hidden", "--owner", "bob")
    bob = Client(vh.api_url(), vh.json("user", "token", "bob")["token"])
    bobs = project_id(bob, "hidden")
    bobs_commit = bob.upload(bobs, package(FILES)).json()["identifier"]
    theirs = start_pipeline(bob, bobs, bobs_commit, "gated")
    for path in (f"/api/v0/commits/{bobs_commit}/definitions/?project={bobs}",
                 f"/api/v0/pipelines/{theirs['id']}/"):
        assert alice.get(path).status_code == 404, path
    for path, body in ((f"/api/v0/commits/{bobs_commit}/pipeline-payload/", {"project": bobs, "pipeline": "slow"}),
                       (f"/api/v0/pipelines/{theirs['id']}/nodes/held/approve/", {})):
        assert alice.post(path, json=body).status_code == 404, path

    api = vh.api_url()
    sign_in(browser, api, "/")
    for ref in (str(theirs["id"]), f"{bobs}:{theirs['counter']}", "999999"):
        browser.get(f"{api}/pipelines/{ref}/")
        # Waited for: chromium has now and then answered an empty page_source just after a 404 page's load.
        wait_for(lambda: "Not found" in browser.page_source, f"{ref}: no not-found page")
        assert "gated" not in browser.page_source
    session = {"vh_orch_session": browser.get_cookie("vh_orch_session")["value"]}
    assert requests.get(f"{api}/pipelines/{theirs['id']}/", cookies=session, timeout=30).status_code == 404
    assert bob.get(f"/api/v0/pipelines/{theirs['id']}/").status_code == 200


# -- the pipeline page ---------------------------------------------------------------------------

def test_the_pipeline_page_draws_the_graph_live_and_approves_a_held_node(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = start_pipeline(alice, pid, commit, "gated")
    api = vh.api_url()
    sign_in(browser, api, f"/pipelines/{made['id']}/")
    browser.execute_script("window.__sameDocument = true")
    wait_for(lambda: node_states(browser).keys() == {"first", "held"}, f"the graph lacks nodes: {node_states(browser)}")
    edges = browser.execute_script(  # read in one go: the graph is redrawn when a node moves
        "return [...document.querySelectorAll('#graph path.edge')].map(e => [e.dataset.from, e.dataset.to])")
    assert edges == [["first", "held"]]
    # Laid out by depth: the downstream node right of its upstream one.
    x = browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#graph g.node')]"
                               ".map(g => [g.dataset.node, Number(g.querySelector('rect').getAttribute('x'))]))")
    assert x["held"] > x["first"]

    # The first node runs and completes; the held one waits: each shown as it happens, without a reload.
    wait_for(lambda: node_states(browser) == {"first": "complete", "held": "waiting-approval"},
             f"the graph did not move to first complete, held waiting: {node_states(browser)}")
    first = pipeline(alice, made["id"])["nodes"][0]
    link = browser.execute_script("return document.querySelector('a.node-link[data-node=first]').getAttribute('href')")
    assert link == f"/executions/{first['execution']['id']}/"
    color = browser.execute_script(
        "return getComputedStyle(document.querySelector('#graph g.node[data-node=first] rect')).stroke")
    held_color = browser.execute_script(
        "return getComputedStyle(document.querySelector('#graph g.node[data-node=held] rect')).stroke")
    assert color != held_color  # coloured by state
    shot(browser, "pipeline-waiting")

    button = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'button[data-approve="held"]'),
                      "no Approve button")[0]
    assert len(browser.find_elements(By.CSS_SELECTOR, "button[data-approve]")) == 1
    # The session cookie alone, without the page's CSRF token, approves nothing.
    cookie = browser.get_cookie("vh_orch_session")
    refused = requests.post(f"{api}/api/v0/pipelines/{made['id']}/nodes/held/approve/",
                            cookies={"vh_orch_session": cookie["value"]}, headers={"Origin": api}, timeout=30)
    assert refused.status_code == 403
    assert pipeline(alice, made["id"])["nodes"][1]["status"] == "waiting-approval"
    button.click()
    wait_for(lambda: node_states(browser) == {"first": "complete", "held": "complete"},
             f"the held node did not run once approved: {node_states(browser)}")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "complete", "the pipeline did not turn complete")
    assert browser.execute_script("return window.__sameDocument") is True
    assert not browser.find_element(By.ID, "stop").is_displayed()
    held = pipeline(alice, made["id"])["nodes"][1]
    assert held["approved_by"] == "alice"
    again = alice.post(f"/api/v0/pipelines/{made['id']}/nodes/held/approve/")
    assert again.status_code == 400 and "nothing to approve" in again.json()["pipeline"][0]["message"]
    shot(browser, "pipeline")

    # The project page lists it, linked to its page.
    browser.get(f"{api}/projects/{pid}/")
    rows = wait_for(lambda: listed_pipelines(browser), "the project page lists no pipeline")
    assert [str(made["id"]), f"={made['counter']}", f"/pipelines/{made['id']}/", "complete"] in rows


# -- starting work from the project page -----------------------------------------------------------

def test_a_new_execution_from_the_project_page(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")
    open_form(browser, api, pid, "execution", "step:bounded")
    epochs = wait_for(lambda: browser.find_elements(By.ID, "new-param-epochs"), "no epochs field")[0]
    assert [epochs.get_attribute(a) for a in ("value", "min", "max")] == ["5", "1", "100"]
    assert Select(browser.find_element(By.ID, "new-commit")).first_selected_option.get_attribute("value") == commit
    before = counts(vh, alice, pid)

    set_field(browser, "new-param-epochs", "500")
    error = submit_refused(browser)
    refused = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "bounded",
                                                       "parameters": {"epochs": 500, "model": "linear"}})
    assert refused.status_code == 400 and refused.json()["parameters"][0]["message"] == error  # the API's words
    assert counts(vh, alice, pid) == before

    # An input of a scheme nothing fetches: the API's message, nothing made.
    Select(browser.find_element(By.ID, "new-what")).select_by_value("step:read")
    set_field(browser, "new-input-data", "gopher://example.org/data.csv")
    error = submit_refused(browser)
    refused = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "read",
                                                       "inputs": {"data": ["gopher://example.org/data.csv"]}})
    assert refused.status_code == 400 and refused.json()["inputs"][0]["message"] == error
    assert counts(vh, alice, pid) == before

    Select(browser.find_element(By.ID, "new-what")).select_by_value("step:bounded")
    set_field(browser, "new-param-epochs", "7")
    Select(browser.find_element(By.ID, "new-param-model")).select_by_visible_text("tree")
    set_field(browser, "new-title", "from the form")
    Select(browser.find_element(By.ID, "new-environment")).select_by_visible_text("local")
    shot(browser, "project-new-execution")
    browser.find_element(By.ID, "new-submit").click()
    new_id = landed_on(browser, api, "executions")
    info = vh.wait(new_id)
    assert info["parameters"] == {"epochs": 7, "model": "tree"} and info["status"] == "complete"
    assert info["title"] == "from the form"


def test_a_new_task_from_the_project_page(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, _ = site
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")
    open_form(browser, api, pid, "task", "task:sweep")
    field = wait_for(lambda: browser.find_elements(By.ID, "new-param-epochs"), "no epochs field")[0]
    assert field.get_attribute("value") == "1, 2"  # the valohai.yaml task's values
    before = counts(vh, alice, pid)

    set_field(browser, "new-param-epochs", "1, 500")
    error = submit_refused(browser)
    assert "500" in error and "100" in error
    assert counts(vh, alice, pid) == before

    set_field(browser, "new-param-epochs", "1, 2, 3")
    browser.find_element(By.ID, "new-submit").click()
    task_id = landed_on(browser, api, "tasks")
    task = eventually("the task to end", lambda: (t := alice.get(f"/api/v0/tasks/{task_id}/").json())["status"]
                      in ("complete", "error", "stopped") and t)
    assert task["status"] == "complete"
    assert sorted(c["parameters"]["epochs"] for c in task["executions"]) == [1, 2, 3]


def test_a_new_pipeline_from_the_project_page(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    api = vh.api_url()
    earlier = start_pipeline(alice, pid, commit, "chain", epochs=2)  # so that the list below has two, whatever ran before
    sign_in(browser, api, f"/projects/{pid}/")
    open_form(browser, api, pid, "pipeline", "pipeline:chain")
    epochs = wait_for(lambda: browser.find_elements(By.ID, "new-param-epochs"), "no pipeline parameter field")[0]
    assert [epochs.get_attribute(a) for a in ("value", "type", "max")] == ["3", "number", "100"]
    assert browser.find_element(By.ID, "new-inputs-box").is_displayed() is False
    before = counts(vh, alice, pid)

    set_field(browser, "new-param-epochs", "0")
    error = submit_refused(browser)
    assert "first" in error and "epochs" in error
    assert counts(vh, alice, pid) == before

    set_field(browser, "new-param-epochs", "4")
    browser.find_element(By.ID, "new-submit").click()
    pipeline_id = landed_on(browser, api, "pipelines")
    wait_for(lambda: node_states(browser) == {"first": "complete", "second": "complete"},
             f"the new pipeline's nodes did not complete: {node_states(browser)}")
    wait_for(lambda: browser.find_element(By.ID, "status").text == "complete", "the pipeline did not turn complete")
    made = pipeline(alice, pipeline_id)
    assert made["status"] == "complete" and made["title"] == "chain"
    runs = [vh.json("exec", "info", str(n["execution"]["id"])) for n in made["nodes"]]
    assert [r["parameters"]["epochs"] for r in runs] == [4, 4]  # the pipeline parameter, then along the edge

    # The project page lists pipelines newest first.
    browser.get(f"{api}/projects/{pid}/")
    rows = wait_for(lambda: listed_pipelines(browser), "the project page lists no pipeline")
    assert rows[0][0] == str(pipeline_id) and str(earlier["id"]) in [r[0] for r in rows]
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)


# -- datasets ------------------------------------------------------------------------------------

def test_the_project_page_shows_datasets_and_the_execution_that_made_each_version(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "publish"})
    assert made.status_code == 201, made.text
    assert vh.wait(made.json()["id"])["status"] == "complete"
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")
    row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#datasets tr[data-dataset="shots"]'),
                   "the project page does not list the dataset")[0]
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "shots" and cells[1] == "1" and cells[2].startswith("v1")
    by = row.find_element(By.CSS_SELECTOR, "a.made-by")
    assert by.text == f"#{made.json()['counter']}"
    assert by.get_attribute("href") == f"{api}/executions/{made.json()['id']}/"

    row.find_element(By.CSS_SELECTOR, "td a").click()
    version = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#versions tr[data-version="v1"]'),
                       "the dataset page does not list v1")[0]
    version.find_element(By.TAG_NAME, "summary").click()
    files = sorted(a.text for a in version.find_elements(By.CSS_SELECTOR, "ul.files a"))
    assert files == ["one.txt", "two.txt"]
    assert version.find_element(By.CSS_SELECTOR, "a.made-by").get_attribute("href") == \
        f"{api}/executions/{made.json()['id']}/"
    shot(browser, "dataset")
    browser.get(f"{api}/datasets/999999/")
    wait_for(lambda: "Not found" in browser.page_source, "a missing dataset's page says nothing")  # an HTML page now


def test_the_forms_offer_what_the_picked_commits_valohai_yaml_defines(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    vh, alice, pid, commit = site
    extra = STEPS + b"""
- step:
    name: extra
    image: vh-orch/busybox:test
    command: "true"
"""
    newer = alice.upload(pid, package({"valohai.yaml": extra})).json()["identifier"]
    api = vh.api_url()
    sign_in(browser, api, f"/projects/{pid}/")

    def offered() -> list[str]:  # read in one go: the list is rebuilt when the commit changes
        return browser.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll('#new-what option')].map(o => o.value)")

    open_form(browser, api, pid, "execution", "step:extra")  # the newest commit is picked first
    commits = Select(browser.find_element(By.ID, "new-commit"))
    assert commits.first_selected_option.get_attribute("value") == newer
    assert commits.first_selected_option.text.startswith("latest: ")
    commits.select_by_value(commit)
    wait_for(lambda: "step:extra" not in offered() and "step:bounded" in offered(),
             f"the older commit's steps are not offered: {offered()}")


# -- last: a pipeline stopped from its page (a nap that a failed stop would leave running goes last) --

def test_stop_a_pipeline_from_its_page(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    vh, alice, pid, commit = site
    made = start_pipeline(alice, pid, commit, "slow")
    api = vh.api_url()
    sign_in(browser, api, f"/pipelines/{made['id']}/")
    wait_for(lambda: node_states(browser).get("nap") == "started",
             f"the nap node did not start: {node_states(browser)}")
    assert browser.find_element(By.ID, "stop").is_displayed()
    browser.find_element(By.ID, "stop").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_element(By.ID, "status").text == "stopped", "the pipeline did not turn stopped")
    assert not browser.find_element(By.ID, "stop").is_displayed()
    states = pipeline(alice, made["id"])
    assert states["status"] == "stopped"
    assert {n["name"]: n["status"] for n in states["nodes"]}["after"] != "complete"
    nap = next(n for n in states["nodes"] if n["name"] == "nap")
    assert vh.wait(nap["execution"]["id"])["status"] == "stopped"
