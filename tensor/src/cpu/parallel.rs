//! How the elementwise loops split work over the rayon pool.

use rayon::prelude::*;

/// Element counts above this run on the rayon pool.
pub const PAR_MIN: usize = 1 << 16;
/// Work unit for parallel elementwise loops (elements).
pub const PAR_CHUNK: usize = 1 << 14;

/// `out[i] = f(src[i])` over slices of equal length, in parallel chunks when large.
pub fn map_slice<S: Copy + Sync, T: Send>(src: &[S], out: &mut [T], f: impl Fn(S) -> T + Sync) {
    debug_assert_eq!(src.len(), out.len());
    if src.len() < PAR_MIN {
        for (o, &s) in out.iter_mut().zip(src) {
            *o = f(s);
        }
    } else {
        out.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = f(s);
            }
        });
    }
}
