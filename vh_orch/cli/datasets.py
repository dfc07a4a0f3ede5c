"""`vh-orch dataset ...`: the dataset versions executions made from their output metadata."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import human_bytes, open_store, print_fields, print_json, print_table

app = typer.Typer(help="Datasets: versions of files made by executions (`dataset://NAME/VERSION` inputs).",
                  no_args_is_help=True)


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", help="Only this project's datasets")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List datasets by name, each with its newest version."""
    from vh_orch.services import datasets

    store = open_store()
    project_ids = [store.get_project(project).id] if project else None  # type: ignore[list-item]
    _, rows = datasets.list_datasets(store, project_ids)
    if json_out:
        print_json(rows)
        return
    print_table(None, ["id", "project", "name", "versions", "latest"],
                [[d["id"], d["project"]["name"], d["name"], d["version_count"],
                  (d["latest_version"] or {}).get("name", "-")] for d in rows])


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[/VERSION]", help="A dataset, or one of its versions "
                                                                      "(VERSION may be `latest`)")],
    project: Annotated[str | None, typer.Option("--project", help="The dataset's project (needed when "
                                                                  "several have one of that name)")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A dataset's versions (newest first, with the execution that made each), or a version's files."""
    from vh_orch.services import datasets

    store = open_store()
    dataset, version = datasets.find(store, ref, project)
    if version is None:
        data = datasets.dataset_detail(store, dataset)
        if json_out:
            print_json(data)
            return
        print_table(f"dataset {data['name']} ({data['project']['name']})", ["id", "version", "execution", "files",
                                                                             "created"],
                    [[v["id"], v["name"], "-" if v["execution"] is None else f"{v['execution']['id']} "
                      f"(#{v['execution']['counter']})", v["file_count"], v["created_at"]] for v in data["versions"]])
        return
    detail = datasets.version_detail(store, version)
    if json_out:
        print_json(detail)
        return
    made_by = detail["execution"]
    print_fields(detail["uri"], {"id": detail["id"], "execution": "-" if made_by is None else
                                 f"{made_by['id']} (#{made_by['counter']})", "created": detail["created_at"],
                                 "files": detail["file_count"]})
    print_table(None, ["datum", "name", "size", "sha256"],
                [[f["datum"]["id"], f["datum"]["name"], human_bytes(f["datum"]["size"]), f["datum"]["sha256"]]
                 for f in detail["files"]])
