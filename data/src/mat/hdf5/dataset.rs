//! A dataset's raw bytes: its dataspace, datatype and layout messages, the data read from a
//! compact, contiguous or chunked (v1 B-tree index, or v4's single-chunk and fixed-array) layout, through the deflate, shuffle and
//! Fletcher-32 filters.

use super::bytes::{Cur, File, R};
use super::object::{Message, MSG_DATASPACE, MSG_DATATYPE, MSG_FILTERS, MSG_LAYOUT};

/// What one element is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Elem {
    /// Fixed-point of `size` bytes.
    Int { size: usize, signed: bool },
    /// IEEE float of 4 or 8 bytes.
    Float { size: usize },
    /// An object reference (an address of `size` bytes).
    Reference { size: usize },
    /// Fixed-length strings of `size` bytes (MATLAB's attributes).
    String { size: usize },
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::Int { size, .. } | Elem::Float { size } | Elem::Reference { size } | Elem::String { size } => size,
        }
    }
}

/// A dataset as stored: HDF5 dims (row-major, slowest first), the element type and the bytes
/// (little-endian, `product(dims) * size`).
pub(super) struct Raw {
    pub dims: Vec<usize>,
    pub elem: Elem,
    pub bytes: Vec<u8>,
}

/// Parse a datatype message (the part shared with attributes).
pub(super) fn datatype(data: &[u8]) -> R<Elem> {
    let mut c = Cur::over(data, 8, 8);
    let class_version = c.u8()?;
    let bits = c.u8()?;
    c.skip(2)?;
    let size = c.u32()? as usize;
    let class = class_version & 0x0f;
    let little = bits & 1 == 0;
    let elem = match class {
        0 => Elem::Int { size, signed: bits & 0x08 != 0 },
        1 => Elem::Float { size },
        3 => Elem::String { size },
        7 if bits & 0x0f == 0 => Elem::Reference { size },
        7 => return Err("region references are not supported (object references are)".into()),
        c => return Err(format!("datatype class {c} is not supported (fixed-point, float, string, reference are)")),
    };
    if !little && !matches!(elem, Elem::String { .. }) {
        return Err("big-endian data is not supported".into());
    }
    let ok = match elem {
        Elem::Int { size, .. } => matches!(size, 1 | 2 | 4 | 8),
        Elem::Float { size } => matches!(size, 4 | 8),
        Elem::Reference { size } => size == 8,
        Elem::String { size } => size > 0,
    };
    if !ok {
        return Err(format!("{elem:?}: this element size is not supported"));
    }
    Ok(elem)
}

/// Parse a dataspace message: the dims (a scalar has none).
pub(super) fn dataspace(data: &[u8], length_size: usize) -> R<Vec<usize>> {
    let mut c = Cur::over(data, 8, length_size);
    let version = c.u8()?;
    let rank = c.u8()? as usize;
    let _flags = c.u8()?;
    match version {
        1 => c.skip(5)?,
        2 => {
            if c.u8()? == 2 {
                return Ok(vec![0]); // the null dataspace: no elements
            }
        }
        v => return Err(format!("dataspace version {v} is not supported")),
    }
    (0..rank).map(|_| c.length().and_then(|d| usize::try_from(d).map_err(|_| format!("dimension {d}")))).collect()
}

/// One filter of the pipeline.
struct Filter {
    id: u16,
    client: Vec<u32>,
}

fn filters(data: &[u8]) -> R<Vec<Filter>> {
    let mut c = Cur::over(data, 8, 8);
    let version = c.u8()?;
    let n = c.u8()? as usize;
    if version == 1 {
        c.skip(6)?;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let id = c.u16()?;
        let name_len = if version == 1 || id >= 256 { c.u16()? as usize } else { 0 };
        let _flags = c.u16()?;
        let nvalues = c.u16()? as usize;
        c.skip(if version == 1 { name_len.next_multiple_of(8) } else { name_len })?;
        let client = (0..nvalues).map(|_| c.u32()).collect::<R<Vec<_>>>()?;
        if version == 1 && nvalues % 2 == 1 {
            c.skip(4)?;
        }
        if !matches!(id, 1..=3) {
            return Err(format!("filter {id} is not supported (deflate 1, shuffle 2, fletcher32 3 are)"));
        }
        out.push(Filter { id, client });
    }
    Ok(out)
}

