//! Checkpoints: the PyTorch zip/pickle reader, safetensors, and config inference from shapes.
