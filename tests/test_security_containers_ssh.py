"""A container on a machine reached over SSH is confined exactly like one on the daemon's host (one
function builds both `docker run` lines): checked with `docker inspect` on the machine's engine."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from conftest import SSHPool, VhOrch, make_project
from test_security_containers import STEPS, assert_confined, held, log_texts, user_image  # noqa: F401


def test_a_remote_container_is_confined_and_its_image_user_writes_outputs(
    vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, user_image: str  # noqa: F811
) -> None:
    host = ssh_pool.hosts[0]
    workdir = tmp_path / "workdir"
    doc = {"environments": [{
        "name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
        "container_network": "none", "pids_limit": 300,
        "ssh": {"user": "root", "private_key_file": str(ssh_pool.client_key), "connect_timeout": "3s",
                "hosts": [{"address": host.address, "port": 22, "host_key": host.host_key,
                           "workdir": str(workdir)}]},
    }]}
    (tmp_path / "pool.yaml").write_text(json.dumps(doc))
    vh("env", "apply", str(tmp_path / "pool.yaml"))
    vh("project", "add", "p")
    project = make_project(tmp_path, "proj", STEPS)
    data = tmp_path / "data.txt"
    data.write_text("input for the image user\n")
    vh.start_daemon()
    execution = vh.run_json("as-user", "--project", "p", "--adhoc", str(project), "--env", "onprem",
                            "-i", f"data={data}")["id"]
    installation = workdir / str(vh.cluster_id())
    container = held(vh, execution, installation / "executions" / f"{execution}-1" / "repository")
    assert_confined(container, 300, "none", user="1000:1000")
    assert container["HostConfig"]["Memory"] == 128 * 1024 * 1024, "the step's resources hold here too"
    assert stat.S_IMODE(installation.stat().st_mode) == 0o700, "other users of the machine stay out"
    info = vh.wait(execution, timeout=120)
    assert info["status"] == "complete", (info, log_texts(vh, execution))
    assert log_texts(vh, execution)[:2] == ["1000", "input for the image user"]
    (output,) = info["outputs"]
    assert Path(output["uri"].removeprefix("file://")).read_text() == "written by 1000\n"