/// Undo the pipeline on one chunk; filters whose bit is set in `mask` were skipped when writing.
fn unfilter(mut data: Vec<u8>, pipeline: &[Filter], mask: u32, limit: usize) -> R<Vec<u8>> {
    for (i, f) in pipeline.iter().enumerate().rev() {
        if mask & (1 << i) != 0 {
            continue;
        }
        data = match f.id {
            1 => super::super::v5::inflate(&data).map_err(|(_, e)| format!("chunk: {e}"))?,
            2 => {
                let size = *f.client.first().unwrap_or(&1) as usize;
                unshuffle(&data, size.max(1))
            }
            _ => {
                data.truncate(data.len().saturating_sub(4)); // Fletcher-32 checksum
                data
            }
        };
        if data.len() > limit {
            return Err(format!("a chunk inflates to {} bytes, more than its {limit}", data.len()));
        }
    }
    Ok(data)
}

/// The shuffle filter stores byte 0 of every element, then byte 1, ...; put them back.
fn unshuffle(data: &[u8], size: usize) -> Vec<u8> {
    let n = data.len() / size;
    let mut out = data.to_vec();
    for i in 0..n {
        for b in 0..size {
            out[i * size + b] = data[b * n + i];
        }
    }
    out
}

/// Read a dataset's dims, type and bytes from its header messages.
pub(super) fn read(f: &File, header: &[Message]) -> R<Raw> {
    let find = |ty: u16, what: &str| header.iter().find(|m| m.ty == ty).ok_or(format!("no {what} message"));
    let dims = dataspace(find(MSG_DATASPACE, "dataspace")?.data, f.length_size)?;
    let elem = datatype(find(MSG_DATATYPE, "datatype")?.data)?;
    let pipeline = match header.iter().find(|m| m.ty == MSG_FILTERS) {
        Some(m) => filters(m.data)?,
        None => Vec::new(),
    };
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimensions overflow")?;
    let total = count.checked_mul(elem.size()).ok_or("dimensions overflow")?;
    f.spend(total).map_err(|e| format!("dims {dims:?}: {e}"))?;
    let mut c = Cur::over(find(MSG_LAYOUT, "data layout")?.data, f.offset_size, f.length_size);
    let version = c.u8()?;
    if !(3..=5).contains(&version) {
        return Err(format!("data layout message version {version} is not supported (3 to 5 are)"));
    }
    let bytes = match c.u8()? {
        0 => {
            let n = c.u16()? as usize;
            c.take(n)?.to_vec()
        }
        1 => match c.addr()? {
            None => vec![0; total], // never written: the fill value, zero
            Some(addr) => f.slice(addr, total as u64)?.to_vec(),
        },
        2 if version == 3 => {
            let rank = c.u8()? as usize;
            let btree = c.addr()?;
            let chunk: Vec<usize> = (0..rank).map(|_| c.u32().map(|v| v as usize)).collect::<R<_>>()?;
            let chunks = btree_chunks(f, btree, dims.len())?;
            assemble(f, &dims, &chunk, elem.size(), &chunks, &pipeline, total)?
        }
        2 => {
            let (chunk, chunks) = super::v2::chunks_v4(f, &mut c, &dims)?;
            assemble(f, &dims, &chunk, elem.size(), &chunks, &pipeline, total)?
        }
        3 => return Err("virtual datasets are not supported".into()),
        k => return Err(format!("layout class {k} is not supported")),
    };
    if bytes.len() != total {
        return Err(format!("{} bytes of data for dims {dims:?} of {}-byte elements", bytes.len(), elem.size()));
    }
    Ok(Raw { dims, elem, bytes })
}

/// A chunk as an index lists it: address, stored size, filter mask, offset (in elements).
pub(super) type ChunkRef = (u64, u64, u32, Vec<usize>);

