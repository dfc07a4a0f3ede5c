"""`vh-orch simulate`: what a trace of submissions would cost, and how long it would wait, per idle policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vh_orch.cli.common import print_json, print_table
from vh_orch.errors import UserInputError

DEFAULT_POLICIES = ["adaptive", "idle-timeout:5m", "idle-timeout:15m", "idle-timeout:20m", "idle-timeout:3d",
                    "static"]
GENERATED_SIZE = {"steady": 2000, "bursty": 2000, "sparse": 100, "daily": 2000}


def simulate(
    trace: Annotated[Path | None, typer.Argument(help="TRACE.csv with the header submit_s,duration_s,environment")]
    = None,
    envs: Annotated[Path | None, typer.Option(
        "--envs", help="Environments, in the `env apply` file format (with --from-history: default this "
                       "installation's own)")] = None,
    from_history: Annotated[bool, typer.Option(
        "--from-history", help="Replay this installation's own executions of the last --days instead of a trace")
    ] = False,
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="adaptive, static or idle-timeout:DURATION; repeatable (default: adaptive; "
                         "`--policy all` compares adaptive, idle-timeout 5m/15m/20m/3d and static)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="A JSON list, one object per policy")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw cost against p95 wait to this PNG")] = None,
    generate: Annotated[str | None, typer.Option(
        "--generate", help="Write a trace instead: steady, bursty, sparse or daily")] = None,
    executions: Annotated[int | None, typer.Option("--executions", help="Generated: how many (about)")] = None,
    days: Annotated[float, typer.Option("--days", help="Generated or --from-history: over how many days")] = 7.0,
    environment: Annotated[str, typer.Option("--environment", help="Generated: the environment column")] = "gpu",
    median_duration: Annotated[str, typer.Option("--median-duration", help="Generated: median run time")] = "10m",
    seed: Annotated[int, typer.Option("--seed", help="Generated: the random seed")] = 1,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Generated: write here instead of stdout; --from-history: also keep the trace here")] = None,
) -> None:
    """Replay a trace through the real scheduling policy on a virtual clock (nothing is launched), or
    generate one. Reports cost, machine hours, launches and waits for each idle policy."""
    from vh_orch.cli.common import console
    from vh_orch.config.environments import parse_duration
    from vh_orch.simulation.trace import generate as make_trace
    from vh_orch.simulation.trace import read_trace, write_trace

    if generate is not None:
        size = executions if executions is not None else GENERATED_SIZE.get(generate, 1000)
        submissions = make_trace(generate, size, days, environment, seed=seed,
                                 median_duration_s=parse_duration(median_duration, "--median-duration"))
        text = write_trace(submissions)
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text)
            console.print(f"wrote {len(submissions)} submissions to {out}", markup=False)
        return
    if from_history:
        if trace is not None:
            raise UserInputError("give a trace file or --from-history, not both")
        from datetime import timedelta

        from vh_orch.cli.common import open_store
        from vh_orch.simulation.history import history_trace, specs_of
        from vh_orch.timeutil import utcnow

        if not 0 < days <= 3660:
            raise UserInputError(f"--days must be more than 0 and at most 3660, not {days:g}")
        store = open_store()
        since = utcnow() - timedelta(days=days)
        submissions = history_trace(store.execution_history(since), since)
        specs = specs_of(store.all_environments()) if envs is None else _read_envs(envs)
        name = f"the last {days:g} days"
        if out is not None:
            out.write_text(write_trace(submissions))
            typer.echo(f"wrote {len(submissions)} submissions to {out}", err=True)  # stdout: the results
    else:
        if trace is None or envs is None:
            raise UserInputError("give a trace and --envs ENVS.yaml (or --from-history, or --generate KIND to "
                                 "write a trace)")
        specs = _read_envs(envs)
        submissions = read_trace(trace)
        name = trace.name
    policies = policy or ["adaptive"]
    if policies == ["all"]:
        policies = DEFAULT_POLICIES
    from vh_orch.simulation.engine import PolicyChoice, Simulation

    choices = [PolicyChoice.parse(p) for p in policies]  # every policy checked before any runs
    results = [Simulation(specs, submissions, c).run() for c in choices]
    if plot is not None:
        from vh_orch.simulation.plot import draw

        draw(results, plot, title=name)
    if json_out:
        print_json([r.as_dict() for r in results])
        return
    print_table(f"{name}: {len(submissions)} executions", [
        "policy", "cost", "ideal cost", "machine h", "idle machine h", "launches", "wait p50 s", "wait p95 s",
        "wait max s"], [[r.policy, f"{r.cost:.2f}", f"{r.ideal_cost:.2f}", f"{r.machine_hours:.1f}",
                         f"{r.idle_machine_hours:.1f}", r.launches, f"{r.wait_p50_s:.1f}", f"{r.wait_p95_s:.1f}",
                         f"{r.wait_max_s:.1f}"] for r in results])
    if plot is not None:
        console.print(f"plot written to {plot}", markup=False)


def _read_envs(envs: Path) -> list[Any]:
    from vh_orch.config.environments import parse_file_text

    try:
        env_text = envs.read_text()
    except OSError as exc:
        raise UserInputError(f"cannot read {envs}: {exc.strerror or exc}") from None
    return parse_file_text(env_text, str(envs))
