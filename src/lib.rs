//! facex-suite: helpers shared by the workspace-level integration tests (`tests/`) and
//! benchmarks (`benches/`). The product itself is in the member crates.

/// Relative error ||a-b|| / ||b|| in f64.
pub fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_error: lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE)
}
