"""The torch side: timm models built from specs, with random weights that can fail."""
