"""ONNX Runtime and the machine: sessions, feeding inputs, the environment a verdict depends on."""
