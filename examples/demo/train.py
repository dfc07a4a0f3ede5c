"""Fit y = a*x + b by gradient descent; a Valohai-style script using valohai-utils only."""

import csv
import json
import os
import random

import valohai

valohai.prepare(
    step="train",
    image="vh-orch/example-python:3.11",
    default_parameters={"epochs": 5, "learning_rate": 0.05, "model": "linear"},
)


def load_points():
    try:
        path = valohai.inputs("dataset").path()
    except Exception:
        path = None
    if path and os.path.isfile(path):
        with open(path, newline="") as fh:
            rows = [row for row in csv.reader(fh) if row and not row[0].startswith("x")]
        print(f"loaded {len(rows)} points from {os.path.basename(path)}")
        return [(float(x), float(y)) for x, y in rows]
    rng = random.Random(42)
    print("no dataset given: using 200 synthetic points")
    return [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(200))]


def main():
    print(os.environ.get("DEMO_GREETING", ""))
    epochs = int(valohai.parameters("epochs").value)
    lr = float(valohai.parameters("learning_rate").value)
    kind = valohai.parameters("model").value
    points = load_points()
    a, b = 0.0, 0.0
    spread = sum((y - sum(p[1] for p in points) / len(points)) ** 2 for _, y in points) / len(points)
    for epoch in range(1, epochs + 1):
        for x, y in points:
            error = (a * x + b if kind == "linear" else b) - y
            if kind == "linear":
                a -= lr * error * x
            b -= lr * error
        loss = sum(((a * x + b) - y) ** 2 for x, y in points) / len(points)
        with valohai.logger() as logger:
            logger.log("epoch", epoch)
            logger.log("loss", round(loss, 6))
            logger.log("accuracy", round(max(0.0, 1.0 - loss / spread), 6))
    with open(valohai.outputs().path("model.json"), "w") as fh:
        json.dump({"kind": kind, "a": a, "b": b, "epochs": epochs}, fh)
    print(f"model written: a={a:.4f} b={b:.4f}")


if __name__ == "__main__":
    main()
