"""The ONNX file: export, I/O and metadata, the cache, precision variants, the preprocessing graph."""
