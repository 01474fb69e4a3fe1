//! The strided gather under the emulator vs index arithmetic in the test: random ranks, dims,
//! permutations and padded (non-contiguous) inputs, and the model's three uses.

mod common;
use common::*;
use kernels::permute::{self, PermuteShape, MAX_RANK};
use kernels::{Bf16, Elem};
use proptest::prelude::*;

/// Input dims `dims` stored with `pad[d]` extra elements along each dim (a strided view of a
/// larger buffer); returns the permuted output the kernel writes and the reference.
fn check<E: Elem>(dims: &[usize], pad: &[usize], perm: &[usize], seed: u64, what: &str) {
    let rank = dims.len();
    // Row-major strides of the padded buffer.
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * (dims[d + 1] + pad[d + 1]);
    }
    let len = if rank == 0 { 1 } else { strides[0] * (dims[0] + pad[0]) };
    let x: Vec<E> = rand_vec(len, seed).iter().map(|&v| E::from_f32(v)).collect();
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let n: usize = out_dims.iter().product();

    // Reference: walk the output in row-major order with a multi-index.
    let mut want = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let off: usize = (0..rank).map(|i| idx[i] * strides[perm[i]]).sum();
        want.push(x[off].to_f32() as f64);
        for i in (0..rank).rev() {
            idx[i] += 1;
            if idx[i] < out_dims[i] {
                break;
            }
            idx[i] = 0;
        }
    }

    let mut s = PermuteShape { rank: rank as u32, out_dims: [0; MAX_RANK], in_strides: [0; MAX_RANK] };
    for i in 0..rank {
        s.out_dims[i] = out_dims[i] as u32;
        s.in_strides[i] = strides[perm[i]] as u32;
    }
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); n];
        // A small grid so the grid-stride loop runs several rounds.
        let mut cfg = permute::config(n);
        cfg.grid.x = cfg.grid.x.min(2);
        let (px, po) = (x.as_ptr(), out.as_mut_ptr());
        unsafe { run(cfg, order, |c| permute::permute(c, px, po, n as u32, &s)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        // A gather copies bits: exact.
        assert_close(&got, &want, 0.0, 0.0, &format!("{what} dims {dims:?} pad {pad:?} perm {perm:?} {order:?}"));
    });
}

#[test]
fn nchw_to_nhwc_and_back() {
    check::<f32>(&[2, 3, 5, 7], &[0; 4], &[0, 2, 3, 1], 1, "NCHW->NHWC");
    check::<Bf16>(&[2, 5, 7, 3], &[0; 4], &[0, 3, 1, 2], 2, "NHWC->NCHW");
}

#[test]
fn head_split_qkv() {
    // [B, N, 3, H, D] -> [3, B, H, N, D]
    check::<f32>(&[2, 9, 3, 2, 8], &[0; 5], &[2, 0, 3, 1, 4], 3, "head split");
    check::<Bf16>(&[1, 18, 3, 3, 4], &[0; 5], &[2, 0, 3, 1, 4], 4, "head split");
}

#[test]
fn patch_embedding_im2col() {
    // [B, 3, h, 4, w, 4] -> [B, h, w, 3, 4, 4] (h = w = 56 in the model).
    check::<f32>(&[2, 3, 5, 4, 3, 4], &[0; 6], &[0, 2, 4, 1, 3, 5], 5, "im2col");
    check::<Bf16>(&[1, 3, 3, 4, 6, 4], &[0; 6], &[0, 2, 4, 1, 3, 5], 6, "im2col");
}

#[test]
fn rank_zero_and_one() {
    check::<f32>(&[], &[], &[], 7, "scalar");
    check::<f32>(&[1], &[0], &[0], 8, "one element");
    check::<f32>(&[300], &[0], &[0], 9, "copy");
}

/// A random permutation of `0..r` drawn from `keys`.
fn perm_from(keys: &[u32], r: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..r).collect();
    p.sort_by_key(|&i| keys[i]);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_permutations(dims in prop::collection::vec(1usize..5, 1..=MAX_RANK),
                           pads in prop::collection::vec(0usize..3, MAX_RANK),
                           keys in prop::collection::vec(any::<u32>(), MAX_RANK),
                           padded: bool, bf16: bool, seed: u64) {
        let r = dims.len();
        let pad: Vec<usize> = if padded { pads[..r].to_vec() } else { vec![0; r] };
        let perm = perm_from(&keys, r);
        if bf16 {
            check::<Bf16>(&dims, &pad, &perm, seed, "bf16");
        } else {
            check::<f32>(&dims, &pad, &perm, seed, "f32");
        }
    }
}
