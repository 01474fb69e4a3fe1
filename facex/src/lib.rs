//! facex
