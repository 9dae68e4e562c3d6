"""The pytest side, tested the way pytest plugins are tested: with pytester."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = "test_vit,test_convnext"


@pytest.fixture(autouse=True, scope="module")
def _preload_heavy_libraries() -> None:
    """In-process pytester runs drop modules first imported inside them; torch and
    onnxruntime cannot be loaded twice in one process, so import them out here first."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401
FAST = ["--onnx-parity-exporter", "torchscript", "--onnx-parity-layers", "never"]


def gate(pytester: pytest.Pytester, cache: str, *args: str) -> pytest.RunResult:
    # "--opt=value": a bare path argument would take part in pytest's rootdir/inifile search
    return pytester.runpytest("--onnx-parity", f"--onnx-parity-cache-dir={cache}", "-p", "no:cacheprovider", *args)


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*ONNX parity of timm models*",
        "*--onnx-parity *Run the ONNX parity gate*",
        "*--onnx-parity-models=A,B*",
        "*--onnx-parity-exporter=dynamo|torchscript*",
        "*--onnx-parity-report=PATH*",
    ])
    for noun in ("weights", "opset", "atol", "rtol", "seed", "images", "cache-dir", "no-cache", "layers", "plots"):
        assert f"--onnx-parity-{noun}" in result.stdout.str()
    result.stdout.fnmatch_lines(["*onnx_parity_models (linelist)*", "*onnx_parity_exporter (string)*"])


