"""Every tolerance of the package, and the one rule for giving them: in one place.

A tolerance is a :class:`Tolerance` (atol, rtol, where it came from); :func:`logits_tolerance` (outputs: given,
a precision's profile, the dtype's default, end to end) and :func:`layer_tolerance` (per layer) are the only
ways to get one. An element passes when ``|actual - expected| <= atol + rtol * |expected|``.
``atol`` and ``rtol`` are given together or not at all (as in
``torch.testing.assert_close``): one without the other silently changes what the
default meant.

Logits: the defaults scale with the logits, ``atol = factor * rms(expected)``;
for float32 ``rtol = 1e-4`` and ``factor = 5e-4``. The evidence, measured by
``benchmarks/tolerances.py`` and written by it to docs/tolerances.md: clean
exports of 14 timm architectures, both exporters, differ from torch by at most
~8e-5 of the logits' RMS; 1.5x errors planted in single layers move the logits
by far more.

Layers: a layer fails when its own error (its ONNX nodes on torch's values at its inputs)
exceeds ``atol + rtol * rms(activation)``; without one, when its end-to-end max abs diff
exceeds ``atol + rms(activation) * max(rtol, growth * upstream_rel)`` (docs/layers.md).
float16 and int8 files have their own ``layer_rtol``/``layer_atol`` (:data:`PRECISION_PROFILES`).

The reproducer script of a bundle (``reproduce.py``) reads the logits
tolerances that :mod:`pytest_onnx_parity.report.bundle` writes from here into its
``bundle.json``; it has no defaults of its own.

This module imports nothing of the package but :mod:`.errors`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import SpecError

#: dtype of the expected logits -> (rtol, atol factor times the RMS of the expected logits)
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-4, 5e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}

#: What to change to move a logits verdict.
TOLERANCE_HINT = "--onnx-parity-atol/--onnx-parity-rtol (or atol=/rtol= given together)"

#: End-to-end logits (real photos, both preprocessing paths): ``preprocess`` matches timm's
#: transform to ~1e-6 in normalised units (float32 rounding); 2e-3 of the logit RMS leaves
#: room for that, while a wrong mean/std/crop/interpolation moves logits by 5% to 100% of their RMS.
E2E_ATOL_FACTOR = 2e-3
E2E_RTOL = 2e-3

#: Per-layer relative tolerance (float32). Evidence: docs/layers.md.
LAYER_RTOL = 1e-3
#: Absolute floor of the per-layer tolerance, for layers whose activations are ~0.
LAYER_ATOL = 1e-5
#: A layer may carry up to this many times the relative error of the layers feeding it.
LAYER_GROWTH = 10.0

#: Input perturbation (relative to the batch's largest magnitude) of the "is torch
#: itself this sensitive?" probe: a model whose logits move by more than the
#: tolerance for such a change is ill-conditioned, and no verdict can blame the export.
SENSITIVITY_EPS = 1e-6

#: Float64 arbitration (see :mod:`.conditioning`): an export is blamed only when ONNX Runtime's
#: error against torch float64 is more than this many times torch float32's own error there.
ARBITRATION_FACTOR = 10.0


def check_pair(atol: Any, rtol: Any, *, where: str = "", defaults: str = "") -> tuple[float, float] | None:
    """Validate a user's tolerance pair: ``None`` when neither is given, else ``(atol, rtol)``.

    Raises :class:`SpecError` when only one is given, or when either is negative or NaN.
    ``where`` names the source (an option, a marker keyword) in the message;
    ``defaults`` says what applies when neither is given.
    """
    prefix = f"{where}: " if where else ""
    if (atol is None) != (rtol is None):
        tail = f"; without both the defaults apply ({defaults})" if defaults else (
            ": one without the other silently changes what the default meant")
        raise SpecError(f"{prefix}give atol and rtol together or not at all (got atol={atol!r}, rtol={rtol!r}){tail}")
    if atol is None:
        return None
    try:
        a, r = float(atol), float(rtol)
    except (TypeError, ValueError):
        raise SpecError(f"{prefix}tolerances must be numbers, got atol={atol!r}, rtol={rtol!r}") from None
    if not (a >= 0 and r >= 0) or math.isinf(a) or math.isinf(r):
        raise SpecError(f"{prefix}tolerances must be finite non-negative numbers, got atol={atol!r}, rtol={rtol!r}")
    return a, r


def default_logit_tolerance(dtype: str) -> tuple[float, float]:
    """``(rtol, atol factor)`` for logits of that dtype (float32's for unknown dtypes)."""
    return DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float32"])


def logit_rms(expected: Any) -> float:
    """RMS of the finite values of ``expected``: the scale every logits tolerance is a fraction of."""
    import numpy as np

    e = np.asarray(expected, dtype=np.float64)
    finite = e[np.isfinite(e)]
    return float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0


@dataclass(frozen=True)
class Tolerance:
    """One element-wise tolerance: ``|actual - expected| <= atol + rtol * |expected|`` (per layer, each element
    may also add ``elem_rtol`` of its own magnitude), and where it came from, as messages name it (``source``).
    :func:`logits_tolerance` and :func:`layer_tolerance` are the only ways to get one."""

    atol: float
    rtol: float
    source: str = "given"
    elem_rtol: float = 0.0

    def words(self) -> str:
        """``atol=... (source), rtol=...``: how a message states it."""
        return f"atol={self.atol:.3g} ({self.source}), rtol={self.rtol:.3g}"

    def layer_kwargs(self) -> dict[str, float]:
        """The keyword arguments of :func:`pytest_onnx_parity.compare_layers` that apply it."""
        return {"atol": self.atol, "rtol": self.rtol, **({"elem_rtol": self.elem_rtol} if self.elem_rtol else {})}


#: the precisions whose logits have a profile of their own (int8 is judged by agreement, fp32 by the dtype's default)
_LOGITS_PROFILES = ("fp16", "bf16")


def logits_tolerance(expected: Any, atol: Any = None, rtol: Any = None, *, precision: str = "fp32",
                     end_to_end: bool = False) -> Tolerance:
    """The one logits rule: the tolerance for comparing outputs with ``expected`` (torch's, a numpy array).

    Given values (atol and rtol together, validated by :func:`check_pair`) win. Otherwise atol is a fraction of
    the RMS of the finite values of ``expected``: an fp16 file and a runtime's declared bf16 take their
    precision's profile (:data:`PRECISION_PROFILES`, :data:`RUNTIME_PROFILES`); anything else (fp32, and an int8
    file's comparison with itself) :data:`DEFAULT_TOLERANCES` by the dtype of ``expected``. ``end_to_end``:
    real photos through both preprocessing paths, :data:`E2E_ATOL_FACTOR` and :data:`E2E_RTOL`, widened to the
    precision's profile where that is wider.
    """
    pair = check_pair(atol, rtol)
    if pair is not None:
        return Tolerance(pair[0], pair[1], "given")
    scale = logit_rms(expected)
    prof: PrecisionProfile | None = precision_profile(precision)  # an unknown precision: SpecError
    if prof is not None and prof.name not in _LOGITS_PROFILES:
        prof = None
    if prof is not None:
        assert prof.logits_atol_factor is not None and prof.logits_rtol is not None
        own = Tolerance(prof.logits_atol_factor * scale, prof.logits_rtol,
                        f"{prof.name} profile: {prof.logits_atol_factor:g} x logit RMS {scale:.3g}")
    if end_to_end:
        e2e = Tolerance(E2E_ATOL_FACTOR * scale, E2E_RTOL, f"end-to-end default: {E2E_ATOL_FACTOR:g} x logit RMS {scale:.3g}")
        if prof is None or own.atol <= e2e.atol:
            return e2e
        return Tolerance(own.atol, max(E2E_RTOL, own.rtol), f"{prof.name} profile (tolerances.py), logit RMS {scale:.3g}")
    if prof is not None:
        return own
    dt = str(getattr(expected, "dtype", "float32"))
    rt, factor = default_logit_tolerance(dt)
    return Tolerance(factor * scale, rt, f"default for {dt}: {factor:g} x logit RMS {scale:.3g}")


def layer_tolerance(atol: Any = None, rtol: Any = None, *, precision: str = "fp32") -> Tolerance:
    """The per-layer tolerance: given (validated, together), else the ``precision``'s profile (fp16, int8, bf16:
    its ``layer_atol``, ``layer_rtol`` and ``elem_rtol``), else the float32 defaults :data:`LAYER_ATOL`,
    :data:`LAYER_RTOL`."""
    pair = check_pair(atol, rtol, defaults=f"atol={LAYER_ATOL:g}, rtol={LAYER_RTOL:g}")
    if pair is not None:
        return Tolerance(pair[0], pair[1], "given")
    prof = precision_profile(precision)
    if prof.name == "fp32" or prof.layer_atol is None or prof.layer_rtol is None:
        return Tolerance(LAYER_ATOL, LAYER_RTOL, "float32 default")
    return Tolerance(prof.layer_atol, prof.layer_rtol, f"{prof.name} profile", prof.layer_elem_rtol)


# --------------------------------------------------------------------------- precisions

@dataclass(frozen=True)
class PrecisionProfile:
    """How a file of one precision is judged against the torch float32 model.

    ``logits_rtol`` and ``logits_atol_factor`` (times the RMS of the torch logits) are the
    logits tolerance, as in :mod:`pytest_onnx_parity.compare`; ``layer_rtol`` and
    ``layer_atol`` the per-layer tolerance of :func:`pytest_onnx_parity.layers.compare_layers`
    (``None``: its float32 defaults). ``verdict`` names the check that decides:
    ``"logits"`` (element-wise tolerance) or ``"agreement"`` (int8: top-1 agreement and
    accuracy drop on real images, :func:`pytest_onnx_parity.checks.int8.int8_verdict`).
    """

    name: str
    logits_rtol: float | None
    logits_atol_factor: float | None
    layer_rtol: float | None
    layer_atol: float | None
    verdict: str
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None  # percentage points
    evidence: str = ""
    layer_elem_rtol: float = 0.0
    """Per layer, the share of each element's own magnitude its own error may add (rounding scales with
    the value: a float16 element of 300 is stored to within 0.125, one of 0.3 to within 1.2e-4)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _profiles() -> dict[str, PrecisionProfile]:
    rtol32, factor32 = DEFAULT_TOLERANCES["float32"]
    return {
        "fp32": PrecisionProfile("fp32", rtol32, factor32, None, None, "logits",
                                 evidence="docs/tolerances.md (benchmarks/tolerances.py)"),
        # float16 keeps ~11 bits: clean errors of 2e-3..6e-2 of the logit RMS on 12 architectures with random
        # weights (the top from ill-conditioned resnet50; benchmarks/precision_tolerances.py, docs/tolerances.md,
        # fp16 section). 0.15 sits ~2.7x above the largest. A 5% single-layer fault moves the logits by 2e-3..0.2:
        # most stay inside fp16 rounding, so this bound catches gross errors (overflow, broken conversion) and the
        # per-layer check catches the rest by each module's own error, element by element: |own - torch| <= 1e-4 +
        # 1.2e-2 x RMS + 2e-3 x |torch| (2e-3: four float16 steps of the element's own magnitude, so a heavy tail of
        # large elements, as squeeze-excitation gates make, keeps the room its rounding needs): clean float16 modules
        # need at most ~4e-3 x RMS beyond it, 5% faults reach 4e-2 x RMS at least (docs/tolerances.md, own-error).
        "fp16": PrecisionProfile("fp16", 1e-2, 0.15, 1.2e-2, 1e-4, "logits",
                                 evidence="docs/tolerances.md#fp16 (benchmarks/precision_tolerances.py)",
                                 layer_elem_rtol=2e-3),
        # int8 moves logits by ~100% of their RMS even when it classifies well: the element-wise tolerance means
        # nothing, classification on real images decides. Real Lite0 weights, 48 labelled views (docs/precision.md,
        # benchmarks/int8_lite0.py): a good file agreed 95.8% (accuracy +4.2 pp), per-tensor and broken files
        # agreed <= 72.9% and lost 16.7-64.6 pp; the thresholds sit between with ~10 pp margin each side.
        # per layer, each module's own error (teacher forced: its int8 nodes on torch's float values at its inputs,
        # its output's quantisation included): on real Lite0 weights a good per-channel file reaches ~0.75 x RMS in
        # its worst module, a per-tensor file 1.2-2.2 x RMS in the depthwise convs that per-tensor scales ruin
        # (benchmarks/int8_lite0.py, docs/precision.md); the modules beyond 1 x RMS are the nodes_to_exclude list.
        "int8": PrecisionProfile("int8", None, None, 1.0, 1e-3, "agreement",
                                 min_top1_agreement=0.85, max_accuracy_drop=10.0,
                                 evidence="docs/precision.md (benchmarks/int8_lite0.py)"),
    }


#: The one place the per-precision tolerances live.
PRECISION_PROFILES: Mapping[str, PrecisionProfile] = _profiles()

#: Precisions a runtime computes in that no file is stored in (not in ``axes.PRECISIONS``): bf16, OpenVINO's CPU
#: default on a CPU with AVX512_BF16 or AMX, judged by this profile only when the user declares it
#: (``openvino(INFERENCE_PRECISION_HINT=bf16)``; checks/runtime_precision.py). bfloat16 keeps 8 significant bits,
#: 3 fewer than float16: clean errors of 1.6e-2..0.17 of the logit RMS on 4 architectures with random weights (the
#: top from efficientnet_b0; benchmarks/bf16_tolerances.py, docs/tolerances.md, bf16 section); 0.5 sits ~3x above
#: the largest, room for the ill-conditioned models fp16 measured 4-5x worse than these. As in fp16, 5% single-layer
#: faults move the logits less than bf16 rounding does (1.5e-2..0.16): the per-layer check judges each module's own
#: error, element by element, with 1.6e-2 of its own magnitude (four bf16 rounding steps, as fp16's 2e-3 is four
#: float16 ones): clean modules reach 3.4e-2 x RMS beyond it, and 6e-2 sits 1.7x above; a 5% fault's own error is
#: 4.1e-2..0.41 x RMS, and 13 of 16 are named; the weakest (a 5% change is at bf16's own rounding) pass.
RUNTIME_PROFILES: Mapping[str, PrecisionProfile] = {
    "bf16": PrecisionProfile("bf16", 5e-2, 0.5, 6e-2, 1e-3, "logits",
                             evidence="docs/tolerances.md#bf16-openvino (benchmarks/bf16_tolerances.py)",
                             layer_elem_rtol=1.6e-2),
}


def precision_profile(precision: str) -> PrecisionProfile:
    """The profile of ``"fp32"``, ``"fp16"`` or ``"int8"`` (a file's precision) or ``"bf16"`` (a runtime's:
    :data:`RUNTIME_PROFILES`); anything else is a :class:`SpecError`."""
    name = str(precision).lower()
    found = PRECISION_PROFILES.get(name) or RUNTIME_PROFILES.get(name)
    if found is None:
        raise SpecError(f"unknown precision {precision!r}: choose one of "
                        f"{', '.join([*PRECISION_PROFILES, *RUNTIME_PROFILES])}")
    return found


# --------------------------------------------------------------------------- outputs that are not logits
# An embedding (num_classes=0, (N, D)) and features (unpooled maps, features_only lists; runtime/outputs.py) are
# compared element-wise by the logits rule above, each output with the tolerance of its own RMS (a backbone's
# stages differ in scale: a tolerance from the largest would never see a fault in the smallest).

#: an embedding: the least cosine similarity of a sample's ONNX embedding to torch's, per precision. An element-wise
#: pass at the default tolerance (atol 5e-4 x RMS, rtol 1e-4) bounds the relative error by ~6e-4, so 1 - cos by
#: ~2e-7: fp32 0.9999 (a relative error of ~1.4%) fails only what the element-wise rule fails or a loosened atol
#: would hide; fp16 (up to 0.15 x RMS element-wise): 0.98. The clean and faulty figures are measured by
#: benchmarks/output_kinds.py (docs/tolerances.md, block output-kinds).
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.98}
#: an int8 file of an embedding or features is judged by cosine alone (its elements move by ~100% of the RMS): the
#: mean over the real images of each output's per-image cosine similarity to torch's, at least this.
#: Random weights cannot tell a good int8 file from a poor one (no outlier channels), so 0.9 is a floor against
#: broken files (saturation, wrong calibration, a wrong graph), not a quality bar; not yet measured on real weights.
INT8_MIN_COSINE = 0.9
#: nearest-neighbour agreement (each sample's nearest other sample, by cosine similarity, the same under ONNX Runtime
#: as under torch) is judged over at least this many samples: over 2, each sample's only neighbour is the other
MIN_NEIGHBOUR_SAMPLES = 3


def min_cosine(precision: str) -> float:
    """The least per-sample cosine similarity of an embedding on a ``precision`` file (fp32's for any other;
    int8 files are judged by :data:`INT8_MIN_COSINE`)."""
    return MIN_COSINE.get(str(precision).lower(), MIN_COSINE["fp32"])


def neighbour_tie(precision: str) -> float:
    """The gap of torch cosine similarities under which a changed nearest neighbour is a near tie (reported,
    not failed): each embedding within the cosine threshold turns by at most ``theta = acos(min_cosine)``, so a
    similarity moves by at most ``2 theta`` and the gap between two by ``4 theta``."""
    return 4.0 * math.acos(min_cosine(precision))


#: the ``weights`` check: the fraction of weight elements that must match a file tensor for a pass
#: (conv and linear kernels hold most of them)
MIN_WEIGHT_EVIDENCE = 0.5
#: the ``weights`` check: (rtol, atol) per file dtype. Float32 folding rounds at ~1e-7 relative;
#: float16 halves at 2^-11, bfloat16 at 2^-8
WEIGHT_TOLERANCES = {"float32": (1e-4, 1e-5), "float64": (1e-4, 1e-5), "float16": (2e-3, 1e-4),
                      "bfloat16": (1e-2, 1e-3)}
#: a labelled image folder: the most ONNX top-1 accuracy may fall below torch's, in percentage points
MAX_ACCURACY_DROP_PP = 0.1

#: reproducer bundles: a divergent module's ONNX subgraph of more nodes than this (a whole block or stage)
#: is reduced further, by bisection then a linear pass, to the smallest node range that still diverges
#: (layers/reduce.py); one block of the Done-when cases of issue 20 has at most this many
REDUCE_ABOVE_NODES = 8
#: the linear pass of that reduction tries at most this many node ranges on each side
REDUCE_LINEAR_STEPS = 64

# --------------------------------------------------------------------------- goldens (checks/golden.py)
#: A side of a run (torch's outputs, or ONNX Runtime's on the file) reproduces its golden when every kept value is
#: within ``atol factor x RMS(golden output) + rtol x |golden|``, each output with its own RMS; ``(atol factor, rtol)``:
#: a golden recorded here (this CPU and core count, this run's versions of python, torch, timm, onnx, onnxscript and
#: onnxruntime, and torch's thread count) is reproduced bit for bit (benchmarks/golden_noise.py writes the figures
#: into docs/ci.md), so 1e-6 is rounding room only, and a weight scaled by 1.001 in a ViT (LayerNorm absorbs most
#: of it) still shows.
GOLDEN_SAME_MACHINE = (1e-6, 1e-6)
#: a golden recorded elsewhere: another torch thread count (random weights' BatchNorm calibration sums in another
#: order: measured up to ~1e-5 x RMS, docs/ci.md), versions or CPU (other kernels; clean torch-against-ONNX-Runtime
#: errors reach 5.9e-5 x RMS, docs/tolerances.md). 1e-4 is 5x below the logits default, while a changed layer (one
#: block's output x1.01) moves the outputs by far more.
GOLDEN_OTHER_MACHINE = (1e-4, 1e-5)


def golden_tolerance(same_machine: bool) -> tuple[float, float]:
    """``(atol factor, rtol)`` of the golden check: :data:`GOLDEN_SAME_MACHINE` or :data:`GOLDEN_OTHER_MACHINE`."""
    return GOLDEN_SAME_MACHINE if same_machine else GOLDEN_OTHER_MACHINE


# --------------------------------------------------------------------------- fp16 headroom (checks/headroom.py)
#: float16's largest finite value and its smallest normal (2**-14): above the one a value is Inf, below the
#: other it is subnormal and keeps fewer significant bits, which matters for what a normalisation divides by
#: (a variance, a mean square) more than for an activation.
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
#: A module is named "within the factor of overflow" when its largest magnitude reaches FP16_MAX / this.
#: 16 (four binades) because the magnitudes are maxima over a handful of inputs (four photos and a random
#: sample), which understate what a deployment's outliers reach, and because the quantities that overflow
#: first are squares (a LayerNorm's squared deviation): an input 4x more extreme than any measured one
#: squares to 16x. A value of 4096 in float16 also keeps only steps of 4, so nothing above the bound is
#: comfortably represented anyway.
FP16_HEADROOM_FACTOR = 16.0


# --------------------------------------------------------------------------- deployment preprocessing (checks/preprocessing.py)
#: A deployment's tensor value within this many 8-bit levels (``diff * std * 255``, the model's std) of timm's counts
#: as equal: one level is the rounding two correct resize implementations differ by (Pillow's fixed-point filters
#: against a float one, another JPEG decoder's IDCT).
PREPROCESS_LEVEL_TOLERANCE = 1.0
#: The tensors are equal when at most this share of the values are off by more than PREPROCESS_LEVEL_TOLERANCE
#: (0.1%: a few edge pixels of a float resize); above it the diagnosis runs.
PREPROCESS_MAX_SHARE_OFF = 1e-3
#: A library difference (resize kernel, antialiasing, resize library, colour profile, EXIF) or an unexplained one
#: fails when its effect through the file (the logits of your tensors against timm's, both through the same file)
#: exceeds this fraction of the logit RMS: 0.1 is 50x the end-to-end tolerance (E2E_ATOL_FACTOR), the size of a
#: difference that moves close top-5 rankings.
PREPROCESS_MAX_LOGIT_EFFECT = 0.1
#: ... or when fewer photos than this share keep timm's top-1 class through the file.
PREPROCESS_MIN_TOP1_AGREEMENT = 1.0
#: A command: preprocessor (--onnx-parity-preprocess command:CMD) is stopped after this many seconds per batch.
PREPROCESS_COMMAND_TIMEOUT_S = 300.0
