"""fp16 headroom (issue 19, point 3): a LayerNorm whose input is scaled 300x, named in fp16 and fp32 files.

The plant: test_vit's ``blocks.1.norm1`` multiplies its input by 300 before normalising. LayerNorm is
scale-invariant, so the float32 model's outputs barely move, but the squared deviation it normalises by
reaches ~6e5, nine times float16's largest finite value.

What ONNX Runtime (1.32, CPU) does with it, measured while writing this test:

* a fused ``LayerNormalization`` (the dynamo export, or TorchScript at opset 17) converted to float16
  whole (``to_fp16(keep_fp32_ops=())``) stays finite: the CPU kernel computes in float32 inside. The
  squared deviation exists only inside the kernel, so the check models it and warns, never fails.
* a decomposed LayerNorm (TorchScript at opset 16: ReduceMean, Sub, ``Pow``, ReduceMean, Sqrt, Div)
  converted whole to float16 has a float16 ``Pow`` output of 6e5. ONNX Runtime's CPU provider has no
  float16 Pow or ReduceMean kernel and runs them in float32 behind Cast nodes it inserts itself, so the
  value a probe reads is 6e5, finite; a float16 tensor cannot hold it (a device with float16 kernels
  gives Inf): the check fails on the ``>= 65504`` rule, not on a non-finite value.
* with the package's default keep list (Pow and ReduceMean kept in float32), the converter still casts
  the float32 Pow output back to float16 between the two kept ops: that Cast really yields Inf, ReduceMean
  of it Inf, the LayerNorm's output collapses to its bias, and the logits move only quietly. The check
  names that Cast as the first value that yields Inf, in ``blocks.1.norm1``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_onnx_parity import check_parity, export_onnx, load_model
from pytest_onnx_parity.onnxfile.fp16 import to_fp16

PLANTED = "blocks.1.norm1"
FAST = {"layers": "never", "batch_size": 2}


def _scaled_norm(model):  # type: ignore[no-untyped-def]
    import torch

    class ScaledLayerNorm(torch.nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x * 300.0)

    old = model.blocks[1].norm1
    new = ScaledLayerNorm(old.normalized_shape, eps=old.eps)
    new.load_state_dict(old.state_dict())
    model.blocks[1].norm1 = new
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The planted model and the clean one, with float32 and float16 files of each."""
    d = tmp_path_factory.mktemp("headroom")
    planted, clean = _scaled_norm(load_model("test_vit")), load_model("test_vit")
    out = {"planted": planted, "clean": clean}
    for name, model in (("planted", planted), ("clean", clean)):
        fused = export_onnx(model, d / f"{name}.onnx", exporter="dynamo", use_cache=False).path
        decomposed = export_onnx(model, d / f"{name}-ts16.onnx", exporter="torchscript", opset=16, use_cache=False).path
        out[f"{name}-fp32"] = fused
        out[f"{name}-fp16"] = to_fp16(decomposed, d / f"{name}-ts16-fp16.onnx", keep_fp32_ops=())
        out[f"{name}-fp16-fused"] = to_fp16(fused, d / f"{name}-fp16-fused.onnx", keep_fp32_ops=())
    out["planted-fp16-default"] = to_fp16(Path(d / "planted-ts16.onnx"), d / "planted-ts16-fp16-default.onnx")
    return out


def _headroom(files, model: str, file: str):  # type: ignore[no-untyped-def]
    result = check_parity(files[model], onnx=files[file], **FAST)
    check = result.check("headroom")
    assert check is not None, [c.name for c in result.checks]
    return result, check


def test_an_fp16_file_that_overflows_fails_naming_the_module(files) -> None:  # type: ignore[no-untyped-def]
    result, check = _headroom(files, "planted", "planted-fp16")
    assert check.status == "failed" and result.status == "failed", check.message
    assert check.details["precision"] == "fp16"
    assert [d.split(":")[0] for d in check.details["overflowed"]] == [PLANTED], check.message
    assert "Pow" in check.details["overflowed"][0] and "65504" in check.message
    assert check.details["modules"][PLANTED]["overflows"]


def test_a_real_inf_names_the_first_module_that_yields_it(files) -> None:  # type: ignore[no-untyped-def]
    _, check = _headroom(files, "planted", "planted-fp16-default")
    assert check.status == "failed", check.message
    first = check.details["first_nonfinite"]
    assert first["module"] == PLANTED and first["type"] == "float16" and first["op"] == "Cast", first
    assert f"first module that yields Inf or NaN: {PLANTED}" in check.message


def test_an_fp32_file_of_the_same_model_gets_the_warning(files) -> None:  # type: ignore[no-untyped-def]
    result, check = _headroom(files, "planted", "planted-fp32")
    assert check.status == "passed" and result.status == "passed", result.error
    assert check.message.startswith("warning:"), check.message
    assert [w.split(":")[0] for w in check.details["warnings"]] == [PLANTED], check.details["warnings"]
    assert "squared deviation inside LayerNormalization" in check.details["warnings"][0]
    # a fused float16 LayerNormalization computes in float32 inside: a warning, not a failure
    _, fused = _headroom(files, "planted", "planted-fp16-fused")
    assert fused.status == "passed" and fused.message.startswith("warning:"), fused.message
    assert [w.split(":")[0] for w in fused.details["warnings"]] == [PLANTED]


@pytest.mark.parametrize("file", ["clean-fp32", "clean-fp16"])
def test_a_clean_model_gets_no_warning(files, file: str) -> None:  # type: ignore[no-untyped-def]
    _, check = _headroom(files, "clean", file)
    assert check.status == "passed", check.message
    assert not check.message.startswith("warning:") and check.details["warnings"] == [], check.message
    assert check.details["first_nonfinite"] is None and "real photos" in " ".join(check.details["batches"])


def test_a_constant_that_holds_inf_by_design_is_not_an_overflow() -> None:
    """A max-pool's padding with -inf (the dynamo export of pnasnet5large) makes -inf on purpose: the Pad's
    output is not probed, the MaxPool's, which is finite again, is."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from pytest_onnx_parity.layers.probes import infinite_constants, probe_graph

    pad_value = helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.array(-np.inf, np.float32)))
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [pad_value, helper.make_node("Pad", ["x", "pads", "v"], ["p"]),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3])]
    types = {"x": onnx.TensorProto.FLOAT, "p": onnx.TensorProto.FLOAT, "y": onnx.TensorProto.FLOAT,
             "v": onnx.TensorProto.FLOAT}
    assert infinite_constants(nodes, [pads]) == {"v"}
    _, probes = probe_graph(nodes, types, 17, [pads])
    assert [p.where for p in probes if p.what == "output"] == ["y"]
