"""The shape of the package ``pytest_onnx_parity.layers``: light to import, imports one way."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest_onnx_parity

PACKAGE = Path(pytest_onnx_parity.__file__).parent / "layers"
# each module may import only those before it (the package itself, __init__, comes last)
ORDER = ["results", "scopes", "teacher", "probes", "headroom", "tracer", "onnx_values", "verdict", "api", "isolate", "blame", "reduce",
         "repro", "__init__"]


def _relative_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at any depth (inside functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add((node.module or "__init__").split(".")[0])
        if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module and node.module.startswith("layers"):
            found.add("__init__")  # from ..layers import ...: the package itself
    return found


def test_layers_modules_import_downward_only() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted(ORDER)
    for name in ORDER:
        allowed = set(ORDER[: ORDER.index(name)])
        imported = _relative_imports(PACKAGE / f"{name}.py")
        assert imported <= allowed, f"layers/{name}.py imports {sorted(imported - allowed)}, which come after it"


def test_importing_layers_loads_no_heavy_library_nor_the_testing_helpers() -> None:
    code = (
        "import sys; from pytest_onnx_parity.layers import compare_layers, LayerComparison;"
        "from pytest_onnx_parity.layers.api import parse_memory;"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'timm', 'pytest_onnx_parity.testing.faults')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_exports_what_the_public_api_takes_from_it_and_names_every_module() -> None:
    """No re-export of what moved elsewhere (the planted fault lives in pytest_onnx_parity.testing); the
    docstring names each of the package's modules."""
    import pytest_onnx_parity
    from pytest_onnx_parity import layers

    public = {name for name, room in pytest_onnx_parity._LAZY.items() if room == "layers"}
    assert set(layers.__all__) == public == {"LayerComparison", "LayerResult", "assert_layers_close", "compare_layers"}
    assert not hasattr(layers, "scale_layer_weights")
    named = set(re.findall(r":mod:`\.(\w+)`", layers.__doc__ or ""))
    assert named == set(ORDER) - {"__init__"}
