//! Filling polygons into an image and its class mask at once, so the two never disagree.
//! A pixel belongs to a shape when its centre (integer coordinates) is inside.

pub type P2 = [f64; 2];

/// An RGB image and its class mask, row-major.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, rgb: vec![0; w * h * 3], mask: vec![0; w * h] }
    }

    /// Fill a polygon (even-odd rule): each pixel inside gets `colour(x, y, old)` and, when
    /// given, the class.
    pub fn fill(&mut self, poly: &[P2], class: Option<u8>, mut colour: impl FnMut(usize, usize, [u8; 3]) -> [u8; 3]) {
        if poly.len() < 3 {
            return;
        }
        let y_lo = poly.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min).ceil().max(0.0) as usize;
        let y_hi = poly.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max).floor().min(self.h as f64 - 1.0);
        if !y_hi.is_finite() || y_hi < 0.0 {
            return;
        }
        let mut xs: Vec<f64> = Vec::with_capacity(8);
        for y in y_lo..=y_hi as usize {
            let yc = y as f64;
            xs.clear();
            for (i, a) in poly.iter().enumerate() {
                let b = poly[(i + 1) % poly.len()];
                // Half-open in y so a vertex on the scanline counts once.
                if (a[1] <= yc) != (b[1] <= yc) {
                    xs.push(a[0] + (yc - a[1]) / (b[1] - a[1]) * (b[0] - a[0]));
                }
            }
            xs.sort_by(|a, b| a.total_cmp(b));
            for pair in xs.as_chunks::<2>().0 {
                let x0 = pair[0].ceil().max(0.0) as usize;
                let x1 = pair[1].floor().min(self.w as f64 - 1.0);
                if x1 < 0.0 {
                    continue;
                }
                for x in x0..=x1 as usize {
                    let i = y * self.w + x;
                    let old = [self.rgb[3 * i], self.rgb[3 * i + 1], self.rgb[3 * i + 2]];
                    self.rgb[3 * i..3 * i + 3].copy_from_slice(&colour(x, y, old));
                    if let Some(c) = class {
                        self.mask[i] = c;
                    }
                }
            }
        }
    }

    /// A thick polyline: one quad per segment and a disc at each joint.
    pub fn stroke(&mut self, line: &[P2], width: f64, class: Option<u8>, colour: [u8; 3]) {
        let r = width / 2.0;
        for seg in line.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len = (dx * dx + dy * dy).sqrt().max(1e-9);
            let (nx, ny) = (-dy / len * r, dx / len * r);
            let quad = [[a[0] + nx, a[1] + ny], [b[0] + nx, b[1] + ny], [b[0] - nx, b[1] - ny], [a[0] - nx, a[1] - ny]];
            self.fill(&quad, class, |_, _, _| colour);
        }
        for p in line {
            self.fill(&ellipse(*p, r, r, 0.0, 12), class, |_, _, _| colour);
        }
    }
}

/// A polygon of `n` points on an ellipse with radii `(rx, ry)` turned by `angle`.
pub fn ellipse(c: P2, rx: f64, ry: f64, angle: f64, n: usize) -> Vec<P2> {
    let (s, co) = angle.sin_cos();
    (0..n)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / n as f64;
            let (x, y) = (rx * t.cos(), ry * t.sin());
            [c[0] + co * x - s * y, c[1] + s * x + co * y]
        })
        .collect()
}

/// The convex hull (Andrew's monotone chain), counter-clockwise, no repeated end point.
pub fn convex_hull(points: &[P2]) -> Vec<P2> {
    let mut pts: Vec<P2> = points.iter().copied().filter(|p| p[0].is_finite() && p[1].is_finite()).collect();
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: P2, a: P2, b: P2| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let mut hull: Vec<P2> = Vec::with_capacity(2 * pts.len());
    for &p in &pts {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    // The upper chain, from the second-rightmost point back to the leftmost.
    let lower = hull.len() + 1;
    for &p in pts.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}
