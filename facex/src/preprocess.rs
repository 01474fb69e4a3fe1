//! The official preprocessing: crop with margin, PIL's bicubic resize, ImageNet normalisation.
