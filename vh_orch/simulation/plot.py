"""Cost against p95 wait, one point per policy: the Pareto picture of a simulation."""

from __future__ import annotations

from pathlib import Path

from vh_orch.errors import UserInputError
from vh_orch.simulation.engine import Result


def pareto_front(results: list[Result]) -> list[Result]:
    """The results no other result beats on both cost and p95 wait (and ties on neither)."""
    def dominated(r: Result) -> bool:
        return any(o.cost <= r.cost and o.wait_p95_s <= r.wait_p95_s and
                   (o.cost < r.cost or o.wait_p95_s < r.wait_p95_s) for o in results)
    return [r for r in results if not dominated(r)]


def draw(results: list[Result], path: Path, title: str = "") -> None:
    if path.suffix.lower() != ".png":
        raise UserInputError(f"--plot {path}: give a .png file name")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    front = {id(r) for r in pareto_front(results)}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in results:
        on = id(r) in front
        ax.scatter(r.wait_p95_s, r.cost, s=60 if on else 35, marker="o" if on else "x",
                   color="tab:green" if r.policy == "adaptive" else ("tab:blue" if on else "tab:gray"))
        ax.annotate(r.policy, (r.wait_p95_s, r.cost), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ideal = results[0].ideal_cost if results else 0
    ax.axhline(ideal, color="tab:gray", linestyle=":", linewidth=1)
    ax.annotate("ideal cost (the work alone)", (0, ideal), textcoords="offset points", xytext=(4, 4), fontsize=7,
                color="tab:gray")
    ax.set_xlabel("p95 wait from submission to start (s)")
    ax.set_ylabel("cost")
    ax.set_title(f"{title}: cost against p95 wait (circles: the Pareto front)" if title else "cost against p95 wait")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
