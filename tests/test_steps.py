"""valohai.yaml through valohai-yaml: parameter values, inputs and commands."""

from __future__ import annotations

import shlex

import pytest

from vh_orch.config.steps import parse_assignments, resolve_step
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
    return resolve_step(YAML, step, parse_assignments(list(params), "parameter"),
                        parse_assignments(list(inputs), "input"), parse_assignments(list(env), "environment variable"))


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


def test_typed_values_get_the_answers_their_text_gets() -> None:
    typed = resolve_step(YAML, "train", {"epochs": [7], "lr": [0.5], "verbose": [True], "layer": [1, 2]}, {},
                         {"MODE": [3.0]})
    text = run(["epochs=7", "lr=0.5", "verbose=true", "layer=1", "layer=2"], env=["MODE=3.0"])
    assert (typed.parameters, typed.command, typed.environment_variables) == \
        (text.parameters, text.command, {"MODE": "3.0"})
    for value, words in ((2.5, "'epochs': 2.5 is not an integer"), (False, "'epochs': false is not an integer"),
                         (1000, "'epochs': 1000 is greater than the maximum")):
        with pytest.raises(UserInputError) as typed_refusal:
            resolve_step(YAML, "train", {"epochs": [value]}, {}, {})
        with pytest.raises(UserInputError) as text_refusal:
            run([f"epochs={'false' if value is False else value}"])
        assert words in str(typed_refusal.value) and str(typed_refusal.value) == str(text_refusal.value)


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
        resolve_step(text, "x", {}, {}, {})
    assert fragment in str(err.value)


def test_unknown_step_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="unknown step 'nope'; valohai.yaml defines: needs-things, train"):
        run(step="nope")


# --- YAML's implicit types (valohai.yaml read with the text of every non-text scalar kept) ---------

import datetime as dt  # noqa: E402

from vh_orch.config.steps import (  # noqa: E402
    YamlScalar,
    coerce_duration,
    coerce_environment_default,
    coerce_parameter_choices,
    coerce_parameter_default,
    coerce_parameter_value,
    load_config,
    load_yaml,
    plain,
)


def scalar(text: str) -> object:
    """What the loader makes of one unquoted YAML value."""
    return load_yaml(f"v: {text}\n")["v"]


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("2020-09-02T00:00:00.000000Z", dt.datetime(2020, 9, 2, tzinfo=dt.timezone.utc), "timestamp"),
        ("2020-09-02", dt.date(2020, 9, 2), "date"),
        ("yes", True, "boolean"),
        ("Off", False, "boolean"),
        ("010", 8, "number"),
        ("1_000", 1000, "number"),
        ("12:30", 750, "number"),
        ("1.10", 1.1, "number"),
        ("~", None, "null"),
    ],
)
def test_the_loader_keeps_the_text_of_every_scalar_yaml_does_not_read_as_text(text: str, value: object, kind: str) -> None:
    got = scalar(text)
    assert isinstance(got, YamlScalar)
    assert (got.value, got.text, got.kind) == (value, text, kind)
    assert plain(load_yaml(f"v: {text}\n")) == {"v": value}  # what yaml.safe_load gives


def test_text_and_impossible_dates_stay_text_and_aliases_stay_shared() -> None:
    assert scalar("hello") == "hello" and scalar("'2020-01-01'") == "2020-01-01"
    assert scalar("2020-13-45") == "2020-13-45"  # YAML's timestamp pattern, but no date
    doc = plain(load_yaml("a: &x [1, yes]\nb: *x\n"))
    assert doc == {"a": [1, True], "b": [1, True]} and doc["a"] is doc["b"]
    loop = plain(load_yaml("&a [*a]"))
    assert loop[0] is loop


