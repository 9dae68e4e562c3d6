"""The one table of options (specs/optiontable.py) drives the command line, the ini keys, the marker keywords,
``check_parity(**options)`` and the defaults of ``Settings`` and ``ParityOptions``.

Each test here would catch a copy that drifted from the table: a field typed with another default, an option the
marker takes but the table does not say, a value the command line refuses and the API takes.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy  # noqa: F401 - loaded out here: in-process pytester runs drop modules first imported inside them
import pytest

import pytest_onnx_parity.preprocessing.deploy  # noqa: F401 - the axes' parsers, loaded out here for the same reason
import pytest_onnx_parity.runtime.runner  # noqa: F401
import pytest_onnx_parity.variants  # noqa: F401
from pytest_onnx_parity.errors import SpecError
from pytest_onnx_parity.options import ParityOptions
from pytest_onnx_parity.plugin import MARKER_KEYWORDS
from pytest_onnx_parity.settings import OPTIONS, Settings
from pytest_onnx_parity.specs import optiontable
from pytest_onnx_parity.specs.optiontable import ROWS, RUN_ONLY, Option, RunOnly

#: Settings fields no option sets: the gate derives them
SETTINGS_DERIVED = {"enabled", "models_given", "rootdir", "sources"}


def disagreements(rows: tuple[Option, ...], run_only: tuple[RunOnly, ...], settings: type, options: type) -> list[str]:
    """Each way the two dataclasses and the table disagree: a field without a row, a row without a field, a default
    that is not the table's."""
    out: list[str] = []
    gate = {f.name: f for f in fields(settings) if f.name not in SETTINGS_DERIVED}
    for o in rows:
        if o.attr not in gate:
            out.append(f"row {o.noun}: no Settings field {o.attr}")
        elif gate[o.attr].default != o.default:
            out.append(f"Settings.{o.attr} = {gate[o.attr].default!r}, the table says {o.default!r}")
    out += [f"Settings.{name}: no row" for name in sorted(set(gate) - {o.attr for o in rows})]
    run = {f.name: f for f in fields(options)}
    fed = [o.field for o in rows if o.field]
    out += [f"ParityOptions.{name}: fed by {fed.count(name)} rows" for name in sorted(set(fed)) if fed.count(name) > 1]
    defaults = optiontable.run_defaults(rows)
    for name in fed:
        if name not in run:
            out.append(f"row feeding {name}: no ParityOptions field {name}")
        elif run[name].default != defaults[name]:
            out.append(f"ParityOptions.{name} = {run[name].default!r}, the table says {defaults[name]!r}")
    own = {k.name for k in run_only if k.field}
    out += [f"ParityOptions.{name}: fed by a row and run-only" for name in sorted(own & set(fed))]
    out += [f"run-only {name}: no ParityOptions field" for name in sorted(own - set(run))]
    out += [f"ParityOptions.{name}: no row" for name in sorted(set(run) - set(fed) - own)]
    return out


def test_settings_and_parity_options_are_the_tables() -> None:
    assert disagreements(ROWS, RUN_ONLY, Settings, ParityOptions) == []
    assert OPTIONS is not ROWS and [o.noun for o in OPTIONS] == [o.noun for o in ROWS]


def test_the_agreement_rule_finds_a_planted_disagreement() -> None:
    """The same function on tables made to disagree: a differing default, a row taken out, a row added, a field fed
    twice, a run-only keyword that is no field."""
    seed = next(i for i, o in enumerate(ROWS) if o.noun == "seed")
    changed = ROWS[:seed] + (replace(ROWS[seed], default=1),) + ROWS[seed + 1:]
    assert disagreements(changed, RUN_ONLY, Settings, ParityOptions) == [
        "Settings.seed = 0, the table says 1", "ParityOptions.seed = 0, the table says 1"]
    dropped = ROWS[:seed] + ROWS[seed + 1:]
    assert disagreements(dropped, RUN_ONLY, Settings, ParityOptions) == ["Settings.seed: no row", "ParityOptions.seed: no row"]
    added = ROWS + (Option("colour", "a new option", str, "red"),)
    assert disagreements(added, RUN_ONLY, Settings, ParityOptions) == [
        "row colour: no Settings field colour", "row feeding colour: no ParityOptions field colour"]
    twice = ROWS + (Option("seeds", "a second seed", str, 0, feeds="seed", gate_only=False),)
    assert "ParityOptions.seed: fed by 2 rows" in disagreements(twice, RUN_ONLY, Settings, ParityOptions)
    assert disagreements(ROWS, RUN_ONLY + (RunOnly("colour", "x"),), Settings, ParityOptions) == [
        "run-only colour: no ParityOptions field"]


def test_marker_keywords_are_the_rows_marked_so() -> None:
    assert MARKER_KEYWORDS == {o.field for o in ROWS if o.marker} | {k.name for k in RUN_ONLY if k.marker}
    # the keywords the marker took before the table (the SPEC keeps every one)
    assert MARKER_KEYWORDS == {"model", "weights", "exporter", "opset", "seed", "batch_size", "images", "test_time",
                               "model_args", "data_config", "runtime", "provider", "ort_opt"}
    assert {o.noun: o.field for o in ROWS if o.field != o.attr} == {
        "providers": "provider", "models": None, "weights": None, "embed-preprocessing": None, "no-cache": None,
        "report": None, "plots": None, "shard": None, "artifacts": None}


