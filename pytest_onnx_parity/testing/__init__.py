"""What downstream test suites import: planted faults (here), Hypothesis strategies
(:mod:`.strategies`), real ImageNet weights that work offline (:mod:`.realweights`).
"""
from .faults import scale_layer_weights

__all__ = ["scale_layer_weights"]