@pytest.mark.parametrize("args,needle", [
    (["--onnx-parity-exporter", "jit"], "--onnx-parity-exporter: bad value 'jit': choose one of dynamo, torchscript"),
    (["--onnx-parity-weights", "imagenet"], "--onnx-parity-weights: bad value 'imagenet'"),
    (["--onnx-parity-opset", "eighteen"], "--onnx-parity-opset: bad value 'eighteen': expected integers from 7 to 30"),
    (["--onnx-parity-opset", "17,abc"], "--onnx-parity-opset: bad value '17,abc': abc: expected integers from 7 to 30"),
    (["--onnx-parity-opset", "13"], "--onnx-parity-opset: bad value 13: the dynamo exporter writes opset 18 or newer"),
    (["--onnx-parity-atol", "-1", "--onnx-parity-rtol", "0"], "--onnx-parity-atol: bad value '-1'"),
    (["--onnx-parity-atol", "1e-3"], "--onnx-parity-atol=0.001 given without --onnx-parity-rtol"),
    (["--onnx-parity-layers", "sometimes"], "--onnx-parity-layers: bad value 'sometimes'"),
    (["--onnx-parity-images", "/no/such/dir"], "--onnx-parity-images: bad value '/no/such/dir': image folder /no/such/dir does not exist"),
    (["--onnx-parity-images", "."], "--onnx-parity-images: bad value '.': image folder . holds no images"),
    (["--onnx-parity-models", "resnet18=imagenet"], "--onnx-parity-models: bad value 'resnet18=imagenet'"),
    (["--onnx-parity-shard", "3/2"], "--onnx-parity-shard: bad value '3/2'"),
    (["--onnx-parity-layer-memory", "lots"], "--onnx-parity-layer-memory: bad value 'lots'"),
])
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], needle: str) -> None:
    result = pytester.runpytest("--onnx-parity", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nonnx_parity_exporter = onnxruntime\n")
    result = pytester.runpytest("--onnx-parity")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini key onnx_parity_exporter: bad value 'onnxruntime'" in result.stderr.str()


def test_a_path_option_in_the_space_form_cannot_move_the_rootdir(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest reads ``--onnx-parity-images DIR``'s DIR as a test path before the plugin is loaded: a pytest.ini
    above DIR (another project's) would become the run's ini file and rootdir. That is a usage error naming the
    ``=`` form; the ``=`` form, and a space form that changes nothing, run as they are."""
    import shutil

    from pytest_onnx_parity.preprocessing.images import bundled_image_paths

    other, proj = pytester.path / "other", pytester.path / "proj"
    (other / "imgs").mkdir(parents=True)
    shutil.copy(bundled_image_paths()[0], other / "imgs" / "cat.jpg")
    (other / "pytest.ini").write_text("[pytest]\naddopts = -p no:nothing_here\n")  # the trap
    (proj / "tests").mkdir(parents=True)
    (proj / "pytest.ini").write_text("[pytest]\n")
    (proj / "tests" / "test_root.py").write_text(
        "def test_root(pytestconfig):\n    assert pytestconfig.rootpath.name == 'proj', pytestconfig.rootpath\n")
    (proj / "out").mkdir()
    (proj / "out" / "r.json").write_text("{}")
    monkeypatch.chdir(proj)
    for args in (["--onnx-parity-images", "../other/imgs"], ["--onnx-parity-images", str(other / "imgs"), "tests"]):
        trapped = pytester.runpytest("-p", "no:cacheprovider", *args)
        assert trapped.ret == pytest.ExitCode.USAGE_ERROR, args
        err = trapped.stderr.str()
        assert f"Write the option with '=': --onnx-parity-images={args[1]}" in err, err
        assert f"chose rootdir {other} with ini file {other / 'pytest.ini'} instead of rootdir {proj}" in err, err
    pytester.runpytest("-p", "no:cacheprovider", "--onnx-parity-images=../other/imgs").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--onnx-parity-report", "out/r.json").assert_outcomes(passed=1)


def test_plugin_import_loads_no_heavy_library(pytester: pytest.Pytester) -> None:
    """An installed but unused plugin costs nothing: a plain run imports none of them."""
    pytester.makeconftest("""
        import sys
        def pytest_sessionfinish(session):
            heavy = sorted(m for m in ("torch", "timm", "onnx", "onnxruntime", "onnxscript") if m in sys.modules)
            print("HEAVY:", heavy)
    """)
    pytester.makepyfile("def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*HEAVY: []"])
    code = ("import sys, pytest_onnx_parity, pytest_onnx_parity.plugin;"
            "print(sorted(m for m in ('torch','timm','onnx','onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_gate_in_an_empty_folder_passes_writes_report_and_reuses_cache(pytester: pytest.Pytester, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    # -v -s: the phases are shown live (with output captured they go into the item's report section)
    result = gate(pytester, cache, "--onnx-parity-models", TINY, "--onnx-parity-report", "r.json", "-v", "-s", *FAST)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*onnx-parity?test_vit?*[[]checks[]]*PASSED*",
        "*onnx-parity summary*",
        "model*status*max abs diff*top-1*first divergence*export s*cache hit*",
        "test_convnext*passed*100.0%*no",
        "test_vit*passed*100.0%*no",
    ])
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["schema"] == 1 and set(report["environment"]) >= {"torch", "timm", "onnx", "onnxruntime"}
    models = {m["model"]: m for m in report["models"]}
    assert set(models) == {"test_vit", "test_convnext"}
    vit = models["test_vit"]
    assert vit["status"] == "passed" and vit["exporter"] == "torchscript" and vit["weights"] == "random"
    assert vit["data_config"]["input_size"] == [3, 160, 160] and vit["data_config"]["mean"] == [0.5, 0.5, 0.5]
    assert vit["cache_hit"] is False and vit["timings"]["export_s"] > 0 and vit["error"] is None
    assert {c["name"] for c in vit["checks"]} >= {"data_config", "logits", "topk", "batch_consistency", "real_images"}
    # second run: every export comes from the cache
    again = gate(pytester, cache, "--onnx-parity-models", TINY, "--onnx-parity-report", "r2.json", *FAST)
    again.assert_outcomes(passed=2)
    report2 = json.loads((pytester.path / "r2.json").read_text())
    assert all(m["cache_hit"] is True for m in report2["models"])
    # a truncated cache file is detected and rebuilt, not trusted
    onnx_files = sorted(Path(cache).glob("test_vit-*/model.onnx"))
    assert len(onnx_files) == 1
    data = onnx_files[0].read_bytes()
    onnx_files[0].write_bytes(data[: len(data) // 2])
    third = gate(pytester, cache, "--onnx-parity-models", "test_vit", "--onnx-parity-report", "r3.json", *FAST)
    third.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "r3.json").read_text())["models"][0]["cache_hit"] is False
    assert onnx_files[0].read_bytes() == data  # the same export, rebuilt in full


def test_broken_models_do_not_stop_the_gate(pytester: pytest.Pytester, export_cache: str) -> None:
    pytester.makeconftest("""
        import torch
        real_export = torch.onnx.export
        def export(model, *args, **kwargs):
            if type(model).__name__ == "ConvNeXt":
                raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset version 20 is not supported")
            return real_export(model, *args, **kwargs)
        def pytest_configure(config):
            torch.onnx.export = export
        def pytest_unconfigure(config):  # in-process runs share torch with the tests after this one
            torch.onnx.export = real_export
    """)
    result = gate(pytester, export_cache, "--onnx-parity-models", "test_convnext=random,test_vit",
                  "--onnx-parity-report", "r.json", "--onnx-parity-no-cache", *FAST)
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "torchscript exporter failed: RuntimeError: Exporting the operator 'aten::frobnicate'" in out
    assert "Traceback" not in out
    models = {m["model"]: m for m in json.loads((pytester.path / "r.json").read_text())["models"]}
    assert models["test_convnext=random"]["status"] == "error"
    assert models["test_vit"]["status"] == "passed"


def test_unknown_model_names_are_usage_errors_with_close_matches(pytester: pytest.Pytester) -> None:
    """A name timm does not know could never run: refused at collection, every bad name at once, with close matches."""
    result = pytester.runpytest("--onnx-parity", "-p", "no:cacheprovider", "--collect-only",
                                "--onnx-parity-models=resnet181,test_vit,vit_small_patch16_224.augreg_in21k_ft_in1kk")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "timm has no model 'resnet181'. Did you mean: resnet18" in err
    assert ("timm has no pretrained tag 'vit_small_patch16_224.augreg_in21k_ft_in1kk'. "
            "Did you mean: vit_small_patch16_224.augreg_in21k_ft_in1k") in err
    assert "test_vit" not in err.replace("test_vit,", "")


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_missing_checkpoint_is_a_usage_error_before_torch_loads(pytester: pytest.Pytester, tmp_path: Path,
                                                                  xdist: list[str]) -> None:
    """Known without torch: exit 4 within seconds (under xdist too: the controller checks before workers start)."""
    import time

    pytester.makeconftest("""
        import sys
        def pytest_unconfigure(config):
            sys.stderr.write(f"TORCH LOADED: {'torch' in sys.modules}\\n")
    """)
    missing = tmp_path / "missing.safetensors"
    t = time.perf_counter()
    result = pytester.runpytest_subprocess("--onnx-parity", "-p", "no:cacheprovider", f"--onnx-parity-models=test_vit={missing}",
                                           *xdist)
    elapsed = time.perf_counter() - t
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, err
    assert f"--onnx-parity-models: checkpoint file not found: {missing} (from spec 'test_vit={missing}')" in err
    assert "TORCH LOADED: False" in err
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_patterns_expand_and_marker_deselects(pytester: pytest.Pytester, export_cache: str) -> None:
    result = gate(pytester, export_cache, "--onnx-parity-models", "test_vit*", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["onnx-parity[[]test_vit[]]", "onnx-parity[[]test_vit2[]]", "onnx-parity[[]test_vit3[]]"])
    none = gate(pytester, export_cache, "--onnx-parity-models", "test_vit", "-m", "not onnx_parity")
    assert none.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    bad = gate(pytester, export_cache, "--onnx-parity-models", "nomodel_*")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "matches no timm model" in bad.stderr.str()


def test_ini_models_and_cli_wins(pytester: pytest.Pytester, export_cache: str) -> None:
    pytester.makeini("[pytest]\nonnx_parity_models =\n    test_vit\n    # a comment\n    test_convnext\n")
    result = gate(pytester, export_cache, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["onnx-parity[[]test_vit[]]", "onnx-parity[[]test_convnext[]]"])
    cli = gate(pytester, export_cache, "--onnx-parity-models", "test_efficientnet", "--collect-only", "-q")
    assert "test_efficientnet" in cli.stdout.str() and "test_vit" not in cli.stdout.str()


def test_fixtures_follow_the_marker_without_the_gate(pytester: pytest.Pytester, export_cache: str) -> None:
    pytester.makepyfile("""
        import numpy as np
        import pytest
        from pytest_onnx_parity import assert_logits_close, read_data_config

        pytestmark = pytest.mark.onnx_parity(model="test_vit", exporter="torchscript")

        def test_all_fixtures(timm_model, onnx_export, data_config, random_batch, real_batch, ort_session):
            import torch
            exp = onnx_export()
            assert read_data_config(exp.path) == data_config
            assert random_batch.shape == (2, 3, 160, 160) and random_batch.dtype == np.float32
            assert real_batch.shape == (4, 3, 160, 160)
            with torch.no_grad():
                expected = timm_model(torch.from_numpy(real_batch))
            actual = ort_session.run(None, {"input": real_batch})[0]
            assert_logits_close(expected, actual)

        def test_export_made_once(onnx_export, timm_model):
            assert onnx_export() is onnx_export()
            assert onnx_export(exporter="torchscript").path == onnx_export().path

        @pytest.mark.onnx_parity(model="test_convnext", exporter="torchscript")
        def test_closest_marker_wins(data_config):
            assert data_config["input_size"] == [3, 160, 160] and data_config["crop_pct"] == 0.95

        @pytest.mark.onnx_parity(model="test_vit", exporter="torchscript", colour="blue")
        def test_unknown_keyword(timm_model):
            pass
    """)
    result = pytester.runpytest(f"--onnx-parity-cache-dir={export_cache}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*onnx_parity got unknown keyword(s) colour*"])


def test_fixture_without_model_names_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(timm_model):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*mark the test with @pytest.mark.onnx_parity(model='resnet18')*"])


def test_unreadable_images_are_listed_by_name(pytester: pytest.Pytester, export_cache: str) -> None:
    import shutil

    from pytest_onnx_parity.preprocessing.images import bundled_image_paths

    folder = pytester.path / "imgs"
    folder.mkdir()
    shutil.copy(bundled_image_paths()[0], folder / "good.jpg")
    (folder / "broken.jpg").write_text("not an image")
    (folder / "sub").mkdir()
    (folder / "sub" / "cut.png").write_bytes(b"\x89PNG\r\n")
    result = gate(pytester, export_cache, "--onnx-parity-models", "test_vit", f"--onnx-parity-images={folder}", *FAST)
    result.assert_outcomes(errors=1)  # the check could not run: an ERROR, not a failed export
    out = result.stdout.str()
    assert "2 images cannot be read" in out and "broken.jpg" in out and "cut.png" in out
    assert "Traceback" not in out


# -- the gate as pytest sees it: a collector, typed ini keys ---------------------------------------------

def test_the_gate_items_come_from_a_collector_pytest_counts_and_selects(pytester: pytest.Pytester, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    listed = gate(pytester, cache, f"--onnx-parity-models={TINY}", "--collect-only", "-q")
    listed.stdout.fnmatch_lines(["test_own.py::test_own", "onnx-parity[[]test_vit[]]", "onnx-parity[[]test_convnext[]]",
                                 "3 tests collected*"])
    tree = gate(pytester, cache, f"--onnx-parity-models={TINY}", "--collect-only")
    tree.stdout.fnmatch_lines(["*<GateCollector onnx-parity>", "*<ParityItem onnx-parity[[]test_vit[]]>"])
    picked = gate(pytester, cache, f"--onnx-parity-models={TINY}", "-k", "test_vit", *FAST)
    picked.assert_outcomes(passed=1, deselected=2)
    alone = gate(pytester, cache, f"--onnx-parity-models={TINY}", "-m", "onnx_parity", "--deselect",
                 "onnx-parity[test_vit]", *FAST)
    alone.assert_outcomes(passed=1, deselected=2)
    alone.stdout.fnmatch_lines(["*collected 3 items / 2 deselected / 1 selected*"])


def test_boolean_ini_keys_name_the_key_on_a_bad_value(pytester: pytest.Pytester) -> None:
    from pytest_onnx_parity.plugin import SETTINGS_KEY

    pytester.makeini("[pytest]\nonnx_parity_no_cache = yes\nonnx_parity_test_time = false\n")
    config = pytester.parseconfigure()
    settings = config.stash[SETTINGS_KEY]
    assert settings.no_cache is True and settings.test_time is False
    assert settings.sources == {"no_cache": "ini key onnx_parity_no_cache"}  # an unset or false key: not given
    pytester.makeini("[pytest]\nonnx_parity_no_cache = maybe\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini key onnx_parity_no_cache: bad value" in result.stderr.str()


def test_relative_ini_paths_are_anchored_at_the_ini_file_and_options_at_the_cwd(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_onnx_parity.settings import resolve

    ini = {"onnx_parity_report": "reports/r.json", "onnx_parity_artifacts": "/abs/bundles"}
    cli = {"onnx_parity_plots": "plots"}
    config = SimpleNamespace(inipath=tmp_path / "cfg" / "pytest.ini", rootpath=tmp_path,
                             getoption=lambda dest: cli.get(dest, False if dest == "onnx_parity" else None),
                             getini=lambda dest: ini.get(dest))
    s = resolve(config)
    assert s.report == str(tmp_path / "cfg" / "reports" / "r.json")
    assert s.artifacts == "/abs/bundles" and s.plots == "plots"


def test_the_marker_refuses_tolerances_no_fixture_reads(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.onnx_parity(model="test_vit", atol=1e-3, rtol=1e-4)
        def test_tol(data_config):
            pass

        @pytest.mark.onnx_parity(model="test_vit")
        def test_ok(data_config):
            assert data_config["input_size"] == [3, 160, 160]
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*onnx_parity got atol and rtol, which no fixture reads*assert_logits_close(expected, actual, atol=..., rtol=...)*"])


def test_the_session_fixture_runs_on_the_markers_runtime(pytester: pytest.Pytester) -> None:
    """ort_session opens the marker's runtime and level; a runtime that cannot start here skips, naming why."""
    pytester.makepyfile("""
        import pytest

        @pytest.mark.onnx_parity(model="test_resnet", exporter="torchscript", ort_opt="basic")
        def test_level(ort_session):
            assert ort_session.info().runtime == "onnxruntime"
            assert ort_session.settings.ort_opt == "basic"

        @pytest.mark.onnx_parity(model="test_resnet", exporter="torchscript",
                                 provider="CUDAExecutionProvider(device_id=0)")
        def test_missing_provider(ort_session):
            raise AssertionError("must not run on the CPU")
    """)
    import onnxruntime

    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():  # pragma: no cover - a GPU build
        return
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*CUDAExecutionProvider*"])