@pytest.mark.parametrize(
    ("type_", "text", "expected"),
    [
        ("string", "2020-09-02T00:00:00.000000Z", "2020-09-02T00:00:00.000000Z"),
        ("string", "2020-09-02", "2020-09-02"),
        ("string", "yes", "yes"),
        ("string", "off", "off"),
        ("string", "True", "True"),
        ("string", "1.0", "1.0"),
        ("string", "010", "010"),
        ("string", "0x1F", "0x1F"),
        ("string", "12:30", "12:30"),
        ("string", ".inf", ".inf"),
        ("string", "!!binary aGVsbG8=", "aGVsbG8="),
        ("integer", "7", 7),
        ("integer", "'7'", 7),
        ("integer", "0x10", 16),
        ("float", "2", 2.0),
        ("float", "'0.5'", 0.5),
        ("float", "1.5e3", 1500.0),
        ("flag", "yes", True),
        ("flag", "off", False),
        ("flag", "1", True),
        ("flag", "0", False),
        ("flag", "'false'", False),
        ("flag", "'on'", True),
    ],
)
def test_a_default_becomes_the_parameter_type(type_: str, text: str, expected: object) -> None:
    got = coerce_parameter_value("p", type_, scalar(text))
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("type_", "text", "message"),
    [
        ("integer", "yes", "parameter 'p': default yes is a YAML boolean but the parameter is an integer: write a whole number"),
        ("integer", "2.5", "default 2.5 is a decimal number but the parameter is an integer: write a whole number"),
        ("integer", "2.0", "default 2.0 is a decimal number but the parameter is an integer: write a whole number, e.g. 2"),
        ("integer", "2020-01-01", "default 2020-01-01 is a YAML date but the parameter is an integer"),
        ("integer", "'ten'", "default 'ten' is not an integer: write a whole number"),
        ("float", "no", "default no is a YAML boolean but the parameter is a float: write a number"),
        ("float", "2020-01-01T10:00:00Z", "default 2020-01-01T10:00:00Z is a YAML timestamp but the parameter is a float"),
        ("float", ".nan", "default .nan is not a finite number"),
        ("float", "'inf'", "default 'inf' is not a finite number"),
        ("float", "'fast'", "default 'fast' is not a floating-point number"),
        ("flag", "2020-01-01", "default 2020-01-01 is a YAML date but the parameter is a flag: write true or false"),
        ("flag", "2", "default 2 is a number other than 0 or 1 but the parameter is a flag: write true or false"),
        ("flag", "'maybe'", "default 'maybe' is not a flag value: write true or false"),
        ("string", "{a: 1}", "default is a YAML mapping, but a parameter value is one value"),
    ],
)
def test_a_default_that_is_not_the_parameter_type_is_refused_by_name(type_: str, text: str, message: str) -> None:
    with pytest.raises(UserInputError) as err:
        coerce_parameter_value("p", type_, scalar(text))
    assert message in str(err.value)


