//! Shared test numerics: f64 references (erf, erfc, GELU and its derivative) and tolerance
//! checks, used by this crate's unit tests and, through the `testing` feature, by the tests of
//! the crates above (autograd's dev-dependency turns it on). Not part of the product API: it is
//! compiled only for tests, so it can never be called by accident from model code, and it costs
//! the normal build nothing.

#[cfg(test)]
pub mod inputs;

const ERF_TAYLOR_TERMS: usize = 33;

/// Maclaurin coefficients of erf(z)/z as a polynomial in z^2: 2/sqrt(pi) (-1)^n / (n! (2n+1)).
const ERF_TAYLOR: [f64; ERF_TAYLOR_TERMS] = {
    let mut c = [0.0; ERF_TAYLOR_TERMS];
    let mut fact = 1.0f64;
    let mut n = 0;
    while n < ERF_TAYLOR_TERMS {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = sign * std::f64::consts::FRAC_2_SQRT_PI / (fact * (2 * n + 1) as f64);
        n += 1;
    }
    c
};

/// erf by its Maclaurin series; accurate to ~1e-15 for |z| <= 2 (the cancellation is mild there).
fn erf_series(z: f64) -> f64 {
    let z2 = z * z;
    let mut s = 0.0;
    for &c in ERF_TAYLOR.iter().rev() {
        s = s * z2 + c;
    }
    s * z
}

/// erfc for z >= 2 by Laplace's continued fraction, evaluated bottom-up with a fixed depth
/// (30 levels give ~5e-12 relative at z = 2 and better beyond).
fn erfc_cf(z: f64) -> f64 {
    let mut t = z;
    for k in (1..=30).rev() {
        t = z + (k as f64 * 0.5) / t;
    }
    (-z * z).exp() / (std::f64::consts::PI.sqrt() * t)
}

/// The error function in f64, relative error ~1e-13 (far below one f32 ulp).
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    if a < 2.0 {
        erf_series(x)
    } else if a.is_nan() {
        x
    } else {
        (1.0 - erfc_cf(a)).copysign(x)
    }
}

/// The complementary error function in f64, accurate in relative terms also in the far tail.
pub fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x >= 2.0 {
        erfc_cf(x)
    } else if x > -2.0 {
        1.0 - erf_series(x)
    } else {
        2.0 - erfc_cf(-x)
    }
}

/// Phi(x), the standard normal CDF, accurate in relative terms on both sides.
pub fn normal_cdf_f64(x: f64) -> f64 {
    0.5 * erfc_f64(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Exact GELU x Phi(x) = x (1 + erf(x / sqrt 2)) / 2; gelu(-inf) = -0.
pub fn gelu_f64(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        -0.0
    } else {
        x * normal_cdf_f64(x)
    }
}

/// d gelu / dx = Phi(x) + x phi(x); 1 at +inf, 0 at -inf.
pub fn gelu_grad_f64(x: f64) -> f64 {
    if x.is_infinite() {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    normal_cdf_f64(x) + x * pdf
}

/// Elementwise |got - want| <= atol + rtol |want| (NaN matches NaN), naming the first failure.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// integral of 2/sqrt(pi) exp(-t^2) over [a, b] by composite Simpson: an independent check.
    fn simpson(a: f64, b: f64) -> f64 {
        let n = 20_000;
        let h = (b - a) / n as f64;
        let g = |t: f64| (-t * t).exp();
        let mut s = g(a) + g(b);
        for i in 1..n {
            s += g(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI
    }

    #[test]
    fn erf_matches_quadrature() {
        for i in -60..=60 {
            let x = i as f64 * 0.1 + 0.013;
            let (got, want) = (erf_f64(x), simpson(0.0, x));
            assert!((got - want).abs() <= 1e-13 * want.abs().max(1e-3), "erf({x}) = {got}, want {want}");
        }
        // erfc tail against the asymptotic series 1/(x sqrt(pi)) exp(-x^2) (1 - 1/(2x^2) + 3/(4x^4) - ...).
        for &x in &[6.0f64, 8.0, 10.0] {
            let y = 1.0 / (2.0 * x * x);
            let series = 1.0 - y + 3.0 * y * y - 15.0 * y * y * y + 105.0 * y.powi(4);
            let want = (-x * x).exp() / (x * std::f64::consts::PI.sqrt()) * series;
            assert!((erfc_f64(x) - want).abs() <= 1e-6 * want, "erfc({x})");
            assert!((erfc_f64(-x) - (2.0 - want)).abs() < 1e-15);
        }
        assert_eq!(erf_f64(0.0), 0.0);
        assert!(erf_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
    }

    #[test]
    fn gelu_and_its_derivative_known_values() {
        // x Phi(x) from an independently integrated erfc.
        for &x in &[-6.0f64, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.0, 4.0] {
            let z = x / 2f64.sqrt();
            let want = 0.5 * x * if x >= 0.0 { 2.0 - simpson(z, z + 6.0) } else { simpson(-z, -z + 6.0) };
            let got = gelu_f64(x);
            assert!((got - want).abs() <= 1e-10 * want.abs().max(1e-9), "gelu({x}) = {got}, want {want}");
            // The derivative against a central difference of the f64 GELU.
            let h = 1e-5;
            let fd = (gelu_f64(x + h) - gelu_f64(x - h)) / (2.0 * h);
            assert!((gelu_grad_f64(x) - fd).abs() < 1e-8, "gelu'({x})");
        }
        assert_eq!(gelu_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!((gelu_grad_f64(f64::INFINITY), gelu_grad_f64(f64::NEG_INFINITY)), (1.0, 0.0));
    }
}
