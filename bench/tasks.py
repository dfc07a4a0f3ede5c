"""Tasks' search algorithms, simulated through vh-orch's own engine functions: Bayesian (TPE) search
against random search, and the median-stopping rule's machine-hours. No daemon, no database, no
network: children are unsaved Execution rows in memory, their metrics come from a toy objective,
and time is a simulated clock (nothing sleeps).

    .venv/bin/python bench/tasks.py [--budget 40] [--seeds 5] [--batch 1,4] [--checkpoints 5,10,20,40]
                                    [--children 24] [--running 4] [--steps 20] [--step-minutes 3] [--warmup 0,5]

The default run takes about 15 s on a 2-core machine. Seeds are 1000, 2000, ... (far apart: the
engine seeds child i's sampler with the task's seed + i, so tasks with nearby seeds share children).

1. A fast toy objective with a known optimum (0.3 at x=1.3, lr=10**-2.5, layers=5, opt=adam) over four
   mixed parameters: x uniform -5..5, lr loguniform 1e-4..1, layers integerify 1..8, opt one of
   adam/sgd/rmsprop. A bayesian_tpe task asks vh_orch.orchestrator.tasks.search.ask for each child's values
   (optuna's TPE sampler exactly as the engine builds it, told every earlier child); the reference is
   a random_search task with the same variants, budget and seed, whose children are
   vh_orch.orchestrator.tasks.search.plan(spec). With --batch B, B children run at once, as the engine runs a task
   with execution-batch-size B (vh-orch's default for bayesian_tpe is 4): the first B are asked in one
   pass (each told those asked before it as pending), and when the oldest finishes the next is asked
   with the B-1 others still running (constant liar).
   Table: the regret (optimum minus the best score so far) after n children, over --seeds seeds,
   and the time of vh-orch's ask at that point.
2. Median stopping on a task whose children diverge half the time: --children children of --steps
   steps each (--step-minutes of machine time per step), --running at once, in a shuffled order;
   the good ones' score rises towards 0.80-0.95, the divergent ones' rises for 2-6 steps, then falls
   and gets noisy. After every step, each running child's series (vh_orch.orchestrator.tasks.search.series)
   goes to should_stop() with the task's MedianStopping (min_finished 3, warmup_steps from --warmup),
   told the completed children's series, as the engine's pass does. Table: machine-hours without the
   rule (the reference: the same children run to the end) and with it, which children it stopped,
   and the best final score among the children it let finish.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

from vh_orch.config.steps import get_step, parse_config  # noqa: E402
from vh_orch.orchestrator.models import Execution  # noqa: E402
from vh_orch.orchestrator.tasks.definition import child_parameters, parse_spec  # noqa: E402
from vh_orch.orchestrator.tasks.search import ask, plan, series, should_stop  # noqa: E402
from vh_orch.orchestrator.tasks.spec import TaskSpec  # noqa: E402
from vh_orch.values import ExecutionStatus  # noqa: E402

S = ExecutionStatus

VALOHAI_YAML = """\
- step:
    name: train
    image: python:3.12
    command: python train.py {parameters}
    parameters:
      - {name: x, type: float, default: 0.0}
      - {name: lr, type: float, default: 0.001}
      - {name: layers, type: integer, default: 2}
      - {name: opt, type: string, default: sgd}
"""

VARIANTS = {
    "x": {"style": "random", "rules": {"min": -5, "max": 5}},
    "lr": {"style": "random", "rules": {"min": 0.0001, "max": 1, "distribution": "loguniform"}},
    "layers": {"style": "random", "rules": {"min": 1, "max": 8, "integerify": True}},
    "opt": {"style": "multiple", "rules": {"items": ["adam", "sgd", "rmsprop"]}},
}
OPTIMUM = 0.3  # at x=1.3, lr=10**-2.5, layers=5, opt=adam


def objective(p: dict[str, Any]) -> float:
    return (-(p["x"] - 1.3) ** 2 - (math.log10(p["lr"]) + 2.5) ** 2 - 0.1 * (p["layers"] - 5) ** 2
            + (0.3 if p["opt"] == "adam" else 0.0))


def child(index: int, parameters: dict[str, Any], status: str, metadata: dict[str, Any] | None = None) -> Execution:
    """An unsaved child row: what ask() reads of it is parameters, status and metadata_latest."""
    return Execution(project_id=1, counter=index + 1, commit_id=1, step="train", command="python train.py",
                     environment_id=1, parameters=parameters, status=status, metadata_latest=metadata or {},
                     task_id=1, task_index=index)


def task_spec(step: Any, type_: str, budget: int, seed: int, batch: int | None = None,
              median: dict[str, Any] | None = None) -> TaskSpec:
    configuration: dict[str, Any] = {"execution_count": budget, "optimization_target_metric": "score", "seed": seed}
    if batch is not None:
        configuration["execution_batch_size"] = batch
    body: dict[str, Any] = {"type": type_, "parameters": VARIANTS, "configuration": configuration}
    if median is not None:
        body["median_stopping"] = median
    return parse_spec(body, step)


# --- 1. TPE against random search -----------------------------------------------------------------


def random_search(step: Any, budget: int, seed: int) -> list[float]:
    """The scores of a random_search task's children, in order."""
    spec = task_spec(step, "random_search", budget, seed)
    return [objective(child_parameters(step, varied)) for varied in plan(spec)]