#: per row: a value every entry point refuses (the bool rows: the ini key's, the command line takes no value)
BAD: dict[str, str] = {
    "models": "resnet18=imagenet", "weights": "imagenet", "exporter": "jit", "opset": "5", "precision": "fp8",
    "ort-opt": "max", "providers": "cuda", "runtime": "tensorrt", "preprocess": "nope",
    "preprocess-max-logit-effect": "-1", "preprocess-min-top1": "1.5", "labels": "/no/such/labels.txt",
    "image-size": "3", "simplifier": "onnxopt", "embed-preprocessing": "maybe", "atol": "-1", "rtol": "-1",
    "seed": "-1", "images": "/no/such/dir", "cache-dir": " ", "no-cache": "maybe", "report": " ", "layers": "sometimes",
    "layer-memory": "lots", "plots": " ", "max-accuracy-drop": "-1", "int8-min-agreement": "1.5",
    "int8-max-accuracy-drop": "-1", "test-time": "maybe", "shard": "3/2", "output": " ", "data-config": "bogus=1",
    "weight-set": "both", "artifacts": " ", "golden": " ", "golden-update": "maybe",
}
#: the other half of a pair the command line wants together
PAIRED = {"atol": "0", "rtol": "0"}


def test_every_row_has_a_bad_value_here() -> None:
    assert set(BAD) == {o.noun for o in ROWS}


def test_the_table_drives_help_ini_keys_and_marker(pytester: pytest.Pytester) -> None:
    """For every row: the option and its ini key in ``pytest --help``; the marker takes its keyword iff the row says
    so (a run-only keyword too)."""
    help_text = pytester.runpytest("--help").stdout.str()
    for o in ROWS:
        assert f"--onnx-parity-{o.noun}" in help_text, o.noun
        assert f"onnx_parity_{o.attr} (" in help_text, o.noun
    keywords = sorted({o.field or o.attr for o in ROWS} | {k.name for k in RUN_ONLY})
    pytester.makepyfile("import pytest\n" + "".join(
        f"\n@pytest.mark.onnx_parity({k}=None)\ndef test_{k}():\n    pass\n" for k in keywords))
    reports = pytester.inline_run("-p", "no:cacheprovider").getreports("pytest_runtest_logreport")
    refused = {r.nodeid.split("::test_")[1] for r in reports if r.when == "setup" and r.failed}
    assert set(keywords) - refused == MARKER_KEYWORDS
    assert refused, "no keyword refused: the rule judged nothing"


@pytest.mark.parametrize("row", [o for o in OPTIONS if o.field], ids=lambda o: o.noun)
def test_check_parity_takes_each_fed_field_and_refuses_the_bad_value_in_the_options_words(row: Option) -> None:
    default = ParityOptions.from_kwargs(**{row.field: getattr(ParityOptions(), row.field)})
    assert getattr(default, row.field) == getattr(ParityOptions(), row.field)
    bad = BAD[row.noun]
    pair = {k: 0.0 for k in PAIRED if k != row.field and row.field in PAIRED}
    with pytest.raises(SpecError) as info:
        ParityOptions.from_kwargs(**{row.field: bad}, **pair)
    assert str(info.value).startswith(f"{row.field}={bad!r}: ")
    if not row.axis and row.ini_type != "bool":  # the same parser: the same words as the command line's
        with pytest.raises(ValueError) as cli:
            row.parse(bad)
        assert str(info.value) == f"{row.field}={bad!r}: {cli.value}"


@pytest.mark.parametrize("row", OPTIONS, ids=lambda o: o.noun)
def test_the_command_line_or_ini_key_refuses_the_bad_value_naming_it(pytester: pytest.Pytester, row: Option) -> None:
    bad = BAD[row.noun]
    if row.ini_type == "bool":
        pytester.makeini(f"[pytest]\nonnx_parity_{row.attr} = {bad}\n")
        args: list[str] = []
        where = f"ini key onnx_parity_{row.attr}: bad value {bad!r}"
    else:
        args = [f"--onnx-parity-{row.noun}={bad}"] + [f"--onnx-parity-{k}={v}" for k, v in PAIRED.items() if k != row.noun
                                                         and row.noun in PAIRED]
        where = f"--onnx-parity-{row.noun}: bad value {bad!r}"
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert where in result.stderr.str()


AXIS_SAMPLES: dict[str, list[Any]] = {
    "exporter": ["dynamo", "torchscript", "jit"], "opset": ["6", "7", "18", "30", "31", "x"],
    "precision": ["fp32", "int8", "fp8"], "ort-opt": ["disabled", "all", "max"],
    "providers": ["CPUExecutionProvider", "OpenVINOExecutionProvider(device_type=CPU)", "cuda"],
    "runtime": ["onnxruntime", "openvino(INFERENCE_PRECISION_HINT=f32)", "tensorrt", "openvino(PRECISION=f32)"],
    "preprocess": ["metadata", "canvas", "nope"], "image-size": ["7", "8", "224", "4096", "4097", "big"],
    "simplifier": ["none", "onnxslim", "onnxopt"],
}


def _accepted(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except ValueError:
        return "refused"


@pytest.mark.parametrize("row", [o for o in OPTIONS if o.axis], ids=lambda o: o.noun)
def test_an_axis_takes_one_value_per_run_as_the_gate_takes_it_in_its_comma_list(row: Option) -> None:
    """The run's check of one value and the gate's comma-list parser (variants.py) agree, value by value."""
    assert set(AXIS_SAMPLES) == {o.noun for o in OPTIONS if o.axis}
    for value in AXIS_SAMPLES[row.noun]:
        gate = _accepted(row.parse, value)
        run = _accepted(row.run_value, value)
        assert gate == "refused" if run == "refused" else gate == (run,), (value, gate, run)
        assert ParityOptions.from_kwargs(**{row.field: value}) if run != "refused" else True
