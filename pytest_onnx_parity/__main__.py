"""Command line: merge the gate's JSON reports and render the compatibility table.

    python -m pytest_onnx_parity merge shard-1.json shard-2.json -o all.json
    python -m pytest_onnx_parity render all.json --markdown table.md --html table.html

(also installed as ``onnx-parity``). Exit codes: 0 done, 2 usage error or a
missing/invalid report. Needs neither torch nor onnxruntime.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .report import ReportError, load_report, merge_reports, render_html, render_markdown, write_json

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx-parity",
        description="Merge pytest-onnx-parity JSON reports and render the compatibility table.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{merge,render}")
    sub.required = True

    m = sub.add_parser("merge", help="Merge JSON reports (e.g. the shards of a CI matrix) into one",
                       description="Merge schema-1 reports. One entry per model and exporter is kept: a later "
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage
        return int(exc.code or 0)
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
