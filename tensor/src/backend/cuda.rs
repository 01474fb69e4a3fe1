//! The CUDA backend: the kernels' PTX launched on an NVIDIA GPU. (Being written.)
