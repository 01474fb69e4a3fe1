//! The kernel descriptions (`kernels::abi`) against the committed PTX: the same entry points, each
//! with parameters of the same sizes in the same order. The host launches with these descriptions,
//! so a PTX left stale after a signature change fails here, without a GPU.

use kernels::abi::ENTRIES;
use std::collections::BTreeMap;

/// Entry name -> the byte size of each `.param`, parsed from the PTX text.
fn ptx_entries(ptx: &str) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix(".visible .entry ").and_then(|r| r.strip_suffix('(')) else { continue };
        let mut sizes = vec![];
        for p in lines.by_ref().map(str::trim).take_while(|l| !l.starts_with(')')) {
            // `.param .u64 .ptr .align 1 x_param_0,`, `.param .u32 x_param_2,` or
            // `.param .align 8 .b8 x_param_7[64]` (a struct by value).
            let size = match p.split_once('[') {
                Some((_, n)) => n.trim_end_matches([']', ',']).parse().expect("array size"),
                None if p.contains(".u64") || p.contains(".b64") || p.contains(".f64") => 8,
                None if p.contains(".u32") || p.contains(".b32") || p.contains(".f32") => 4,
                None => panic!("unexpected parameter `{p}` of {name}"),
            };
            sizes.push(size);
        }
        out.insert(name.to_string(), sizes);
    }
    out
}

#[test]
fn descriptions_match_the_committed_ptx() {
    let ptx = ptx_entries(kernels::PTX);
    let described: BTreeMap<String, Vec<usize>> =
        ENTRIES.iter().map(|e| (e.name.to_string(), e.param_sizes.to_vec())).collect();
    assert_eq!(ENTRIES.len(), described.len(), "an entry point is described twice");
    assert_eq!(ptx, described, "kernels::abi and kernels/ptx/kernels.ptx disagree: run scripts/ptx.sh");
}

#[test]
fn params_point_at_the_fields_in_order() {
    use kernels::abi::{Args, Permute};
    use kernels::permute::PermuteShape;
    let s = PermuteShape { rank: 2, out_dims: [3, 4, 1, 1, 1, 1], in_strides: [1, 3, 0, 0, 0, 0] };
    let (x, out) = (std::ptr::without_provenance(16), std::ptr::without_provenance_mut(32));
    let k = Permute::<f32> { x, out, n: 12, s };
    let p = k.params();
    unsafe {
        assert_eq!(*(p[0] as *const usize), 16);
        assert_eq!(*(p[1] as *const usize), 32);
        assert_eq!(*(p[2] as *const u32), 12);
        assert_eq!((*(p[3] as *const PermuteShape)).out_dims, [3, 4, 1, 1, 1, 1]);
    }
    assert!(p[4].is_null());
}