def test_defaults_lists_and_choices() -> None:
    assert coerce_parameter_default("p", "string", False, scalar("~")) is None
    assert coerce_parameter_default("p", "string", True, load_yaml("[2020-01-01, yes, 3, 1.10]")) == [
        "2020-01-01", "yes", "3", "1.10"]
    assert coerce_parameter_default("p", "integer", True, scalar("4")) == [4]
    with pytest.raises(UserInputError, match="default item yes is a YAML boolean but the parameter is an integer"):
        coerce_parameter_default("p", "integer", True, load_yaml("[1, yes]"))
    with pytest.raises(UserInputError, match=r"default item is empty \(null\)"):
        coerce_parameter_default("p", "string", True, load_yaml("[a, null]"))
    with pytest.raises(UserInputError, match="default item is a list inside a list"):
        coerce_parameter_default("p", "string", True, load_yaml("[[a], b]"))
    with pytest.raises(UserInputError, match="default is a list but the parameter is not `multiple`"):
        coerce_parameter_default("p", "string", False, load_yaml("[a, b]"))
    assert coerce_parameter_choices("p", "string", load_yaml("[2020-01-01, yes, no, 1.10]")) == [
        "2020-01-01", "yes", "no", "1.10"]
    assert coerce_parameter_choices("p", "integer", load_yaml("['1', 2]")) == [1, 2]
    assert coerce_parameter_choices("p", "flag", load_yaml("[yes]")) is None
    with pytest.raises(UserInputError, match="choice 2020-01-01 is a YAML date but the parameter is an integer"):
        coerce_parameter_choices("p", "integer", load_yaml("[1, 2020-01-01]"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2020-01-01", "2020-01-01"), ("yes", "yes"), ("1", "1"), ("1.50", "1.50"), ("~", None), ("'x'", "x")],
)
def test_environment_variable_defaults_are_the_text_as_written(text: str, expected: str | None) -> None:
    assert coerce_environment_default(scalar(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("'90'", 90), ("'1.5'", "1.5s"), ("1h 30m", "1h 30m"), ("'1H 30M'", "1h 30m"), ("0", 0),
     ("1:30:00", 5400), ("~", None), ("''", None)],
)
def test_durations(text: str, expected: object) -> None:
    assert coerce_duration("time-limit", scalar(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.5", "time-limit 1.5 is not a whole number of seconds: write whole seconds"),
        ("-5", "time-limit -5 is negative"),
        ("'-5m'", "time-limit '-5m' is negative"),
        ("yes", "time-limit yes is a YAML boolean, not a duration"),
        ("2020-01-01", "time-limit 2020-01-01 is a YAML date, not a duration"),
        ("soon", "time-limit 'soon' is not a duration: write whole seconds (e.g. 3600) or a duration text"),
        ("'5 parsecs'", "time-limit '5 parsecs' is not a duration"),
    ],
)
def test_bad_durations_are_refused(text: str, message: str) -> None:
    with pytest.raises(UserInputError) as err:
        coerce_duration("time-limit", scalar(text))
    assert message in str(err.value)


def step_yaml(body: str, name: str = "s", image: str = "busybox", command: str = "echo {parameters}") -> str:
    return f"- step:\n    name: {name}\n    image: {image}\n    command: {command}\n{body}"


def param_yaml(*lines: str) -> str:
    return "    parameters:\n" + "".join(f"      - {line}\n" for line in lines)


def test_the_timestamp_default_of_a_string_parameter_is_stored_as_written() -> None:
    r = resolve_step(step_yaml(param_yaml("{name: start_date, type: string, default: 2020-09-02T00:00:00.000000Z}")),
                     "s", {}, {}, {})
    assert r.parameters == {"start_date": "2020-09-02T00:00:00.000000Z"}
    assert r.command == "echo --start_date=2020-09-02T00:00:00.000000Z"


def test_choices_and_multiple_defaults_of_string_parameters_are_texts() -> None:
    text = step_yaml(param_yaml(
        "{name: day, type: string, choices: [2020-01-01, 2020-01-02], default: 2020-01-02}",
        "{name: answer, type: string, choices: [yes, no], default: no}",
        "{name: tags, type: string, multiple: separate, default: [2020-01-01, on, 3, 1.10]}",
    ))
    r = resolve_step(text, "s", {}, {}, {})
    assert r.parameters == {"day": "2020-01-02", "answer": "no", "tags": ["2020-01-01", "on", "3", "1.10"]}
    assert r.command == "echo --day=2020-01-02 --answer=no --tags=2020-01-01,on,3,1.10"
    # What a user types for such a choice on the command line matches it.
    assert resolve_step(text, "s", {"answer": ["yes"], "day": ["2020-01-01"]}, {}, {}).parameters["answer"] == "yes"


def test_a_flag_default_written_as_text_is_a_boolean() -> None:
    text = step_yaml(param_yaml("{name: a, type: flag, default: 'false'}", "{name: b, type: flag, default: on}",
                                "{name: c, type: flag, default: 0}"))
    r = resolve_step(text, "s", {}, {}, {})
    assert r.parameters == {"a": False, "b": True, "c": False} and r.command == "echo --b"


def test_problems_refuse_only_their_own_step() -> None:
    text = step_yaml(param_yaml("{name: n, type: integer, default: 2020-01-01}")) + step_yaml(
        "    time-limit: 1.5\n", name="t") + step_yaml("", name="fine")
    assert resolve_step(text, "fine", {}, {}, {}).command == "echo"
    with pytest.raises(UserInputError, match="parameter 'n': default 2020-01-01 is a YAML date"):
        resolve_step(text, "s", {}, {}, {})
    with pytest.raises(UserInputError, match="time-limit 1.5 is not a whole number of seconds"):
        resolve_step(text, "t", {}, {}, {})
    loaded = load_config(text)
    assert sorted(loaded.problems) == ["s", "t"] and "fine" in loaded.config.steps


@pytest.mark.parametrize(
    ("body", "env", "expected"),
    [
        ("      - {name: DAY, default: 2020-01-01}\n", [], {"DAY": "2020-01-01"}),
        ("      - {name: DEBUG, default: yes}\n", [], {"DEBUG": "yes"}),
        ("      - {name: N, default: 1.50}\n", [], {"N": "1.50"}),
        ("      - {name: WHEN, default: 2020-01-01T10:00:00Z}\n", [], {"WHEN": "2020-01-01T10:00:00Z"}),
        ("      - {name: EMPTY, default: null}\n", [], {}),
        ("      - {name: TOKEN, optional: false}\n", ["TOKEN=x"], {"TOKEN": "x"}),
    ],
)
def test_environment_variable_defaults_are_text(body: str, env: list[str], expected: dict[str, str]) -> None:
    given = parse_assignments(env, "environment variable")
    r = resolve_step(step_yaml("    environment-variables:\n" + body), "s", {}, {}, given)
    assert r.environment_variables == expected


def test_a_required_environment_variable_must_be_given() -> None:
    with pytest.raises(UserInputError, match="environment variable 'TOKEN' is required by step 's': pass -e TOKEN=VALUE"):
        resolve_step(step_yaml("    environment-variables:\n      - {name: TOKEN, optional: false}\n"), "s", {}, {}, {})
    with pytest.raises(UserInputError, match="environment variable name 'A=B' in valohai.yaml is not valid"):
        resolve_step(step_yaml("    environment-variables:\n      - {name: A=B, default: x}\n"), "s", {}, {}, {})


@pytest.mark.parametrize(
    ("body", "seconds"),
    [("    time-limit: '90'\n", 90), ("    time-limit: 1H 30M\n", 5400), ("    time-limit: 0\n", None),
     ("    time-limit:\n", None), ("    time-limit: 1h 30m\n    no-output-timeout: '600'\n", 5400)],
)
def test_time_limits(body: str, seconds: float | None) -> None:
    assert resolve_step(step_yaml(body), "s", {}, {}, {}).time_limit_s == seconds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (step_yaml("", image="3.11"), "0.step.image: 3.11 is a YAML number, not text: quote it in valohai.yaml (step 's')"),
        (step_yaml("", image="2020-01-01"), "0.step.image: 2020-01-01 is a YAML date, not text"),
        (step_yaml("", image="''"), None),
        (step_yaml("", image=""), "0.step.image: is empty: write a value (step 's')"),
        (step_yaml("    inputs:\n      - {name: data, default: 2020-01-01}\n"),
         "0.step.inputs.0.default: 2020-01-01 is a YAML date, not a URL: write the input's URL"),
        (step_yaml("    inputs:\n      - {name: data, default: [https://example.invalid/a, 7]}\n"),
         "0.step.inputs.0.default.1: 7 is a YAML number, not a URL"),
        (step_yaml("", command="[echo, 5]"), "0.step.command.1: 5 is a YAML number, not text"),
        (step_yaml("    environment-variables:\n      - {name: X, default: [a]}\n"),
         "0.step.environment-variables.0.default: is a YAML list, not text (step 's', environment variable 'X')"),
        (step_yaml(param_yaml("{name: 2020, type: string}")), "0.step.parameters.0.name: 2020 is a YAML number, not text"),
        (step_yaml("", name="yes"), "0.step.name: yes is a YAML boolean, not text"),
        (step_yaml(param_yaml("{name: p, optional: yes, multiple: no}")),
         "0.step.parameters.0.multiple: no is a YAML boolean, not one of: none, repeat, separate"),
        ("- step:\n  name: x\n  image: y\n", "0.step: is empty, but a mapping is expected (are its keys indented"),
        ("step: {name: x}\n", "the file is a YAML mapping, not a list"),
        ("- step:\n    name: [\n", "valohai.yaml is not valid YAML: "),
    ],
)
def test_values_the_schema_refuses_say_what_yaml_read_and_what_to_write(text: str, fragment: str | None) -> None:
    if fragment is None:
        assert resolve_step(text, "s", {}, {}, {}).image is None
        return
    with pytest.raises(UserInputError) as err:
        resolve_step(text, "s", {}, {}, {})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_yaml_syntax_errors_are_one_line_with_the_position() -> None:
    with pytest.raises(UserInputError) as err:
        resolve_step("- step:\n    name: x\n   image: y\n", "x", {}, {}, {})
    assert "\n" not in str(err.value) and "(line 3, column 4)" in str(err.value)