def tpe_search(step: Any, budget: int, seed: int, batch: int) -> tuple[list[float], list[float]]:
    """The scores of a bayesian_tpe task's children in the order they finish, and each ask's seconds.
    At most `batch` children run at once; they finish oldest first, and each free place is filled
    as the engine's decider fills it (one pass asks every free place, each told the earlier ones
    of the pass as pending)."""
    spec = task_spec(step, "bayesian_tpe", budget, seed, batch)
    children: list[Execution] = []
    running: list[int] = []  # indexes into children, oldest first
    scores: list[float] = []
    ask_seconds: list[float] = []
    while len(scores) < budget:
        room = min(budget - len(children), batch - len(running))
        pending: list[dict[str, Any]] = []
        asked = []
        for index in range(len(children), len(children) + room):
            started = time.perf_counter()
            varied = ask(spec, children, index, step, pending)
            ask_seconds.append(time.perf_counter() - started)
            pending.append(varied)
            asked.append(child(index, child_parameters(step, varied), S.STARTED))
        for row in asked:
            running.append(len(children))
            children.append(row)
        done = children[running.pop(0)]
        score = objective(done.parameters)
        done.status, done.metadata_latest = S.COMPLETE, {"score": score}
        scores.append(score)
    return scores, ask_seconds


def regret_after(scores: list[float], n: int) -> float:
    return OPTIMUM - max(scores[:n])


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def compare_searches(step: Any, args: argparse.Namespace) -> None:
    seeds = [1000 * (k + 1) for k in range(args.seeds)]  # far apart: the engine seeds child i's TPE with seed + i
    checkpoints = [n for n in args.checkpoints if n <= args.budget]
    started = time.perf_counter()
    randoms = [random_search(step, args.budget, s) for s in seeds]
    random_took = (time.perf_counter() - started) / len(seeds)
    tpes: dict[int, list[tuple[list[float], list[float]]]] = {}
    for batch in args.batch:
        tpes[batch] = [tpe_search(step, args.budget, s, batch) for s in seeds]

    header = ["children", "random: regret mean (min-max)"]
    for batch in args.batch:
        header += [f"TPE B={batch}: regret mean (min-max)", f"TPE B={batch} beats random", f"ask B={batch}"]
    rows = []
    previous = 0
    for n in checkpoints:
        random_regrets = [regret_after(scores, n) for scores in randoms]
        row: list[object] = [n, spread(random_regrets)]
        for batch in args.batch:
            regrets = [regret_after(scores, n) for scores, _ in tpes[batch]]
            wins = sum(1 for t, r in zip(regrets, random_regrets, strict=True) if t < r)
            # the mean time of the asks for children previous+1..n (an ask grows with the children it is told)
            asks = [t for _, seconds in tpes[batch] for t in seconds[previous:n]]
            row += [spread(regrets), f"{wins}/{len(seeds)} seeds", f"{statistics.mean(asks) * 1000:.0f} ms"]
        rows.append(row)
        previous = n
    print_table(f"TPE against random search: toy objective, optimum {OPTIMUM}, {args.budget} children, "
                f"{len(seeds)} seeds (regret = optimum - best so far; lower is better; random search plans "
                f"all {args.budget} children in {random_took * 1000:.1f} ms)", header, rows)


# --- 2. median stopping ------------------------------------------------------------------------------


def curves(count: int, steps: int, seed: int) -> list[tuple[bool, list[float]]]:
    """(divergent, score at each step) for each child, half of them divergent, in a shuffled order."""
    rng = random.Random(seed)
    kinds = [i % 2 == 1 for i in range(count)]
    rng.shuffle(kinds)
    out = []
    for divergent in kinds:
        level, tau = rng.uniform(0.80, 0.95), rng.uniform(3, 6)
        good = [level * (1 - math.exp(-(t + 1) / tau)) + rng.gauss(0, 0.01) for t in range(steps)]
        if not divergent:
            out.append((False, good))
            continue
        turn = rng.randint(2, 6)
        values = []
        for t in range(steps):
            if t < turn:
                values.append(good[t])
            else:
                values.append(max(0.0, good[turn - 1] - 0.05 * (t - turn + 1) + rng.gauss(0, 0.05 + 0.01 * (t - turn))))
        out.append((True, values))
    return out


