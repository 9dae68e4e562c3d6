"""timm's eval preprocessing without torch: data configs, the transform, photos and image folders."""
