"""The chaos suite's CI subset (the long run is bench/chaos.py): two seeded runs that between
them inject every kind of fault, and each named failpoint deliberately: the three at an
execution's end on the docker runtime and the process runtime (fake cloud), every point on an
SSH host, and the pipeline's points (a node's work made, a node's end recorded) on the process
runtime; every run also runs a three-node pipeline beside its executions (chaos_workload.py). A
violation fails the test with the seed, the plan and what was found; the same test replays the
same plan (`pytest tests/test_chaos.py -k 101`). Needs root (sshd, dockerd, tmpfs mounts), like
the rest of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import chaos
from chaos_world import World

# A run is bounded part by part (each failpoint, the settling, every CLI call); a chain of ten
# unreachable points would outlast pytest's default 300 s before the report could say so.
pytestmark = pytest.mark.timeout(900)

END_POINTS = ("process-started", "after-outputs-uploaded", "after-result-recorded")
PIPELINE_POINTS = ("pipeline-work-made", "pipeline-node-ended")  # first: while the pipeline still runs
ALONG_THE_WAY = ("launch-row-written", "launch-call-returned", "bootstrap-step", "input-transfer",
                 "container-started", "log-follow:3", "output-upload:2")

SEEDED = {
    # Kills (some SIGTERM, some followed by an armed daemon), cut SSH connections, the second
    # engine restarted, SQLite held busy by another process for a few seconds.
    101: chaos.Config("ci-mixed", executions=3, lines=(10, 25), kills=3, cuts=2, engine_restarts=1, busy=1,
                      window_s=10.0, failpoint_wait_s=20.0),
    202: chaos.Config("ci-disk", envs=("fake-docker", "fake-process", "ssh-plain"), executions=2, lines=(10, 25),
                      kills=2, busy=1, full_disk=True, window_s=8.0, failpoint_wait_s=20.0),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("chaos-world"))
    try:
        world.start()
        yield world
    finally:
        world.stop()


def check(report: chaos.Report) -> None:
    print(report.text())
    assert not report.violations, report.text()


@pytest.mark.parametrize("seed", sorted(SEEDED))
def test_seeded_chaos_leaves_every_invariant_standing(world: World, tmp_path: Path, seed: int) -> None:
    check(chaos.run(seed, SEEDED[seed], world, tmp_path))


@pytest.mark.parametrize("env", ["fake-docker", "fake-process"])
def test_a_daemon_killed_at_an_execution_end_loses_and_doubles_nothing(world: World, tmp_path: Path,
                                                                       env: str) -> None:
    points = (PIPELINE_POINTS if env == "fake-process" else ()) + END_POINTS
    report = chaos.run(1, failpoint_config(f"ci-end-{env}", env, points), world, tmp_path)
    check(report)
    assert report.fired, "no failpoint fired at all: the harness is not arming the daemon"


def test_a_daemon_killed_at_every_point_on_an_ssh_host_loses_and_doubles_nothing(world: World,
                                                                                tmp_path: Path) -> None:
    report = chaos.run(1, failpoint_config("ci-every-point-ssh", "ssh-plain", ALONG_THE_WAY + END_POINTS),
                       world, tmp_path)
    check(report)
    assert report.fired, "no failpoint fired at all: the harness is not arming the daemon"


def failpoint_config(name: str, env: str, points: tuple[str, ...]) -> chaos.Config:
    """One daemon start per point, in order, on one environment. A point its runtime never passes
    (process-started outside the process runtime) comes last: the armed daemon then runs the
    workload to its end, and the point is noted unreached."""
    never = "process-started" if env != "fake-process" else None
    ordered = tuple(p for p in points if p != never) + ((never,) if never in points else ())
    return chaos.Config(name, envs=(env,), executions=1, lines=(8, 14), kills=0, late_share=0,
                        failpoints=ordered, failpoint_wait_s=25.0)
