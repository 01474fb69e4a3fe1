//! `FastDiv` against the `/` and `%` operators: every divisor up to 3000 at the numerators where
//! a rounding error would first show (multiples of d and their neighbours, the top of the range),
//! and random divisors and numerators below 2^31.

use kernels::fastdiv::FastDiv;
use proptest::prelude::*;

fn check(d: u32, n: u32) {
    let f = FastDiv::new(d);
    assert_eq!(f.divmod(n), (n / d, n % d), "{n} / {d}");
}

#[test]
fn small_divisors_at_their_edges() {
    let top = (1u32 << 31) - 1;
    for d in 1..=3000u32 {
        for q in [0u32, 1, 2, 3, 1000, top / d - 1, top / d] {
            let base = q.saturating_mul(d);
            for n in [base.saturating_sub(1), base, base + 1, base + d - 1] {
                if n <= top {
                    check(d, n);
                }
            }
        }
        check(d, top);
    }
}

#[test]
fn powers_of_two_and_large_divisors() {
    for s in 0..32 {
        for d in [1u32 << s, (1u32 << s).wrapping_add(1).max(1), (1u32 << s) - (s > 0) as u32] {
            for n in [0u32, 1, d.wrapping_sub(1), d, d.wrapping_add(1), (1 << 31) - 1] {
                if n < 1 << 31 {
                    check(d.max(1), n);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]
    #[test]
    fn random(d in 1u32.., n in 0u32..(1 << 31)) {
        check(d, n);
    }
}
