"""Fuzz the option surface: every option of ``train``, ``tune``, ``evaluate``, ``predict`` and ``export``,
taken from the parsers themselves (so an option is covered the day it is added), refuses generated bad
values with exit 2 and one line naming it: never a traceback, never exit 0.

Every refusal here happens while the command line (or the YAML file, or ``TrainConfig(...)``) is
read, before any data or model is touched: the paths given are valid-looking but do not exist.
"""

import argparse
import dataclasses

import pytest

from tfft.cli import build_parser, main
from tfft.config import INT32_MAX, INT32_MIN, Range, TrainConfig, option_range
from tfft.errors import ConfigError

COMMANDS = ("train", "tune", "evaluate", "predict", "export")
# What each command needs to get past parsing, so that the option under test is what fails.
REQUIRED = {"train": [], "tune": [], "evaluate": ["no-such-run", "--data", "no-such.txt"],
            "predict": ["no-such-run", "--input", "no-such.txt"], "export": ["no-such-run", "--name", "model"]}
# Checked by the export (path safety: a name stays inside --export-dir, a version is a positive integer),
# not by a declared range; only their type errors are fuzzed here.
CHECKED_BY_EXPORT = {("export", "--name"), ("export", "--version")}
# Values within their option's own range that a search refuses (LoRA ranks to search start at 1): the error
# names the flag typed, not the option behind it.
SEARCH_REFUSES = {"--lora-ranks": ["0", "4,0"]}
NOT_NUMBERS = ["", " ", "abc", "∞", "½", "一", "0x10", "1,5", "nan", "NaN", "inf", "-inf", "1e999", "-1e999"]


def command_parsers():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: commands.choices[name] for name in COMMANDS}


def _range_of(action) -> Range:
    """The declared range behind an option's argparse type (a Range's parse_flag, or a search-space flag's)."""
    owner = getattr(action.type, "__self__", None)
    if isinstance(owner, Range):
        return owner
    option = getattr(action.type, "option", None)  # a --*-range flag of `tune`: its option's range
    return option_range(next(f for f in dataclasses.fields(TrainConfig) if f.name == option))


def out_of_range(values: Range):
    """Numbers just outside ``values``, a non-integer for an integer range, and a huge one."""
    if values.integer:
        low = INT32_MIN if values.low is None else values.low
        high = INT32_MAX if values.high is None else values.high
        return [str(low if values.low_open else low - 1), str(high if values.high_open else high + 1),
                "1.5", "1e-3", str(10 ** 40), str(-10 ** 40), "9" * 400]
    bad = ["1e400", "-1e400", "9" * 400]
    if values.low is not None:
        bad.append(repr(values.low) if values.low_open else repr(values.low - 1e-3))
    if values.high is not None:
        bad.append(repr(values.high) if values.high_open else repr(values.high + 1e-3))
    return bad


def bad_values(command: str, action):
    """``(argv, what the error line must name)`` for each generated bad value of one option."""
    flag = max(action.option_strings, key=len) if action.option_strings else None
    named = flag or action.metavar or action.dest.upper()
    if isinstance(action, argparse._HelpAction):
        return []
    if action.nargs == 0:  # store_true and --flag/--no-flag: they take no value
        return [([f"{option}={value}"], named) for option in action.option_strings if option.startswith("--")
                for value in ("yes", "", "ñ")]
    if action.choices:
        values = ["not-a-choice", "", "ñ", str(next(iter(action.choices))).upper() + "X"]
    elif getattr(action.type, "__name__", None) in ("int", "float"):
        values = ["abc", "", "1.5"] if action.type is int else ["abc", ""]
    elif action.type is None:
        values = []
    elif getattr(action.type, "__name__", "") == "non_empty":
        values = [""]
    else:
        values = NOT_NUMBERS + out_of_range(_range_of(action))
        if hasattr(action.type, "style"):  # a search-space flag: "1,5" is two values
            values.remove("1,5")
        if getattr(action.type, "style", None) == "range":
            values += ["1,2,3", ",", "1,", "3,1"]
        elif getattr(action.type, "style", None) == "choices":
            values += [",", "1,,2", "1,abc"]
        values += SEARCH_REFUSES.get(flag, [])
    cases = []
    for value in values:
        if flag is None:  # a positional: the value replaces the required one
            argv = [value, *REQUIRED[command][1:]]
        else:
            argv = [*REQUIRED[command], f"{flag}={value}"]
        cases.append((argv, named))
    return cases


CASES = [pytest.param(command, argv, named, id=f"{command} {' '.join(argv)}")
         for command, parser in command_parsers().items() for action in parser._actions
         for argv, named in bad_values(command, action)]


def test_every_option_is_fuzzed_and_every_value_option_is_checked_when_parsed():
    for command, parser in command_parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.nargs == 0 or action.choices:
                continue
            flag = max(action.option_strings, key=len) if action.option_strings else action.dest
            if (command, flag) in CHECKED_BY_EXPORT:
                continue
            # A value option without a checked type would let any text through to the run.
            assert action.type is not None and getattr(action.type, "__name__", "") not in ("int", "float", "str"), (
                command, flag)
    assert len(CASES) > 900


@pytest.mark.parametrize("command,argv,named", CASES)
def test_a_bad_option_value_is_one_line_and_exit_2(command, argv, named, capsys):
    with pytest.raises(SystemExit) as stopped:  # refused while parsing: nothing read, nothing loaded
        main([command, *argv])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tfft {command}: error: "), captured.err
    assert named in lines[0], lines[0]
    assert captured.out == ""


def _numeric_fields():
    return [f for f in dataclasses.fields(TrainConfig) if option_range(f) is not None]


YAML_CASES = [pytest.param(f.name, value, id=f"{f.name}: {value}") for f in _numeric_fields()
              for value in ["abc", "''", ".nan", ".inf", "-.inf", "true", "[1]", "{a: 1}",
                            *out_of_range(option_range(f))]]


@pytest.mark.parametrize("name,value", YAML_CASES)
def test_a_bad_yaml_value_is_one_line_naming_file_and_key(name, value, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(f"task: token-classification\ntrain: no-such.txt\nmodel: no-such-model\n{name}: {value}\n")
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tfft train: error: {path}: the '{name}' option must be"), lines
    assert not (tmp_path / "run").exists()


PYTHON_CASES = [pytest.param(f.name, value, id=f"{f.name}={value!r}") for f in _numeric_fields()
                for value in [float("nan"), float("inf"), "1", True, [1],
                              *[Range(integer=False).convert(text) for text in out_of_range(option_range(f))]]]


@pytest.mark.parametrize("name,value", PYTHON_CASES)
def test_a_bad_python_value_is_refused_when_the_config_is_made(name, value):
    with pytest.raises(ConfigError, match=f"^The '{name}' option must be "):
        TrainConfig(task="token-classification", train="no-such.txt", **{name: value})
