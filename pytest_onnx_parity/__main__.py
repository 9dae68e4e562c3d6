"""Command line: check and stamp a file made elsewhere, merge the gate's JSON reports, render the table.

    onnx-parity check model.onnx --model NAME=/path/to/checkpoint.safetensors [--report r.json] [gate options]
    onnx-parity stamp model.onnx --model NAME [-o stamped.onnx]
    python -m pytest_onnx_parity merge shard-1.json shard-2.json -o all.json
    python -m pytest_onnx_parity render all.json --markdown table.md --html table.html
    onnx-parity runtimes [NAME...] [--install NAME...|all]

(also installed as ``onnx-parity``). ``check`` takes the gate's options (the same
``OPTIONS`` table, as ``--NOUN`` or ``--onnx-parity-NOUN``, less those that shape an export: it refuses
them) and exits 0 passed, 1 failed,
2 usage error, 3 could not check. ``merge``/``render`` exit 0 done, 2 usage error or a
missing/invalid report, and need neither torch nor onnxruntime. ``runtimes`` exits 0 when every
runtime listed (or installed) is ready here, 1 otherwise, 2 for an unknown name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .axes import WEIGHT_SETS, use_ema
from .report.render import render_html, render_markdown
from .report.schema import ReportError, load_report, merge_reports, write_json
from .specs.optiontable import ROWS

USAGE_ERROR = 2
FAILED = 1
COULD_NOT_CHECK = 3
#: gate options that shape an export the plugin makes (the option table's ``export_only`` rows): ``check`` takes
#: FILE as it was made (its exporter and opset are what the file says, its preprocessing is embedded or not, nothing
#: is exported or cached), so ``check --help`` does not list them and ``check`` refuses them, naming why
_EXPORT_ONLY = {o.noun: o.export_only for o in ROWS if o.export_only}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx-parity",
        description="Check or stamp an ONNX file made elsewhere; merge pytest-onnx-parity JSON reports and render "
                    "the compatibility table.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{check,stamp,merge,render,runtimes}")
    sub.required = True

    from .settings import OPTIONS, attr

    c = sub.add_parser("check", help="Check an ONNX file made anywhere against the model it was exported from",
                       description="Every check of a gate item on FILE: the same summary table and JSON entry. "
                                   "Exit 0 passed, 1 failed, 2 usage error, 3 could not check.")
    c.add_argument("file", metavar="FILE.onnx", help="the ONNX file to check (only read, never written)")
    c.add_argument("--model", required=True, metavar="SPEC",
                   help="the model the file was exported from: NAME[=WEIGHTS], e.g. resnet50=/ckpt/model.safetensors")
    c.add_argument("--report", "--onnx-parity-report", dest="onnx_parity_report", metavar="PATH",
                   help="Write the JSON report (one entry) to PATH")
    for opt in OPTIONS:
        if not opt.check:  # makes no sense for one given file (models, shard; --report is above)
            continue
        names = (f"--{opt.noun}", f"--onnx-parity-{opt.noun}")
        if opt.noun in _EXPORT_ONLY:  # accepted only to be refused with a reason (_export_options), never listed
            c.add_argument(*names, dest="export_only_" + attr(opt.noun), nargs=0 if opt.ini_type == "bool" else None,
                           action=_Given, help=argparse.SUPPRESS)
        elif opt.ini_type == "bool":
            c.add_argument(*names, dest="onnx_parity_" + attr(opt.noun), action="store_true", default=None, help=opt.help)
        else:
            c.add_argument(*names, dest="onnx_parity_" + attr(opt.noun), metavar=opt.metavar, help=opt.help)

    st = sub.add_parser("stamp", help="Write a model's data config and provenance into an ONNX file made elsewhere",
                        description="The data config comes from the first source that has it: --data-config, a timm train.py "
                                    "checkpoint's training args, a local-dir/hub config.json, timm's pretrained config of NAME (nothing is "
                                    "downloaded). The file is stamped in place, or copied to -o and the copy stamped.")
    st.add_argument("file", metavar="FILE.onnx", help="the ONNX file to stamp")
    st.add_argument("--model", required=True, metavar="SPEC", help="the model the file was exported from: NAME[(ARGS)][=WEIGHTS]")
    st.add_argument("-o", "--output", metavar="OUT.onnx", help="write a stamped copy to OUT.onnx instead")
    st.add_argument("--data-config", "--onnx-parity-data-config", dest="data_config", metavar="K=V,...",
                    help="data config fields that override the model's own, e.g. mean=(0.5,0.5,0.5),crop_pct=0.95")
    ws = next(r for r in ROWS if r.noun == "weight-set")  # the table's row: its choices and default, once
    st.add_argument("--weight-set", "--onnx-parity-weight-set", dest="weight_set", choices=WEIGHT_SETS,
                    default=ws.default, help=ws.help)
    st.add_argument("--force", action="store_true",
                    help="stamp even a data config whose input size contradicts the file's fixed input size")

    m = sub.add_parser("merge", help="Merge JSON reports (e.g. the shards of a CI matrix) into one",
                       description="Merge schema-1 reports. One entry per model and variant (exporter, opset, precision, ...) is kept: a later "
                                   "report wins over an earlier one, with a note in the merged report.")
    m.add_argument("reports", nargs="+", metavar="REPORT", help="JSON reports written by --onnx-parity-report")
    m.add_argument("-o", "--output", metavar="PATH", help="Write the merged report to PATH (default: standard output)")

    r = sub.add_parser("render", help="Render the compatibility table as Markdown and/or a self-contained HTML page",
                       description="Render a report (several are merged first). Without --markdown/--html the "
                                   "Markdown goes to standard output.")
    r.add_argument("reports", nargs="+", metavar="REPORT", help="JSON report(s)")
    r.add_argument("--markdown", metavar="PATH", help="Write the Markdown table to PATH ('-' for standard output)")
    r.add_argument("--html", metavar="PATH", help="Write the HTML page to PATH")
    r.add_argument("--title", default="ONNX parity: compatibility table", help="Title of the page")

    rt = sub.add_parser("runtimes", help="List the runtimes a file can be checked on, whether each is ready here and why not",
                        description="Each --onnx-parity-runtime value: ready here, or why not (with the command that installs "
                                    "it). --install installs what the named runtimes need (npm packages into the plugin's cache, "
                                    "Chromium, pip packages). Exit 0 when every runtime listed is ready, 1 otherwise.")
    rt.add_argument("names", nargs="*", metavar="NAME", help="the runtimes to list (default: all)")
    rt.add_argument("--install", nargs="+", metavar="NAME", help="install what these runtimes need ('all': every runtime)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage
        return int(exc.code or 0)
    if args.command == "check":
        return _check(args)
    if args.command == "runtimes":
        return _runtimes(args)
    if args.command == "stamp":
        return _stamp(args)
    try:
        if args.command == "merge":
            return _merge(args)
        return _render(args)
    except ReportError as exc:
        print(f"onnx-parity {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:
        print(f"onnx-parity {args.command}: error: cannot write {exc.filename or ''}: {exc.strerror or exc}",
              file=sys.stderr)
        return USAGE_ERROR


class _Given(argparse.Action):
    """Records that an export-only option was given (``check`` refuses it in :func:`_export_options`)."""

    def __call__(self, parser: object, namespace: argparse.Namespace, values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string or True)


def _export_options(args: argparse.Namespace) -> str | None:
    """The refusal of the first export-only option given to ``check``, or None."""
    for noun, why in _EXPORT_ONLY.items():
        if getattr(args, "export_only_" + noun.replace("-", "_"), None):
            return (f"--{noun} shapes an export the gate makes; onnx-parity check checks FILE as it was made ({why}). "
                    f"Drop --{noun}, or let the gate export and check the model: pytest --onnx-parity "
                    f"--onnx-parity-models=SPEC --onnx-parity-{noun}{'' if noun in ('no-cache', 'embed-preprocessing') else '=...'}")
    return None


class _ArgsConfig:
    """What :func:`settings.resolve` reads from pytest's config, from parsed ``check`` arguments (no ini file)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def getoption(self, dest: str) -> object:
        return True if dest == "onnx_parity" else getattr(self.args, dest, None)

    def getini(self, dest: str) -> None:
        return None


