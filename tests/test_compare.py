"""Assertion helpers: messages, tolerances, near ties. Pure numpy, no models."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_onnx_parity import (
    OnnxParityError,
    ParityFailure,
    assert_logits_close,
    assert_topk_agreement,
    compare_topk,
)


@pytest.fixture
def logits() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)


def test_close_logits_pass_and_torch_tensors_are_accepted(logits: np.ndarray) -> None:
    import torch

    noisy = logits + np.float32(1e-6)
    result = assert_logits_close(torch.from_numpy(logits), noisy)
    assert result.passed and result.max_abs_diff == pytest.approx(1e-6, rel=0.05)


def test_failure_message_reads_like_torch_testing(logits: np.ndarray) -> None:
    bad = logits.copy()
    bad[1, 417] += 0.01
    bad[2, 3] += 0.002
    with pytest.raises(ParityFailure) as info:
        assert_logits_close(logits, bad)
    msg = str(info.value)
    assert "Mismatched elements: 2 / 4000 (0.1%)" in msg
    assert "Greatest absolute difference: 0.01 at index (1, 417)" in msg
    assert msg.index("(1, 417)") < msg.index("(2, 3)")  # worst first
    assert "--onnx-parity-atol/--onnx-parity-rtol" in msg
    assert isinstance(info.value, AssertionError)


def test_shapes_are_checked_before_values(logits: np.ndarray) -> None:
    with pytest.raises(ParityFailure, match=r"Shapes differ: torch gives \(4, 1000\), ONNX Runtime gives \(4, 999\)"):
        assert_logits_close(logits, logits[:, :999])


def test_nan_in_onnx_output_fails(logits: np.ndarray) -> None:
    bad = logits.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ParityFailure, match="non-finite values"):
        assert_logits_close(logits, bad)


def test_atol_and_rtol_go_together(logits: np.ndarray) -> None:
    with pytest.raises(OnnxParityError, match="together"):
        assert_logits_close(logits, logits, atol=1e-3)


def test_default_tolerance_scales_with_the_logits(logits: np.ndarray) -> None:
    # the same relative error passes at any scale, and the same absolute error does not
    for scale in (1e-3, 1.0, 1e3):
        e = logits * scale
        assert_logits_close(e, e * (1 + 5e-5))
        with pytest.raises(ParityFailure):
            assert_logits_close(e, e + 1e-3 * scale)


def test_given_tolerance_is_used_as_is(logits: np.ndarray) -> None:
    assert_logits_close(logits, logits + 0.05, atol=0.1, rtol=0.0)
    with pytest.raises(ParityFailure, match=r"atol=0.01 \(given\)"):
        assert_logits_close(logits, logits + 0.05, atol=0.01, rtol=0.0)


def test_real_topk_swap_fails(logits: np.ndarray) -> None:
    bad = logits.copy()
    order = np.argsort(-logits[0])
    bad[0, order[0]] = logits[0, order[10]]  # the top class falls out of the top 5
    with pytest.raises(ParityFailure, match="Top-5 classes disagree") as info:
        assert_topk_agreement(logits, bad)
    assert "sample 0" in str(info.value)


def test_near_tie_swap_is_reported_not_failed(logits: np.ndarray) -> None:
    e = logits.copy()
    order = np.argsort(-e[0])
    e[0, order[5]] = e[0, order[4]] - 1e-7  # 5th and 6th class tie within float noise
    a = e.copy()
    a[0, order[5]] += 2e-7  # ONNX puts them the other way round
    result = assert_topk_agreement(e, a)
    assert len(result.near_ties) == 1 and result.near_ties[0]["sample"] == 0
    assert result.topk_agreement == 0.75  # reported as a swap, not hidden


def test_min_agreement_allows_a_share(logits: np.ndarray) -> None:
    bad = logits.copy()
    bad[0] = -bad[0]
    assert compare_topk(logits, bad, min_agreement=0.75).passed
    assert not compare_topk(logits, bad, min_agreement=0.8).passed
