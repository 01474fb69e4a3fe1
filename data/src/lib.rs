//! Dataset readers, augmentation and loading for training (reserved).
//!
//! The layout is final; the readers (CelebAMask-HQ, LaPa, 300W, 300W-LP, CelebA, UTKFace,
//! FairFace, COFW), label-consistent augmentation and the rayon loader are not written yet.
//! Training today runs on tensors built by the caller (`facex::train`).
