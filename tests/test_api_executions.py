"""vh-orch's own API for the UI and scripts: lists filtered, sorted by metadata and paged; events paged
from either end; metadata series; the live stream (Server-Sent Events); status. Real daemon, real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import WAIT_S, VhOrch, installation
from test_api_security import Client, package, project_id

# A step that prints {"accuracy": A} (with score.sh below): executions to sort by a metadata key.
SCORE_STEP = b"""
- step:
    name: score
    image: vh-orch/busybox:test
    command: sh score.sh {parameters}
    parameters:
      - name: a
        type: float
        pass-as: "{v}"
"""
STEPS = SCORE_STEP + b"""
- step:
    name: chatty
    image: vh-orch/busybox:test
    command:
      - sleep 1.5
      - |-
        for i in 1 2 3 4 5; do echo "line $i"; echo "{\\"step\\": $i, \\"loss\\": 0.$i}"; sleep 0.2; done
      - echo "to stderr" >&2
- step:
    name: silent
    image: vh-orch/busybox:test
    command: "true"
- step:
    name: write
    image: vh-orch/busybox:test
    command: echo hello > "$VH_OUTPUTS_DIR/hello.txt"
"""

SCORE = b'echo "{\\"accuracy\\": $1}"\n'


def setup(vh: VhOrch, project: str = "mine") -> tuple[Client, str, str]:
    """alice, a running daemon (containers: alice is no administrator), and a project of hers with the steps
    uploaded."""
    if vh.daemon is None:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("user", "add", "alice")
        vh.start_daemon()
    vh("project", "add", project, "--owner", "alice")
    alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
    pid = project_id(alice, project)
    commit = alice.upload(pid, package({"valohai.yaml": STEPS, "score.sh": SCORE})).json()["identifier"]
    return alice, pid, commit


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    """One installation for the tests that each work in a project of their own."""
    with installation(tmp_path_factory.mktemp("api-executions") / "home") as vh:
        yield vh


def submit(alice: Client, pid: str, commit: str, step: str, **params: Any) -> dict[str, Any]:
    answer = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": step,
                                                     "parameters": params})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_lists_filter_sort_by_metadata_and_page(shared: VhOrch) -> None:
    vh = shared
    alice, pid, commit = setup(vh, "lists")
    scores = [0.3, 0.9, 0.1, 0.7, 0.5]
    made = [submit(alice, pid, commit, "score", a=a) for a in scores]
    made.append(submit(alice, pid, commit, "silent"))  # prints no accuracy: last in either direction
    for e in made:
        assert vh.wait(e["id"])["status"] == "complete"

    def counters(query: str) -> list[int]:
        answer = alice.get(f"/api/v0/executions/?project={pid}&{query}")
        assert answer.status_code == 200, answer.text
        return [r["counter"] for r in answer.json()["results"]]

    assert counters("ordering=-accuracy") == [2, 4, 5, 1, 3, 6]
    assert counters("ordering=metadata.accuracy") == [3, 1, 5, 4, 2, 6]
    assert counters("ordering=-counter") == [6, 5, 4, 3, 2, 1]
    assert counters("ordering=-parameters.a") == [2, 4, 5, 1, 3, 6]  # `silent` has no `a`: last
    assert counters("ordering=parameters.a") == [3, 1, 5, 4, 2, 6]
    assert counters("step=silent") == [6]
    assert counters("status=incomplete") == []
    assert counters("status=complete&step=score&ordering=counter") == [1, 2, 3, 4, 5]
    assert counters("counter=2&counter=4&ordering=counter") == [2, 4]

    first = alice.get(f"/api/v0/executions/?project={pid}&ordering=-accuracy&limit=4").json()
    assert first["count"] == 6 and [r["counter"] for r in first["results"]] == [2, 4, 5, 1]
    second = alice.get(first["next"]).json()
    assert [r["counter"] for r in second["results"]] == [3, 6] and second["next"] is None
    assert second["results"][0]["metadata"] == {"accuracy": 0.1}

    for bad, field in (("status=running", "status"), ("counter=x", "counter"), ("ordering=-", "ordering"),
                       ("ordering=parameters.", "ordering")):
        answer = alice.get(f"/api/v0/executions/?project={pid}&{bad}")
        assert answer.status_code == 400 and field in answer.json(), (bad, answer.text)


def test_events_page_from_both_ends_and_metadata_series(shared: VhOrch) -> None:
    vh = shared
    alice, pid, commit = setup(vh, "events")
    made = submit(alice, pid, commit, "chatty")
    assert vh.wait(made["id"])["status"] == "complete"
    events = alice.get(made["urls"]["events"]).json()
    streams = [(e["stream"], e["message"]) for e in events["events"]]
    assert streams[:3] == [("status", "created"), ("status", "queued"), ("status", "started")]
    assert ("stdout", "line 3") in streams and ("stderr", "to stderr") in streams
    assert streams[-1] == ("status", "complete") and events["truncated"] is False
    total = events["total"]
    assert [e["seq"] for e in events["events"]] == list(range(1, total + 1))

    tail = alice.get(made["urls"]["events"], params={"limit": 3}).json()
    assert [e["seq"] for e in tail["events"]] == [total - 2, total - 1, total] and tail["truncated"] is True
    back = alice.get(made["urls"]["events"], params={"limit": 3, "before": total - 2}).json()
    assert [e["seq"] for e in back["events"]] == [total - 5, total - 4, total - 3]
    forward = alice.get(made["urls"]["events"], params={"limit": 2, "after": 1}).json()
    assert [e["seq"] for e in forward["events"]] == [2, 3]

    series = alice.get(made["urls"]["metadata"]).json()
    assert [(p["step"], p["loss"]) for p in series["points"]] == [(i, i / 10) for i in range(1, 6)]
    assert series["latest"] == {"step": 5, "loss": 0.5}
    later = alice.get(made["urls"]["metadata"], params={"after": series["points"][2]["_seq"]}).json()
    assert [p["step"] for p in later["points"]] == [4, 5]

    status = alice.get("/api/v0/status/").json()
    assert [row["environment"] for row in status] == ["local"]
    envs = alice.get("/api/v0/environments/").json()["results"]
    assert envs[0]["name"] == "local" and envs[0]["unfinished_job_count"] == 0


def read_stream(url: str, headers: dict[str, str], events: list[tuple[str, Any]], done: threading.Event,
                extra: dict[str, str] | None = None) -> None:
    with requests.get(url, headers={**headers, **(extra or {})}, stream=True, timeout=WAIT_S) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        kind = None
        for raw in answer.iter_lines(decode_unicode=True):
            if raw.startswith("event: "):
                kind = raw[7:]
            elif raw.startswith("data: "):
                events.append((kind, json.loads(raw[6:])))
                if kind == "end":
                    break
    done.set()


def test_the_live_stream_pushes_lines_status_and_metadata_as_they_are_stored(shared: VhOrch) -> None:
    vh = shared
    alice, pid, commit = setup(vh, "stream")
    made = submit(alice, pid, commit, "chatty")
    events: list[tuple[str, Any]] = []
    done = threading.Event()
    reader = threading.Thread(target=read_stream, args=(made["urls"]["stream"], alice.headers, events, done))
    reader.start()
    # Lines arrive while the execution runs, not only at its end.
    deadline = time.monotonic() + WAIT_S
    while not any(kind == "log" for kind, _ in events):
        assert time.monotonic() < deadline and not done.is_set(), events
        time.sleep(0.05)
    assert vh.json("exec", "info", str(made["id"]))["status"] == "started"
    assert done.wait(WAIT_S)
    reader.join(10)

    logs = [e["message"] for kind, e in events if kind == "log"]
    assert [m for m in logs if m.startswith("line")] == [f"line {i}" for i in range(1, 6)]
    assert "to stderr" in logs
    statuses = [e["message"] for kind, e in events if kind == "status"]
    assert statuses[0] == "created" and statuses[-1] == "complete"
    assert [e["step"] for kind, e in events if kind == "metadata"] == [1, 2, 3, 4, 5]
    assert events[-1] == ("end", {"status": "complete", "reason": None})
    seqs = [e["seq"] for kind, e in events if kind in ("log", "status")]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1  # each event once, in order

    # A reconnecting browser sends Last-Event-ID and gets only what it has not seen.
    resumed: list[tuple[str, Any]] = []
    again = threading.Event()
    read_stream(made["urls"]["stream"], alice.headers, resumed, again, {"Last-Event-ID": str(seqs[-3])})
    assert [e["seq"] for kind, e in resumed if kind in ("log", "status")] == seqs[-2:]


def test_an_output_in_s3_downloads_through_a_signed_url(vh: VhOrch, tmp_path: Path, moto) -> None:  # type: ignore[no-untyped-def]
    from awsfake import REGION

    moto.client("s3").create_bucket(Bucket="vh-api-data", CreateBucketConfiguration={"LocationConstraint": REGION})
    datastore = {"uri": "s3://vh-api-data/runs", "endpoint_url": moto.url, "region": REGION}
    entry = {"name": "here", "cloud": "fake", "max_scale": 1, "idle_timeout": "1m", "fake": {"runtime": "docker"},
             "pull_policy": "never", "datastore": datastore}
    (tmp_path / "envs.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    alice, pid, commit = setup(vh)
    made = alice.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "write",
                                                   "environment": "here"})
    assert made.status_code == 201, made.text
    info = vh.wait(made.json()["id"])
    assert info["status"] == "complete" and info["outputs"][0]["uri"].startswith("s3://vh-api-data/runs/")
    outputs = alice.get(f"/api/v0/data/?output_execution={info['id']}").json()["results"]
    assert [(o["name"], o["size"]) for o in outputs] == [("hello.txt", 6)]
    answer = alice.get(outputs[0]["urls"]["download"])
    assert answer.status_code == 200 and "attachment" not in answer.headers.get("content-disposition", "")
    signed = answer.json()["url"]
    assert signed.startswith(moto.url) and "Signature" in signed
    assert requests.get(signed, timeout=30).content == b"hello\n"  # no token: the signature admits


def test_a_re_run_links_to_its_source_and_back_and_hides_what_the_caller_may_not_see(shared: VhOrch) -> None:
    import sqlite3

    vh = shared
    alice, pid, commit = setup(vh, "reruns")
    source = submit(alice, pid, commit, "silent")
    again = alice.post(f"/api/v0/executions/{source['id']}/run-again/", json={"title": "second try"})
    assert again.status_code == 201, again.text
    rerun = again.json()
    detail = alice.get(f"/api/v0/executions/{rerun['id']}/").json()
    assert detail["rerun_of"] == {"id": source["id"], "counter": source["counter"], "title": None,
                                  "status": detail["rerun_of"]["status"]}
    assert detail["reruns"] == []
    listed = alice.get(f"/api/v0/executions/{source['id']}/").json()["reruns"]
    assert [(r["id"], r["title"]) for r in listed] == [(rerun["id"], "second try")]
    assert vh.json("exec", "info", str(rerun["id"]))["rerun_of"] == {"id": source["id"], "counter": source["counter"]}

    # bob's execution in his own project, linked to alice's (the API makes re-runs in the source's
    # project; the link is written here to stand for any row alice may not see).
    vh("user", "add", "bob")
    vh("project", "add", "bobs", "--owner", "bob")
    bob = Client(vh.api_url(), vh.json("user", "token", "bob")["token"])
    bobs_pid = project_id(bob, "bobs")
    bobs_commit = bob.upload(bobs_pid, package({"valohai.yaml": STEPS, "score.sh": SCORE})).json()["identifier"]
    hidden = submit(bob, bobs_pid, bobs_commit, "silent")
    with sqlite3.connect(vh.home / "state.db") as db:
        db.execute("UPDATE execution SET rerun_of_id = ? WHERE id = ?", (source["id"], hidden["id"]))
    listed = alice.get(f"/api/v0/executions/{source['id']}/").json()["reruns"]
    assert [r["id"] for r in listed] == [rerun["id"]]  # bob's is not listed to alice
    assert bob.get(f"/api/v0/executions/{hidden['id']}/").json()["rerun_of"] is None  # nor alice's to bob
    assert bob.get(f"/api/v0/executions/{source['id']}/").status_code == 404
    admin_view = vh.json("exec", "info", str(hidden["id"]))["rerun_of"]
    assert admin_view == {"id": source["id"], "counter": source["counter"]}