def _check(args: argparse.Namespace) -> int:
    from .errors import OnnxParityError
    from .options import ParityOptions
    from .report.render import summary_lines
    from .report.schema import write_report
    from .run import check_file
    from .settings import SettingsError, resolve
    from .specs import file_spec

    refused = _export_options(args)
    if refused:
        print(f"onnx-parity check: error: {refused}", file=sys.stderr)
        return USAGE_ERROR
    try:
        settings = resolve(_ArgsConfig(args))
        spec = file_spec(args.model, args.file, default_weights=settings.weights)
        from .model.constructor import check_model_args

        check_model_args(spec)
        options = ParityOptions.from_kwargs(**settings.parity_options(weights=spec.weights))
    except (SettingsError, OnnxParityError) as exc:
        print(f"onnx-parity check: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(f"onnx-parity check: {spec.onnx_file} against {spec.label} ({spec.weights} weights)", file=sys.stderr)
    result = check_file(spec, options, after=lambda run: _extras(run, settings))
    entry = result.to_dict()
    entry["model"] = spec.text
    if not result.passed:
        print(result.failure_message(), file=sys.stderr)
        print(file=sys.stderr)
    print(summary_lines([entry]))
    if settings.report:
        try:
            write_report(Path(settings.report), [entry])
        except OSError as exc:
            print(f"onnx-parity check: error: cannot write the report {settings.report}: {exc}", file=sys.stderr)
            return USAGE_ERROR
        print(f"onnx-parity report: {settings.report}")
    return 0 if result.passed else FAILED if result.status == "failed" else COULD_NOT_CHECK


def _extras(run: object, settings: object) -> None:
    """--plots and --artifacts, as the gate writes them."""
    result = run.result  # type: ignore[attr-defined]
    if settings.plots and result.layer_comparison is not None:  # type: ignore[attr-defined]
        from .errors import OnnxParityError
        from .report.plots import layer_plot

        try:  # the gate's rule (plots.plot_file): one item, so its label is the spec
            layer_plot(result, Path(settings.plots), str(getattr(run, "model_arg", "model")))  # type: ignore[attr-defined]
        except OnnxParityError as exc:
            print(f"onnx-parity check: no plot: {exc}", file=sys.stderr)
    if settings.artifacts and not result.passed:  # type: ignore[attr-defined]
        from .report.bundle import write_bundle

        print(f"reproducer bundle: {write_bundle(run, Path(settings.artifacts))}", file=sys.stderr)  # type: ignore[arg-type, attr-defined]


def _stamp(args: argparse.Namespace) -> int:
    from .errors import OnnxParityError
    from .onnxfile.stamp import stamp_onnx

    try:
        from .preprocessing.dataconfig import check_overrides
        from .specs import parse_model_args

        overrides = check_overrides(parse_model_args(args.data_config, where="--data-config")) if args.data_config else None
        out = stamp_onnx(args.file, args.model, output=args.output, data_config=overrides,
                         use_ema=use_ema(args.weight_set), force=args.force)
    except OnnxParityError as exc:
        print(f"onnx-parity stamp: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:
        print(f"onnx-parity stamp: error: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE_ERROR
    from .onnxfile.metadata import read_data_config, read_provenance
    from .preprocessing.dataconfig import source_words

    source = source_words(read_provenance(out).get("data_config_source"))
    cfg = read_data_config(out)
    print(f"stamped {out} with the data config and provenance of {args.model} (data config from {source}: "
          f"input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}, "
          f"crop_pct {cfg['crop_pct']:g}, {cfg['interpolation']})")
    return 0


def _runtimes(args: argparse.Namespace) -> int:
    from .errors import SpecError
    from .runtime.catalog import catalog, install, table

    try:
        statuses = (install(args.install, log=lambda line: print(line, file=sys.stderr)) if args.install
                    else catalog(args.names))
    except SpecError as exc:
        print(f"onnx-parity runtimes: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(table(statuses))
    return 0 if all(s.ready for s in statuses) else FAILED


def _merge(args: argparse.Namespace) -> int:
    merged = merge_reports(args.reports)
    if args.output:
        write_json(merged, args.output)
        n = len(merged["models"])
        print(f"merged {len(args.reports)} report(s), {n} model(s) -> {args.output}", file=sys.stderr)
        for note in merged.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
    else:
        import json

        sys.stdout.write(json.dumps(merged, indent=2) + "\n")
    return 0


def _render(args: argparse.Namespace) -> int:
    report = load_report(args.reports[0]) if len(args.reports) == 1 else merge_reports(args.reports)
    if not args.markdown and not args.html:
        args.markdown = "-"
    if args.markdown:
        text = render_markdown(report, title=args.title)
        if args.markdown == "-":
            sys.stdout.write(text)
        else:
            _write(args.markdown, text)
    if args.html:
        _write(args.html, render_html(report, title=args.title))
    return 0


def _write(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
