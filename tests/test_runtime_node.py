"""onnxruntime-node and onnxruntime-web (WASM) in Node.js against Python onnxruntime, the one Node.js host of a
Python process, the npm install state, and ``onnx-parity runtimes``.

Tests that need Node.js and the npm packages skip where they are not installed and fail where ``CI`` is set
(:func:`pytest_onnx_parity.testing.runtimes.require_runtime`).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from pytest_onnx_parity.errors import OnnxFileError, SpecError, VariantSkip
from pytest_onnx_parity.runtime import nodehost
from pytest_onnx_parity.runtime.runner import RunSettings, open_runner, runtime_missing
from pytest_onnx_parity.testing.runtimes import require_runtime

JS = ("onnxruntime-node", "onnxruntime-web")
#: measured: onnxruntime-node is bit-identical to Python onnxruntime, onnxruntime-web's WASM within ~4e-6 x RMS
AGREEMENT = {"onnxruntime-node": 1e-6, "onnxruntime-web": 1e-5}


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_onnx_parity import export_onnx

    return export_onnx("test_resnet", exporter="torchscript", cache_dir=str(tmp_path_factory.mktemp("cache"))).path


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 160, 160)).astype(np.float32)


def _input_shape(path: Path) -> tuple[str, list]:
    import onnxruntime as ort

    i = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    return i.name, i.shape


def _python_ort(path: "Path | bytes", feeds: dict) -> list[np.ndarray]:
    return open_runner(path, RunSettings()).run(None, feeds)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a - b).max() / max(np.sqrt(np.mean(b * b)), 1e-30))


def _feeds(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    name, shape = _input_shape(path)
    h, w = (s if isinstance(s, int) else 160 for s in shape[2:])
    return {name: np.ascontiguousarray(batch[:, :, :h, :w])}


@pytest.mark.parametrize("runtime", JS)
def test_runtime_agrees_with_python_onnxruntime(runtime: str, resnet_file: Path, batch: np.ndarray) -> None:
    require_runtime(runtime)
    feeds = _feeds(resnet_file, batch)
    want = _python_ort(resnet_file, feeds)
    runner = open_runner(resnet_file, RunSettings(runtime=runtime))
    try:
        assert [i.name for i in runner.get_inputs()] == list(feeds)
        assert runner.get_inputs()[0].type == "tensor(float)"
        got = runner.run(None, feeds)
        info = runner.info()
    finally:
        runner.close()
    assert len(got) == len(want)
    assert got[0].dtype == np.float32 and got[0].shape == want[0].shape
    assert _rel(got[0], want[0]) <= AGREEMENT[runtime], _rel(got[0], want[0])
    assert info.runtime == runtime and info.backend == ("cpu" if runtime.endswith("node") else "wasm")
    assert info.providers == [info.backend] and info.precision is None
    assert info.versions["node"] and info.versions[runtime] == "1.31.1"


@pytest.mark.parametrize("runtime", JS)
def test_float16_outputs_come_back_as_float16(runtime: str, resnet_file: Path, batch: np.ndarray,
                                              tmp_path: Path) -> None:
    require_runtime(runtime)
    from pytest_onnx_parity.onnxfile.fp16 import to_fp16

    fp16 = to_fp16(resnet_file, tmp_path / "fp16.onnx", keep_io_types=False)
    feeds = {k: v.astype(np.float16) for k, v in _feeds(resnet_file, batch).items()}
    want = _python_ort(fp16, feeds)[0]
    got = open_runner(fp16, RunSettings(runtime=runtime)).run(None, feeds)[0]
    assert want.dtype == np.float16 and got.dtype == np.float16 and got.shape == want.shape
    assert np.isfinite(got).all()
    # float16 rounding of an op computed in another order moves a value by ~1e-3 of its size at most
    assert _rel(got, want) <= (1e-6 if runtime.endswith("node") else 5e-3), _rel(got, want)


@pytest.mark.parametrize("runtime", JS)
def test_a_file_with_external_data_loads(runtime: str, resnet_file: Path, batch: np.ndarray, tmp_path: Path) -> None:
    require_runtime(runtime)
    from pytest_onnx_parity.onnxfile.io import external_files, load_onnx_proto, save_onnx

    ext = save_onnx(load_onnx_proto(resnet_file, weights=True), tmp_path / "sub" / "ext.onnx", external=True)
    assert [p.name for p in external_files(ext)] == ["ext.onnx.data"]
    feeds = _feeds(resnet_file, batch)
    want = _python_ort(resnet_file, feeds)[0]
    got = open_runner(ext, RunSettings(runtime=runtime)).run(None, feeds)[0]
    assert _rel(got, want) <= AGREEMENT[runtime]


@pytest.mark.parametrize("runtime", JS)
def test_bytes_and_model_protos_load(runtime: str, resnet_file: Path, batch: np.ndarray) -> None:
    require_runtime(runtime)
    from pytest_onnx_parity.onnxfile.io import load_onnx_proto

    feeds = _feeds(resnet_file, batch[:1])
    want = _python_ort(resnet_file, feeds)[0]
    proto = load_onnx_proto(resnet_file, weights=True)
    for model in (proto, proto.SerializeToString()):
        runner = open_runner(model, RunSettings(runtime=runtime))
        got = runner.run([runner.get_outputs()[0].name], feeds)[0]
        owned = runner._owned
        runner.close()
        assert _rel(got, want) <= AGREEMENT[runtime]
        assert owned is not None and not owned.exists()  # the temporary copy went with close()


@pytest.mark.parametrize("runtime", JS)
def test_a_corrupt_file_is_an_onnx_file_error_naming_it(runtime: str, resnet_file: Path, tmp_path: Path) -> None:
    require_runtime(runtime)
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(resnet_file.read_bytes()[: 4000])
    with pytest.raises(OnnxFileError) as err:
        open_runner(bad, RunSettings(runtime=runtime))
    assert str(bad) in str(err.value) and "Re-export" in str(err.value)
    assert "Traceback" not in str(err.value)
    with pytest.raises(OnnxFileError, match=f"{runtime} cannot load the model: "):
        open_runner(b"\x08\x07garbage that is no model", RunSettings(runtime=runtime))


@pytest.mark.parametrize("runtime", JS)
def test_a_run_the_runtime_refuses_is_an_onnx_file_error(runtime: str, resnet_file: Path, batch: np.ndarray) -> None:
    require_runtime(runtime)
    runner = open_runner(resnet_file, RunSettings(runtime=runtime))
    name = runner.get_inputs()[0].name
    with pytest.raises(OnnxFileError, match=f"{runtime} cannot run {resnet_file}"):
        runner.run(None, {name: batch[:, :2]})  # two channels where the file takes three
    assert runner.run(None, _feeds(resnet_file, batch[:1]))[0].shape[0] == 1  # the session still serves


def test_one_node_process_serves_every_runner(resnet_file: Path, batch: np.ndarray) -> None:
    for runtime in JS:
        require_runtime(runtime)
    feeds = _feeds(resnet_file, batch[:1])
    runners = [open_runner(resnet_file, RunSettings(runtime=r)) for r in (*JS, *JS)]
    host, generation = nodehost.get_host()
    pids = set()
    for r in runners:
        r.run(None, feeds)
        pids.add(nodehost.get_host()[0].pid)
        r.close()
    assert pids == {host.pid} and nodehost.get_host()[1] == generation
    assert host.request("ping")["pid"] == host.pid


def test_a_killed_host_is_restarted_and_the_runners_reload(resnet_file: Path, batch: np.ndarray) -> None:
    require_runtime("onnxruntime-node")
    feeds = _feeds(resnet_file, batch[:1])
    runners = [open_runner(m, RunSettings(runtime="onnxruntime-node")) for m in (resnet_file, resnet_file.read_bytes())]
    before = [r.run(None, feeds)[0] for r in runners]
    host, generation = nodehost.get_host()
    os.kill(host.pid, signal.SIGKILL)
    host.proc.wait(timeout=10)
    after = [r.run(None, feeds)[0] for r in runners]  # the file given as bytes is loaded again too
    new, new_generation = nodehost.get_host()
    assert new.pid != host.pid and new_generation == generation + 1
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
    for r in runners:
        r.close()


def test_a_host_that_does_not_answer_times_out(resnet_file: Path, batch: np.ndarray,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    require_runtime("onnxruntime-node")
    runner = open_runner(resnet_file, RunSettings(runtime="onnxruntime-node"))
    host, _ = nodehost.get_host()
    monkeypatch.setattr(nodehost, "REQUEST_TIMEOUT_S", 2.0)
    os.kill(host.pid, signal.SIGSTOP)
    start = time.monotonic()
    try:
        with pytest.raises(nodehost.HostError, match="did not answer 'run' within 2 s"):
            runner.run(None, _feeds(resnet_file, batch[:1]))
    finally:
        if host.alive:
            os.kill(host.pid, signal.SIGCONT)
    assert time.monotonic() - start < 30 and not host.alive
    assert runner.run(None, _feeds(resnet_file, batch[:1]))[0].shape[0] == 1  # a new host serves it


def test_options_reach_the_runtime_and_unknown_ones_are_refused(resnet_file: Path) -> None:
    require_runtime("onnxruntime-node")
    require_runtime("onnxruntime-web")
    runner = open_runner(resnet_file, RunSettings(runtime="onnxruntime-node(numThreads=1)", ort_opt="disabled"))
    assert runner.info().threads == 1 and runner.info().extra["ort_opt"] == "disabled"
    runner.close()
    web = open_runner(resnet_file, RunSettings(runtime="onnxruntime-web"))
    pool = web.info().threads  # fixed by the host's first web session
    other = open_runner(resnet_file, RunSettings(runtime=f"onnxruntime-web(numThreads={pool + 1})"))
    info = other.info()
    assert info.threads == pool and info.extra["threads_asked"] == pool + 1 and "first session" in info.extra["threads_note"]
    web.close()
    other.close()
    with pytest.raises(SpecError, match="unknown option.*numThread.*takes numThreads"):
        open_runner(resnet_file, RunSettings(runtime="onnxruntime-web(numThread=1)"))


@pytest.mark.parametrize("runtime", JS)
def test_missing_packages_name_the_install_command(runtime: str, tmp_path: Path, resnet_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNX_PARITY_HOME", str(tmp_path / "empty"))
    reason = runtime_missing(RunSettings(runtime=runtime))
    if reason and reason.startswith("node not on PATH"):
        pytest.skip(reason)
    assert reason is not None and f"`onnx-parity runtimes --install {runtime}`" in reason
    assert f"{runtime} is not installed here" in reason and str(tmp_path / "empty" / "npm") in reason
    with pytest.raises(VariantSkip, match="onnx-parity runtimes --install"):
        open_runner(resnet_file, RunSettings(runtime=runtime))


def test_no_node_on_path_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = runtime_missing(RunSettings(runtime="onnxruntime-web"))
    assert reason is not None and reason.startswith("node not on PATH") and "onnx-parity runtimes --install" in reason


def test_require_runtime_skips_here_and_fails_on_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNX_PARITY_HOME", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="onnx-parity runtimes --install onnxruntime-node"):
        require_runtime("onnxruntime-node")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set and runtime onnxruntime-node is not ready"):
        require_runtime("onnxruntime-node")


def test_the_runtimes_command_lists_all_six(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_onnx_parity.__main__ import main
    from pytest_onnx_parity.axes import RUNTIMES
    from pytest_onnx_parity.runtime.catalog import catalog

    code = main(["runtimes"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["runtime", "ready", "why", "not"]
    assert [line.split()[0] for line in out[1:]] == list(RUNTIMES) and len(RUNTIMES) == 6
    statuses = catalog()
    for line, status in zip(out[1:], statuses, strict=True):
        assert line.split()[1] == ("yes" if status.ready else "no")
        assert status.ready or status.reason in line
    assert code == (0 if all(s.ready for s in statuses) else 1)
    assert main(["runtimes", "onnxruntime"]) == 0
    assert main(["runtimes", "no-such-runtime"]) == 2
    assert "unknown runtime 'no-such-runtime'" in capsys.readouterr().err


def test_a_runner_module_absent_from_the_build_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_onnx_parity.runtime import catalog, runner

    monkeypatch.setitem(runner.RUNNERS, "openvino", "pytest_onnx_parity.runtime.no_such_module:Runner")
    status = catalog.runtime_status("openvino")
    assert not status.ready and status.reason.startswith("not available: module missing")


def test_the_npm_lock_pins_exact_versions() -> None:
    import json

    from pytest_onnx_parity.runtime.npm import JS_DIR, pinned_versions

    pins = pinned_versions()
    assert set(pins) == {"onnxruntime-node", "onnxruntime-web", "puppeteer-core"}
    assert all(v[0].isdigit() for v in pins.values()), pins  # exact, no ^ or ~
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    for package, version in pins.items():
        assert lock["packages"][f"node_modules/{package}"]["version"] == version