/// The chunks of a v1 B-tree chunk index (layout v3).
fn btree_chunks(f: &File, root: Option<u64>, rank: usize) -> R<Vec<ChunkRef>> {
    let mut out = Vec::new();
    let mut nodes: Vec<u64> = root.into_iter().collect();
    let mut visited = 0usize;
    while let Some(node) = nodes.pop() {
        visited += 1;
        if visited > 1 << 20 {
            return Err("chunk B-tree too large (a cycle?)".into());
        }
        let mut c = f.at(node)?;
        c.signature(b"TREE")?;
        let (kind, level, used) = (c.u8()?, c.u8()?, c.u16()? as usize);
        if kind != 1 {
            return Err(format!("chunk B-tree node of type {kind} (1 expected)"));
        }
        c.addr()?;
        c.addr()?; // siblings
        for _ in 0..used {
            let stored = c.u32()? as u64;
            let mask = c.u32()?;
            let offset: Vec<usize> = (0..=rank).map(|_| c.uint(8).map(|v| v as usize)).collect::<R<_>>()?;
            let child = c.need_addr("chunk")?;
            if level > 0 {
                nodes.push(child);
            } else {
                out.push((child, stored, mask, offset[..rank].to_vec()));
            }
        }
    }
    Ok(out)
}

/// Assemble a chunked dataset. `chunk` has one more entry than `dims` (the element size, as the
/// layout message stores it); chunks never written read as zero (the default fill value).
fn assemble(
    f: &File,
    dims: &[usize],
    chunk: &[usize],
    size: usize,
    chunks: &[ChunkRef],
    pipeline: &[Filter],
    total: usize,
) -> R<Vec<u8>> {
    let rank = dims.len();
    if rank == 0 || chunk.len() != rank + 1 || chunk[..rank].contains(&0) {
        return Err(format!("chunk dims {chunk:?} for a dataset of dims {dims:?}"));
    }
    // An empty dataset (a zero dim) has nothing to copy; its other dims may multiply past usize,
    // which the offsets below would overflow on (found by fuzz/, target hdf5).
    if total == 0 {
        return Ok(Vec::new());
    }
    let chunk_elems: usize = chunk[..rank].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("chunk overflow")?;
    let chunk_bytes = chunk_elems.checked_mul(size).ok_or("chunk overflow")?;
    let mut out = vec![0u8; total];
    for (addr, stored, mask, offset) in chunks {
        let data = f.slice(*addr, *stored)?.to_vec();
        let data = unfilter(data, pipeline, *mask, chunk_bytes)?;
        if data.len() != chunk_bytes {
            return Err(format!("a chunk of {} bytes, expected {chunk_bytes}", data.len()));
        }
        copy_chunk(&mut out, dims, &chunk[..rank], offset, size, &data)?;
    }
    Ok(out)
}

/// Copy one chunk (row-major, `chunk` dims) into the dataset at `offset`, clipping at the edges.
fn copy_chunk(out: &mut [u8], dims: &[usize], chunk: &[usize], offset: &[usize], size: usize, data: &[u8]) -> R<()> {
    let rank = dims.len();
    if offset.iter().zip(dims).any(|(&o, &d)| o >= d.max(1)) {
        return Err(format!("chunk offset {offset:?} outside dims {dims:?}"));
    }
    // Walk the chunk row by row (the last dim is contiguous in both).
    let rows: usize = chunk[..rank - 1].iter().product();
    let run = chunk[rank - 1].min(dims[rank - 1] - offset[rank - 1]);
    for r in 0..rows {
        let (mut rem, mut src, mut dst, mut inside) = (r, 0usize, 0usize, true);
        for d in (0..rank - 1).rev() {
            let i = rem % chunk[d];
            rem /= chunk[d];
            let g = offset[d] + i;
            inside &= g < dims[d];
            let (src_stride, dst_stride): (usize, usize) =
                (chunk[d + 1..].iter().product(), dims[d + 1..].iter().product());
            src += i * src_stride;
            dst += g * dst_stride;
        }
        if !inside {
            continue;
        }
        let (s, d) = (src * size, (dst + offset[rank - 1]) * size);
        out[d..d + run * size].copy_from_slice(&data[s..s + run * size]);
    }
    Ok(())
}
