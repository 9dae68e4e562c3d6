"""Errors the package raises on purpose. All derive from :class:`OnnxParityError`.

Each message names the fix, so the gate can show it as it is, without a traceback.
"""
from __future__ import annotations


class OnnxParityError(Exception):
    """Base class of every error pytest-onnx-parity raises on purpose."""


class UnknownModelError(OnnxParityError, ValueError):
    """A model name that timm does not know."""


class SpecError(OnnxParityError, ValueError):
    """A model spec or option value that cannot be parsed."""


class WeightsError(OnnxParityError):
    """Weights that cannot be loaded: missing file, unreadable checkpoint, no network."""


class ExportError(OnnxParityError):
    """torch.onnx.export failed; the message carries the exporter's own reason."""


class MissingMetadataError(OnnxParityError, KeyError):
    """An ONNX file without the data-config metadata this plugin writes."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OnnxFileError(OnnxParityError):
    """A file that is missing, unreadable or not a valid ONNX model."""


class ImageError(OnnxParityError):
    """Images that cannot be read: an empty folder, corrupt or unsupported files."""


class ParityFailure(OnnxParityError, AssertionError):
    """A parity assertion failed: torch and ONNX Runtime disagree."""


class InconclusiveResult(OnnxParityError):
    """The numbers cannot support a verdict (an ill-conditioned model, NaN on the torch side,
    nothing compared): neither a pass nor a failure of the export."""


class VariantSkip(OnnxParityError):
    """This variant cannot be checked here (a provider this build lacks, a size the model cannot take).

    The gate reports it as a skipped item with this message as the reason.
    """


class GoldenError(OnnxParityError):
    """A golden reference (``--onnx-parity-golden``) that cannot be read or written; the message names the file."""


class PreprocessError(OnnxParityError):
    """A deployment's own preprocessing (``--onnx-parity-preprocess``) that failed or gave an array the file cannot
    take (a failing command, a missing saved tensor, a wrong shape or dtype); the message names the fix."""