def run_children(spec: TaskSpec, children: list[tuple[bool, list[float]]], running_at_once: int,
                 step_minutes: float, median: bool) -> dict[str, Any]:
    """Steps every running child on a simulated clock; after each step, the rule's check (as the
    engine's pass makes it: finished = the completed children's series) on every running child."""
    rule = spec.median_stopping
    assert rule is not None
    steps = len(children[0][1])
    queue = list(range(len(children)))
    running: dict[int, list[dict[str, Any]]] = {}  # child -> the metadata points it printed
    finished: list[dict[int, float]] = []
    stopped: set[int] = set()
    machine_steps = ticks = checks = 0
    check_seconds = 0.0
    while queue or running:
        while queue and len(running) < running_at_once:
            running[queue.pop(0)] = []
        ticks += 1
        for i, points in running.items():
            points.append({"step": len(points), "score": children[i][1][len(points)]})
            machine_steps += 1
        for i in [i for i, points in running.items() if len(points) == steps]:
            finished.append(series(running.pop(i), rule.metric))
        if not median:
            continue
        for i in list(running):
            started = time.perf_counter()
            stop = should_stop(rule, spec, series(running[i], rule.metric), finished)
            check_seconds += time.perf_counter() - started
            checks += 1
            if stop:
                stopped.add(i)
                del running[i]
    best = max(range(len(children)), key=lambda i: children[i][1][-1])
    return {"hours": machine_steps * step_minutes / 60, "wall_hours": ticks * step_minutes / 60,
            "stopped_divergent": sum(1 for i in stopped if children[i][0]),
            "stopped_good": sum(1 for i in stopped if not children[i][0]),
            "best_survived": best not in stopped,
            "best_kept": max(children[i][1][-1] for i in range(len(children)) if i not in stopped),
            "checks": checks, "check_seconds": check_seconds}


def median_stopping(step: Any, args: argparse.Namespace) -> None:
    seeds = [1000 * (k + 1) for k in range(args.seeds)]
    half = args.children // 2
    rows: list[list[object]] = []
    checks = check_seconds = 0.0
    for warmup in args.warmup:
        totals: dict[str, list[float]] = {k: [] for k in ("without", "with", "saved", "div", "good", "best", "kept")}
        for seed in seeds:
            spec = task_spec(step, "random_search", args.children, seed,
                             median={"metric": "score", "min_finished": 3, "warmup_steps": warmup})
            children = curves(args.children, args.steps, seed)
            without = run_children(spec, children, args.running, args.step_minutes, median=False)
            with_ = run_children(spec, children, args.running, args.step_minutes, median=True)
            saved = 1 - with_["hours"] / without["hours"]
            kept = with_["best_kept"] / without["best_kept"]
            checks += with_["checks"]
            check_seconds += with_["check_seconds"]
            for key, value in (("without", without["hours"]), ("with", with_["hours"]), ("saved", saved),
                               ("div", with_["stopped_divergent"]), ("good", with_["stopped_good"]),
                               ("best", with_["best_survived"]), ("kept", kept)):
                totals[key].append(float(value))
            rows.append([warmup, seed, f"{without['hours']:.1f} h ({without['wall_hours']:.1f} h wall)",
                         f"{with_['hours']:.1f} h ({with_['wall_hours']:.1f} h wall)", f"{saved:.0%}",
                         f"{with_['stopped_divergent']}/{args.children - half}", f"{with_['stopped_good']}/{half}",
                         "yes" if with_["best_survived"] else "NO",
                         f"{with_['best_kept']:.3f} of {without['best_kept']:.3f}"])
        rows.append([warmup, "mean", f"{statistics.mean(totals['without']):.1f} h",
                     f"{statistics.mean(totals['with']):.1f} h", f"{statistics.mean(totals['saved']):.0%}",
                     f"{statistics.mean(totals['div']):.1f}", f"{statistics.mean(totals['good']):.1f}",
                     f"{sum(totals['best']):.0f}/{len(seeds)}", f"{statistics.mean(totals['kept']):.1%}"])
    print_table(f"Median stopping (min_finished 3, warmup_steps as shown; vh-orch's default is 0): {args.children} "
                f"children, half divergent, {args.steps} steps of {args.step_minutes:g} min, {args.running} at once; "
                f"should_stop() {checks:.0f} times, {check_seconds / max(checks, 1) * 1000:.1f} ms each",
                ["warmup", "seed", "machine-hours without the rule", "with the rule", "saved", "divergent stopped",
                 "good stopped", "best child survived", "best final score kept"], rows)


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=40, help="children per search")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=numbers, default=[1, 4],
                        help="TPE children running at once, comma-separated (vh-orch's default batch is 4)")
    parser.add_argument("--checkpoints", type=numbers, default=[5, 10, 20, 40])
    parser.add_argument("--children", type=int, default=24, help="median stopping: children in the task")
    parser.add_argument("--running", type=int, default=4, help="median stopping: children running at once")
    parser.add_argument("--steps", type=int, default=20, help="median stopping: steps per child")
    parser.add_argument("--step-minutes", type=float, default=3.0, help="median stopping: machine time per step")
    parser.add_argument("--warmup", type=numbers, default=[0, 5],
                        help="median stopping: warmup_steps to try, comma-separated (vh-orch's default is 0)")
    args = parser.parse_args()
    if args.budget not in args.checkpoints:
        args.checkpoints.append(args.budget)
    step = get_step(parse_config(VALOHAI_YAML), "train")
    started = time.perf_counter()
    compare_searches(step, args)
    median_stopping(step, args)
    print(f"\n{time.perf_counter() - started:.1f} s in all")


if __name__ == "__main__":
    main()
