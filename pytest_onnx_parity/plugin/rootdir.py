"""A plugin option written in the space form must not move pytest's rootdir.

pytest chooses its rootdir and ini file from the command line's path arguments
*before* it loads plugins through entry points, so at that moment it does not know
that ``--onnx-parity-images`` takes a value: in ``--onnx-parity-images /data/imgs``
it reads ``/data/imgs`` as a test path, and a ``pytest.ini`` above ``/data/imgs``
becomes the run's ini file and its folder the rootdir (pytest issues #906, #1435,
#8846; pytest's docs on rootdir say so too). ``--onnx-parity-images=/data/imgs`` is
one argument, an option, and is never taken for a path.

A plugin cannot undo this: the ini file (its ``addopts`` included) is read before
any plugin code runs, and resetting the rootdir would mean writing pytest's private
attributes. What a plugin can do is notice, and refuse to run on the wrong
configuration: :func:`check_space_form_paths` (called from ``pytest_configure``)
asks pytest's own rootdir function whether the values given in the space form changed
the rootdir or the ini file, and if they did raises a ``pytest.UsageError`` naming the
``--option=value`` form. A value that changed nothing (the usual case: a report path
inside the project) is accepted, so command lines that worked keep working.

pytest's rootdir function (``_pytest.config.findpaths.determine_setup``) is private;
it is looked up defensively and, where a pytest version lacks it, the check is skipped
(the run then behaves as pytest itself decides, as before).
"""
from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_space_form_paths", "space_form_values"]


def space_form_values(args: Sequence[str], options: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(index of the value, option, value)`` for each of ``options`` written as two arguments in ``args``."""
    wanted = set(options)
    return [(i + 1, arg, str(args[i + 1])) for i, arg in enumerate(args[:-1])
            if arg in wanted and not str(args[i + 1]).startswith("-")]


def _exists(value: str, where: Path) -> bool:
    # pytest's own test: the part before "::" names an existing file or folder
    path = Path(value.split("::")[0]).expanduser()
    try:
        return (path if path.is_absolute() else where / path).exists()
    except OSError:
        return False


def _rootdir_function() -> Callable[..., Any] | None:
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:  # pragma: no cover - a pytest without it: nothing to compare with
        return None
    return determine_setup


def _setup(fn: Callable[..., Any], config: Any, args: list[str]) -> tuple[Path, Path | None] | None:
    """(rootdir, ini file) pytest would choose from the path arguments ``args``; None if it cannot be asked."""
    inv = config.invocation_params
    given = {"inifile": config.getoption("inifilename"), "args": args,
             "rootdir_cmd_arg": config.getoption("rootdir") or None, "invocation_dir": Path(inv.dir),
             "override_ini": config.getoption("override_ini"), "config": None}
    try:
        params = inspect.signature(fn).parameters
        result = fn(**{k: v for k, v in given.items() if k in params})
        return Path(result[0]), (Path(result[1]) if result[1] is not None else None)
    except Exception:  # noqa: BLE001 - another pytest's signature or behaviour: skip the check
        return None


def check_space_form_paths(config: Any, options: Sequence[str]) -> str | None:
    """A message naming the ``--option=value`` form when a space-form value moved the rootdir or ini file, else None.

    ``options`` are the plugin's options that take a value. The values are looked for where
    pytest's first look at the command line saw them: ``PYTEST_ADDOPTS`` and the arguments
    as typed (an ini file's ``addopts`` is read later and cannot move the rootdir).
    """
    inv = config.invocation_params
    typed = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + [str(a) for a in inv.args]
    where = Path(inv.dir)
    found = [(i, opt, v) for i, opt, v in space_form_values(typed, options) if _exists(v, where)]
    if not found:
        return None
    fn = _rootdir_function()
    if fn is None:
        return None
    # the real path arguments, and where pytest's first look saw the values among them (the order matters:
    # pytest looks for an ini file above each path in turn)
    left = [str(a) for a in (config.getoption("file_or_dir") or [])]
    values = {i for i, _, _ in found}
    seen: list[tuple[str, bool]] = []  # (argument, is one of the values)
    for i, tok in enumerate(typed):
        if i in values:
            seen.append((tok, True))
        elif tok in left:
            left.remove(tok)
            seen.append((tok, False))
    seen += [(a, False) for a in left]  # from an ini file's addopts: not seen by that first look, kept on both sides
    without = _setup(fn, config, [a for a, is_value in seen if not is_value])
    with_values = _setup(fn, config, [a for a, _ in seen])
    if without is None or with_values is None or without == with_values:
        return None
    root, ini = Path(config.rootpath), config.inipath
    want_root, want_ini = without
    forms = ", ".join(f"{opt}={v}" for _, opt, v in found)
    given = ", ".join(f"{opt} {v}" for _, opt, v in found)
    return (f"{given}: pytest took the value for a test path when it chose its rootdir and ini file (it does so for "
            f"every plugin option written as two arguments, before plugins are loaded), and chose rootdir {root} with "
            f"ini file {ini or 'none'} instead of rootdir {want_root} with ini file {want_ini or 'none'}. "
            f"Write the option with '=': {forms} (or set it with its ini key).")
