"""valohai.yaml through valohai-yaml: parameter values, inputs and commands."""

from __future__ import annotations

import shlex

import pytest

from vh_orch.config.steps import resolve_step
from vh_orch.errors import UserInputError

YAML = """
- step:
    name: train
    image: python:3.11
    command:
      - echo start
      - python train.py {parameters}
    parameters:
      - name: epochs
        type: integer
        default: 3
        min: 1
        max: 100
      - name: lr
        type: float
        default: 0.1
      - name: optimizer
        type: string
        choices: [adam, sgd]
        default: adam
      - name: verbose
        type: flag
        pass-true-as: -v
      - name: tags
        type: string
        multiple: separate
        optional: true
      - name: layer
        type: integer
        multiple: repeat
        pass-as: --layer {v}
        optional: true
      - name: note
        type: string
        optional: true
    inputs:
      - name: data
        default: https://example.invalid/data.csv
      - name: extra
        optional: true
      - name: weights
        filename: w.bin
        default: [https://example.invalid/a.bin]
    environment-variables:
      - name: MODE
        default: fast
    time-limit: 90s
- step:
    name: needs-things
    image: busybox
    command: run {parameter:size}
    parameters:
      - name: size
        type: integer
    inputs:
      - name: data
"""


def run(params=(), inputs=(), env=(), step="train"):  # type: ignore[no-untyped-def]
    return resolve_step(YAML, step, list(params), list(inputs), list(env))


def test_defaults_build_the_command_valohai_yaml_builds() -> None:
    r = run()
    assert r.command == "echo start && python train.py --epochs=3 --lr=0.1 --optimizer=adam"
    assert r.parameters == {"epochs": 3, "lr": 0.1, "optimizer": "adam"}
    assert r.time_limit_s == 90
    assert r.environment_variables == {"MODE": "fast"}
    assert r.image == "python:3.11"


def test_values_are_typed_and_flags_multiples_and_pass_as_apply() -> None:
    r = run(["epochs=7", "lr=0.5", "verbose=true", "tags=a", "tags=b", "layer=1", "layer=2"])
    assert r.parameters["epochs"] == 7 and r.parameters["lr"] == 0.5 and r.parameters["verbose"] is True
    assert r.command.endswith("--epochs=7 --lr=0.5 --optimizer=adam -v --tags=a,b --layer 1 --layer 2")
    assert "-v" not in run(["verbose=false"]).command.split()


@pytest.mark.parametrize(
    "hostile", ["; rm -rf /", "$(touch /tmp/pwned)", "`id`", "a\nb", "'quoted' \"twice\"", "{parameters}"]
)
def test_hostile_values_are_quoted_as_one_literal_argument(hostile: str) -> None:
    r = run([f"note={hostile}"])
    argv = shlex.split(r.command.split(" && ")[1])
    assert argv[-1] == f"--note={hostile}"


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (["epochs=abc"], "parameter 'epochs': abc is not an integer"),
        (["epochs=0"], "parameter 'epochs': 0 is less than the minimum allowed (1)"),
        (["epochs=101"], "parameter 'epochs': 101 is greater than the maximum allowed (100)"),
        (["lr=fast"], "parameter 'lr': fast is not a floating-point number"),
        (["optimizer=rmsprop"], "parameter 'optimizer': rmsprop is not among the choices"),
        (["verbose=maybe"], "parameter 'verbose': 'maybe' is not a flag value"),
        (["epochs=1", "epochs=2"], "parameter 'epochs' takes one value"),
        (["nope=1"], "unknown parameter 'nope'"),
        (["epochs"], "is not of the form NAME=VALUE"),
    ],
)
def test_bad_parameter_values_name_the_field(params: list[str], fragment: str) -> None:
    with pytest.raises(UserInputError) as err:
        run(params)
    assert fragment in str(err.value)


def test_required_parameter_and_input_are_named() -> None:
    with pytest.raises(UserInputError, match="parameter 'size' is required"):
        run(step="needs-things", inputs=["data=https://example.invalid/x"])
    with pytest.raises(UserInputError, match="input 'data' is required"):
        run(["size=1"], step="needs-things")
    assert run(["size=4"], ["data=/x"], step="needs-things").command == "run --size=4"


def test_inputs_take_defaults_and_overrides() -> None:
    r = run(inputs=["data=https://example.invalid/other.csv", "extra=/tmp/a", "extra=/tmp/b"])
    assert r.inputs == {
        "data": ["https://example.invalid/other.csv"],
        "extra": ["/tmp/a", "/tmp/b"],
        "weights": ["https://example.invalid/a.bin"],
    }
    with pytest.raises(UserInputError, match="unknown input 'nope'"):
        run(inputs=["nope=/x"])


def test_environment_variables_override_and_names_are_checked() -> None:
    assert run(env=["MODE=slow", "OTHER=1"]).environment_variables == {"MODE": "slow", "OTHER": "1"}
    with pytest.raises(UserInputError, match="environment variable name 'BAD-NAME'"):
        run(env=["BAD-NAME=1"])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- step: [", "is not valid YAML"),
        ("- step:\n    name: x\n", "'image' is a required property"),
        ("just a string", "is invalid"),
    ],
)
def test_invalid_yaml_is_reported(text: str, fragment: str) -> None:
    with pytest.raises(UserInputError) as err:
        resolve_step(text, "x", [], [], [])
    assert fragment in str(err.value)


def test_unknown_step_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="unknown step 'nope'; valohai.yaml defines: needs-things, train"):
        run(step="nope")
