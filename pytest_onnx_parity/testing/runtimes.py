"""One rule for tests that need a runtime (``onnxruntime-node``, ``openvino``, ...): skipped where it is not
installed, failed where the environment variable ``CI`` is set (a CI machine must have every runtime its
tests name, so a missing one is a broken machine, not a reason to pass).

    from pytest_onnx_parity.testing.runtimes import require_runtime

    def test_on_node():
        require_runtime("onnxruntime-node")
        ...
"""
from __future__ import annotations

from ..runtime.environment import on_ci  # the one rule: CI set, not empty/0/false/no


def require_runtime(name: str) -> None:
    """Skip the calling test when runtime ``name`` is not ready here (the reason names the install command);
    fail it instead on CI."""
    import pytest

    from ..runtime.catalog import runtime_status

    status = runtime_status(name)
    if status.ready:
        return
    if on_ci():
        pytest.fail(f"CI is set and runtime {name} is not ready: {status.reason}", pytrace=False)
    pytest.skip(f"runtime {name} is not ready: {status.reason}")
