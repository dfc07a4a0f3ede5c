"""YAML's implicit types through the real CLI, and a corpus of real-world valohai.yaml files.

Every valohai.yaml that valohai-yaml accepts is either run (the execution is written) or
refused with one `error:` line that names the field; never a traceback.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import Result, VhOrch, make_project
from vh_orch.config.steps import load_config
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.submit import ensure_storable

CORPUS = Path(__file__).parent / "data" / "valohai_yaml_corpus"


def counts(vh: VhOrch) -> tuple[int, int, int]:
    db = sqlite3.connect(vh.home / "state.db")
    try:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("execution", "execution_event", '"commit"')
        )
    finally:
        db.close()


def run(vh: VhOrch, folder: Path, step: str, *args: str):  # type: ignore[no-untyped-def]
    """`exec run` with a wide console, so that a message is one line however long it is."""
    vh.env["COLUMNS"] = "100000"
    return vh("exec", "run", step, "--project", "p", "--adhoc", str(folder), "--json", *args, check=False)


def assert_refused(vh: VhOrch, result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


def step(name: str, body: str = "", image: str = "busybox", command: str = "echo {parameters}") -> str:
    return f"- step:\n    name: {name}\n    image: {image}\n    command: {command}\n{body}"


def params(*items: str) -> str:
    return "    parameters:\n" + "".join(f"      - {item}\n" for item in items)


# Steps that run: what valohai.yaml wrote, as it is stored and passed on.
RUNS = {
    "string-texts": (
        step("string-texts", params(
            "{name: start_date, type: string, default: 2020-09-02T00:00:00.000000Z}",
            "{name: day, type: string, default: 2020-09-02}",
            "{name: answer, type: string, default: yes}",
            "{name: level, type: string, default: Off}",
            "{name: version, type: string, default: 1.10}",
            "{name: code, type: string, default: 010}",
            "{name: at, type: string, default: 12:30}",
            "{name: typo_date, type: string, default: 2020-13-45}",
            "{name: blob, type: string, default: !!binary aGVsbG8=}",
            "{name: nothing, type: string, default: null, optional: true}",
        )),
        [],
        {
            "parameters": {"start_date": "2020-09-02T00:00:00.000000Z", "day": "2020-09-02", "answer": "yes",
                           "level": "Off", "version": "1.10", "code": "010", "at": "12:30",
                           "typo_date": "2020-13-45", "blob": "aGVsbG8="},
            "command": "echo --start_date=2020-09-02T00:00:00.000000Z --day=2020-09-02 --answer=yes --level=Off "
                       "--version=1.10 --code=010 --at=12:30 --typo_date=2020-13-45 --blob=aGVsbG8=",
        },
    ),
    "choices-and-lists": (
        step("choices-and-lists", params(
            "{name: day, type: string, choices: [2020-01-01, 2020-01-02], default: 2020-01-01}",
            "{name: answer, type: string, choices: [yes, no], default: yes}",
            "{name: tags, type: string, multiple: separate, default: [2020-01-01, on, 3, 1.10]}",
            "{name: sizes, type: integer, multiple: repeat, pass-as: '--size {v}', default: ['1', 2]}",
        )),
        ["-p", "answer=no", "-p", "day=2020-01-02"],
        {
            "parameters": {"day": "2020-01-02", "answer": "no", "tags": ["2020-01-01", "on", "3", "1.10"],
                           "sizes": [1, 2]},
            "command": "echo --day=2020-01-02 --answer=no --tags=2020-01-01,on,3,1.10 --size 1 --size 2",
        },
    ),
    "numbers-and-flags": (
        step("numbers-and-flags", params(
            "{name: epochs, type: integer, default: '5', choices: ['5', 10]}",
            "{name: lr, type: float, default: 2}",
            "{name: momentum, type: float, default: '0.5'}",
            "{name: quiet, type: flag, default: 'false'}",
            "{name: fast, type: flag, default: on}",
            "{name: verbose, type: flag, default: 1, pass-true-as: -v}",
        )),
        [],
        {
            "parameters": {"epochs": 5, "lr": 2.0, "momentum": 0.5, "quiet": False, "fast": True, "verbose": True},
            "command": "echo --epochs=5 --lr=2.0 --momentum=0.5 --fast -v",
        },
    ),
    "environment-and-limits": (
        step("environment-and-limits", "    environment-variables:\n"
             "      - {name: DAY, default: 2020-01-01}\n"
             "      - {name: WHEN, default: 2020-01-01T10:00:00Z}\n"
             "      - {name: DEBUG, default: yes}\n"
             "      - {name: RATIO, default: 1.50}\n"
             "      - {name: EMPTY, default: null}\n"
             "      - {name: TOKEN, optional: false}\n"
             "    inputs:\n"
             "      - {name: extra, default: null, optional: true}\n"
             "    time-limit: '90'\n"),
        ["-e", "TOKEN=t"],
        {
            "environment_variables": {"DAY": "2020-01-01", "WHEN": "2020-01-01T10:00:00Z", "DEBUG": "yes",
                                      "RATIO": "1.50", "TOKEN": "t"},
            "inputs": {},
            "time_limit_s": 90,
        },
    ),
}

# Steps that are refused, each for one reason, while the other steps of the same file run.
REFUSALS = {
    "int-from-yes": (params("{name: n, type: integer, default: yes}"),
                     "parameter 'n': default yes is a YAML boolean but the parameter is an integer: write a whole number"),
    "int-from-float": (params("{name: n, type: integer, default: 2.0}"),
                       "parameter 'n': default 2.0 is a decimal number but the parameter is an integer: "
                       "write a whole number, e.g. 2"),
    "int-from-date": (params("{name: n, type: integer, default: 2020-01-01}"),
                      "parameter 'n': default 2020-01-01 is a YAML date but the parameter is an integer"),
    "float-from-no": (params("{name: x, type: float, default: no}"),
                      "parameter 'x': default no is a YAML boolean but the parameter is a float: write a number"),
    "float-nan": (params("{name: x, type: float, default: .nan}"), "parameter 'x': default .nan is not a finite number"),
    "flag-from-date": (params("{name: f, type: flag, default: 2020-01-01}"),
                       "parameter 'f': default 2020-01-01 is a YAML date but the parameter is a flag: write true or false"),
    "list-item": (params("{name: n, type: integer, multiple: separate, default: [1, yes]}"),
                  "parameter 'n': default item yes is a YAML boolean but the parameter is an integer"),
    "null-item": (params("{name: s, type: string, multiple: separate, default: [a, null]}"),
                  "parameter 's': default item is empty (null): write a value or remove it"),
    "choice-date": (params("{name: n, type: integer, choices: [1, 2020-01-01], default: 1}"),
                    "parameter 'n': choice 2020-01-01 is a YAML date but the parameter is an integer"),
    "list-not-multiple": (params("{name: s, type: string, default: [a, b]}"),
                          "parameter 's': default is a list but the parameter is not `multiple`: give one value"),
    "mapping-default": (params("{name: s, type: string, default: {a: 1}}"),
                        "parameter 's': default is a YAML mapping, but a parameter value is one value"),
    "flag-multiple": (params("{name: f, type: flag, multiple: repeat}"), "parameter 'f': a flag cannot be `multiple`"),
    "pass-as-typo": (params("{name: s, default: x, pass-as: '--s={vlue}'}"),
                     "parameter 's': pass-as '--s={vlue}' cannot be filled in (KeyError: 'vlue')"),
    "time-float": ("    time-limit: 1.5\n", "time-limit 1.5 is not a whole number of seconds: write whole seconds"),
    "time-negative": ("    time-limit: -5\n", "time-limit -5 is negative"),
    "time-yes": ("    time-limit: yes\n", "time-limit yes is a YAML boolean, not a duration"),
    "time-text": ("    time-limit: soon\n", "time-limit 'soon' is not a duration"),
    "env-required": ("    environment-variables:\n      - {name: TOKEN, optional: false}\n",
                     "environment variable 'TOKEN' is required by step 'env-required': pass -e TOKEN=VALUE"),
    "env-name": ("    environment-variables:\n      - {name: A=B, default: x}\n",
                 "environment variable name 'A=B' in valohai.yaml is not valid"),
    "surrogate": (params('{name: s, type: string, default: "\\ud800"}'),
                  "parameter 's': the text is not valid UTF-8"),
}

# Files valohai-yaml's schema refuses as a whole: the message says what YAML read and what to write.
FILE_REFUSALS = {
    "image-number": (step("s", image="3.11"),
                     "valohai.yaml is invalid: 0.step.image: 3.11 is a YAML number, not text: quote it in valohai.yaml"),
    "image-date": (step("s", image="2020-01-01"), "0.step.image: 2020-01-01 is a YAML date, not text"),
    "input-date": (step("s", "    inputs:\n      - {name: data, default: 2020-01-01}\n"),
                   "0.step.inputs.0.default: 2020-01-01 is a YAML date, not a URL: write the input's URL"),
    "input-number": (step("s", "    inputs:\n      - {name: data, default: [https://example.invalid/a, 42]}\n"),
                     "0.step.inputs.0.default.1: 42 is a YAML number, not a URL"),
    "command-number": (step("s", command="[echo, 5]"), "0.step.command.1: 5 is a YAML number, not text"),
    "param-name": (step("s", params("{name: 2020, type: string}")),
                   "0.step.parameters.0.name: 2020 is a YAML number, not text"),
    "step-unindented": ("- step:\n  name: s\n  image: busybox\n  command: echo\n",
                        "0.step: is empty, but a mapping is expected (are its keys indented under `- step:`?)"),
    "syntax": ("- step:\n    name: s\n   image: busybox\n", "valohai.yaml is not valid YAML: "),
}


@pytest.fixture
def project(vh: VhOrch, tmp_path: Path) -> Path:
    vh("project", "add", "p")
    text = "".join(case[0] for case in RUNS.values())
    text += "".join(step(name, body) for name, (body, _) in REFUSALS.items())
    return make_project(tmp_path, "types", text)


@pytest.mark.parametrize("name", list(RUNS))
def test_implicit_types_are_stored_as_valohai_yaml_wrote_them(vh: VhOrch, project: Path, name: str) -> None:
    _, args, expected = RUNS[name]
    result = run(vh, project, name, *args)
    assert result.returncode == 0, result.stderr
    execution = result.json()
    assert execution["status"] == "queued"
    for key, value in expected.items():
        assert execution[key] == value, key
    assert vh.json("exec", "info", str(execution["id"]))["parameters"] == execution["parameters"]


@pytest.mark.parametrize("name", list(REFUSALS))
def test_values_yaml_read_as_the_wrong_type_are_refused_by_name(vh: VhOrch, project: Path, name: str) -> None:
    before = counts(vh)
    assert_refused(vh, run(vh, project, name), REFUSALS[name][1])
    assert counts(vh) == before


@pytest.mark.parametrize("name", list(FILE_REFUSALS))
def test_files_the_schema_refuses_say_what_yaml_read(vh: VhOrch, tmp_path: Path, name: str) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, name, FILE_REFUSALS[name][0])
    before = counts(vh)
    assert_refused(vh, run(vh, folder, "s"), FILE_REFUSALS[name][1])
    assert counts(vh) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parameters": {"d": __import__("datetime").date(2020, 1, 1)}},
         "parameter 'd': a date value (datetime.date(2020, 1, 1)) cannot be stored as JSON"),
        ({"parameters": {"t": ["a", {"b"}]}}, "parameter 't'[1]: a set value"),
        ({"parameters": {"x": float("nan")}}, "parameter 'x': nan is not a finite number"),
        ({"command": "echo \udcff"}, "command: the text is not valid UTF-8"),
        ({"environment variables": {"A": b"x"}}, "environment variable 'A': a bytes value"),
        ({"inputs": {"data": [1j]}}, "input 'data'[0]: a complex value"),
        ({"parameters": {1: "x"}}, "parameters: the key 1 is not text"),
        ({"title": "\ud800"}, "title: the text is not valid UTF-8"),
    ],
)
def test_the_last_guard_names_what_cannot_be_stored(fields: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UserInputError) as err:
        ensure_storable(fields)
    assert message in str(err.value) and "nothing was submitted" in str(err.value)


def test_the_last_guard_lets_plain_json_through() -> None:
    ensure_storable({"parameters": {"a": [1, 2.5, True, None, "x"]}, "command": "echo ✓", "time limit": 90.0})


# --- The corpus: real valohai.yaml files (tests/data/valohai_yaml_corpus/README.md) --------------

# Files whose steps are refused, and the message each gives; every other step must be queued.
# A file refused as a whole maps to its message, a file with some steps refused to {step: message}.
CORPUS_REFUSALS: dict[str, str | dict[str, str]] = {
    "densecap-tensorflow.yaml": "valohai.yaml is not valid YAML: mapping values are not allowed here (line 3, column 7)",
    "valohai-cli--fixtures-invalid.yaml": "0.step.image: 8 is a YAML number, not text: quote it in valohai.yaml",
    "valohai-yaml--error--invalid-indentation-with-valid-YAML.yaml":
        "0.step: is empty, but a mapping is expected (are its keys indented under `- step:`?)",
    "valohai-yaml--warning--invalid-numeric-parameter-default.yaml":
        "parameter 'value': default item 'zoom' is not an integer: write a whole number",
    "valohai-yaml--warning--invalid-numeric-range-parameter-default.yaml":
        "parameter 'value': default 1337 is greater than the maximum allowed (100)",
    # Dataset versions and datum:// defaults name what someone's Valohai project holds, and this
    # installation has none of it: refused by name, not crashed on.
    "nvidia-monai-valohai.yaml": {
        "train": "input 'preprocessed_data': no dataset 'task03_liver' in this project",
        "evaluate": "input 'preprocessed_data': no datum 'datum://01971921-072b-4553-c48c-a86b7b056899'",
        "inference": "input 'model': no datum 'datum://latest-model'",
    },
    "valohai-utils--test2.expected.yaml": {"foobar1": "input 'input1': no datum 'datum://asdf'"},
    # resources.memory.max is MB: 4 MB is below what a container can be held to (Docker's floor is 6 MB)
    "valohai-cli--fixtures-kube-resources.yaml": {
        "Train model": "step 'Train model': resources.memory.max: 4 is not a memory size in MB"},
    # valohai-yaml's example asks for a device that does not exist (`nvidia.com/cpu`): vh-orch gives out
    # NVIDIA GPUs alone, and a device it cannot give is refused, never silently left out.
    "valohai-yaml--step-with-resources.yaml": {
        "contains kubernetes resources": "step 'contains kubernetes resources': resources.devices: "
                                         "'nvidia.com/cpu' is not a device vh-orch can give"},
}
CORPUS_STORED = {
    # valohai-yaml's own example of the timestamp problem: the text as written.
    "valohai-yaml--warning--invalid-string-parameter-default.yaml": {"ctime": "2020-09-02T00:00:00.000000Z"},
}


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def dummy_arguments(text: str, step_name: str, data_file: Path) -> list[str]:
    """Values for what a step requires and gives no default for, as a user would pass them."""
    step = load_config(text).config.steps[step_name]
    args: list[str] = []
    for name, param in step.parameters.items():
        if param.type == "flag" or param.optional or param.default not in (None, []):
            continue
        if param.choices:
            value = str(param.choices[0])
        elif param.type == "integer":
            value = str(int(param.min)) if param.min is not None else "1"
        elif param.type == "float":
            value = str(param.min) if param.min is not None else "0.5"
        else:
            value = "x"
        args += ["-p", f"{name}={value}"]
    for name, inp in step.inputs.items():
        if not inp.optional and not inp.default:
            args += ["-i", f"{name}={data_file}"]
    for name, var in step.environment_variables.items():
        if not var.optional and var.default is None:
            args += ["-e", f"{name}=x"]
    return args


def test_the_corpus_is_a_few_dozen_small_files_each_credited() -> None:
    files = corpus_files()
    readme = (CORPUS / "README.md").read_text()
    assert 20 <= len(files) <= 60
    for path in files:
        assert path.stat().st_size < 20_000, path.name
        assert f"`{path.name}`" in readme, f"{path.name} has no source in README.md"


@pytest.fixture(scope="module")
def corpus_vh(tmp_path_factory: pytest.TempPathFactory) -> VhOrch:
    """One vh-orch home for the whole corpus (nothing runs: submitting is all these tests do)."""
    cli = VhOrch(tmp_path_factory.mktemp("corpus") / "home")
    cli("init")
    cli("project", "add", "p")
    return cli


def run_in_process(vh: VhOrch, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   folder: Path, step: str, *args: str) -> Result:
    """`exec run` through the CLI's own entry point, in this process: the corpus is too big to pay a
    Python start per submission. A traceback here is an exception that escapes main()."""
    from vh_orch.cli import main

    for key, value in vh.env.items():
        if key.startswith("VH_ORCH_") or key == "COLUMNS":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "100000")
    monkeypatch.setattr(sys, "argv", ["vh-orch", "exec", "run", step, "--project", "p", "--adhoc", str(folder),
                                      "--json", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_every_step_of_every_corpus_file_is_submitted_or_refused_with_one_line(
    corpus_vh: VhOrch, tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vh = corpus_vh
    text = path.read_text()
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copyfile(path, folder / "valohai.yaml")
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(b"corpus")
    try:
        steps = list(load_config(text).config.steps)
    except UserInputError:
        steps = ["any-step"]  # a file refused as a whole: any step name gets its message
    mismatches = []
    for step_name in steps:
        args = dummy_arguments(text, step_name, data_file) if step_name != "any-step" else []
        before = counts(vh)
        result = run_in_process(vh, monkeypatch, capsys, folder, step_name, *args)
        assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr
        refusal = CORPUS_REFUSALS.get(path.name)
        if isinstance(refusal, dict):
            refusal = refusal.get(step_name)
        if refusal is not None:
            try:
                assert_refused(vh, result, refusal)
                assert counts(vh) == before
            except AssertionError as exc:
                mismatches.append((step_name, str(exc).splitlines()[0]))
            continue
        if result.returncode != 0:
            mismatches.append((step_name, result.stderr.strip()))
            continue
        execution = result.json()
        assert execution["status"] in ("created", "queued") and execution["step"] == step_name
        for name, value in CORPUS_STORED.get(path.name, {}).items():
            assert execution["parameters"][name] == value
    assert not mismatches
