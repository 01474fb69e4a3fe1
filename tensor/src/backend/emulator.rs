//! The emulator backend: the `kernels` crate's bodies run under its thread-grid emulator on host
//! memory. (Being written.)
