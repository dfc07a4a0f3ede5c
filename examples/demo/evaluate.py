"""Read the model a `train` execution produced and report its parameters as metadata."""

import json

import valohai

valohai.prepare(step="evaluate", image="vh-orch/example-python:3.11")

with open(valohai.inputs("model").path()) as fh:
    model = json.load(fh)
print(json.dumps({"a": model["a"], "b": model["b"], "trained_epochs": model["epochs"]}))
