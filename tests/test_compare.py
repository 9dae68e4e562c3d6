"""Assertion helpers: messages, tolerances, near ties. Pure numpy, no models."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_onnx_parity import OnnxParityError, ParityFailure, assert_logits_close, assert_topk_agreement, compare_topk


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


def _swap_5th_and_6th(logits: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample 0's top six classes at 10, 9, 8, 7, 6 and 6 - gap (torch); ONNX puts the 6th above the 5th by the
    same gap. Every value is a small dyadic number, exact in float32 and float64, and far above the other
    logits (standard normal), so no rounding and no sort's tie-breaking decides: only compare_topk's rule."""
    e = logits.copy()
    top6 = np.argsort(-e[0], kind="stable")[:6]
    e[0, top6] = np.float32([10.0, 9.0, 8.0, 7.0, 6.0, 6.0 - gap])
    a = e.copy()
    a[0, top6[5]] = np.float32(6.0 + gap)
    assert float(e[0, top6[4]] - e[0, top6[5]]) == gap and float(a[0, top6[5]] - e[0, top6[5]]) == 2 * gap
    return e, a


# compare_topk's rule: a swap is a near tie when the torch logits of the swapped classes differ by at most
# 2 x (atol + rtol x |largest|) ("each side may move by one tolerance"). With atol 2**-8 and rtol 0 that is 2**-7.
ATOL = 2.0 ** -8
TIE_TOLERANCE = 2 * ATOL


def test_near_tie_swap_is_reported_not_failed(logits: np.ndarray) -> None:
    gap = TIE_TOLERANCE / 4  # 2**-9: well inside the rule's tolerance
    e, a = _swap_5th_and_6th(logits, gap)
    result = assert_topk_agreement(e, a, atol=ATOL, rtol=0.0)
    assert len(result.near_ties) == 1 and result.near_ties[0]["sample"] == 0 and not result.disagreements
    tie = result.near_ties[0]
    assert tie["gap"] == gap and tie["tolerance"] == TIE_TOLERANCE and len(tie["classes"]) == 2
    assert result.topk_agreement == 0.75  # reported as a swap, not hidden
    assert result.top1_agreement == 1.0 and result.passed


def test_a_swap_beyond_the_tie_tolerance_is_a_real_disagreement(logits: np.ndarray) -> None:
    gap = 2 * TIE_TOLERANCE  # 2**-6: twice the rule's tolerance
    e, a = _swap_5th_and_6th(logits, gap)
    result = compare_topk(e, a, atol=ATOL, rtol=0.0)
    assert not result.passed and not result.near_ties and len(result.disagreements) == 1
    d = result.disagreements[0]
    assert d["sample"] == 0 and d["gap"] == gap and d["tolerance"] == TIE_TOLERANCE
    with pytest.raises(ParityFailure, match="Top-5 classes disagree"):
        assert_topk_agreement(e, a, atol=ATOL, rtol=0.0)
    # the rule's boundary is inclusive: a gap of exactly the tolerance is still a near tie
    e, a = _swap_5th_and_6th(logits, TIE_TOLERANCE)
    assert len(compare_topk(e, a, atol=ATOL, rtol=0.0).near_ties) == 1
    # with the default tolerance (2 x (5e-4 x logit RMS + 1e-4 x |logit|), about 2.2e-3 here) the same 2**-6 swap fails
    e, a = _swap_5th_and_6th(logits, gap)
    default = compare_topk(e, a)
    assert default.disagreements and default.disagreements[0]["tolerance"] < gap


def test_min_agreement_allows_a_share(logits: np.ndarray) -> None:
    bad = logits.copy()
    bad[0] = -bad[0]
    assert compare_topk(logits, bad, min_agreement=0.75).passed
    assert not compare_topk(logits, bad, min_agreement=0.8).passed


def test_topk_message_names_the_k_that_failed() -> None:
    """A 3-class head, k=5 asked: the top-3 sets agree on every sample, top-1 does not on one. The message
    must name top-1 as what failed (not "top-3 agreement 100.0% ... at least 100.0% required") and say
    that the head's 3 classes cut k from 5 to 3."""
    e = np.float32([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    a = e.copy()
    a[0] = [2.0, 3.0, 1.0]  # sample 0: classes 0 and 1 swap places, a gap of 1.0: far beyond any tolerance
    result = compare_topk(e, a, k=5)
    assert not result.passed and result.k == 3 and result.requested_k == 5
    text = result.message()
    first, _, head = text.split("\n")[:3]
    assert first == "Top-1 classes disagree! (the top-3 sets agree on every sample)"
    assert head.startswith("2 of 3 samples (66.7%) agree on top-1 and on the top-3 set; at least 100.0% required: "
                           "top-1 agreement 66.7%, top-3 set agreement 100.0%")
    assert "the head has 3 classes, so top-5 is top-3" in text
    assert "sample 0: torch top-1 [0] vs ONNX [1]" in text


def test_topk_message_names_k_when_the_set_differs(logits: np.ndarray) -> None:
    bad = logits.copy()
    order = np.argsort(-logits[0])
    bad[0, order[0]] = logits[0, order[10]]
    text = compare_topk(logits, bad).message()
    assert text.split("\n")[0] == "Top-5 classes disagree!"
    assert "at least 100.0% required: top-1 agreement 75.0%, top-5 set agreement 75.0%" in text
