//! One conformance harness for every backend: each op on random inputs, compared with
//! [`super::reference::Reference`]. (Being written.)