@pytest.mark.parametrize(
    ("pass_as", "fragment"),
    [
        ("'--p={vlue}'", "parameter 'p': pass-as '--p={vlue}' cannot be filled in (KeyError: 'vlue')"),
        ("'--p={'", "parameter 'p': pass-as '--p={' cannot be filled in (ValueError"),
        ("'--p={value.real}'", "pass-as '--p={value.real}' cannot be filled in (AttributeError"),
    ],
)
def test_a_broken_pass_as_is_refused_by_name(pass_as: str, fragment: str) -> None:
    with pytest.raises(UserInputError) as err:
        resolve_step(step_yaml(param_yaml(f"{{name: p, default: x, pass-as: {pass_as}}}")), "s", {}, {}, {})
    assert fragment in str(err.value)


def test_a_flag_cannot_be_multiple_and_non_finite_floats_are_refused() -> None:
    with pytest.raises(UserInputError, match="parameter 'f': a flag cannot be `multiple`"):
        resolve_step(step_yaml(param_yaml("{name: f, type: flag, multiple: repeat}")), "s", {}, {}, {})
    text = step_yaml(param_yaml("{name: lr, type: float, default: 0.1}"))
    for value in ("nan", "inf", "-Infinity"):
        with pytest.raises(UserInputError, match="is not a finite number"):
            resolve_step(text, "s", {"lr": [value]}, {}, {})
