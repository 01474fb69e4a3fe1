//! The newer structures (HDF5 1.8+, h5py's `libver="latest"`): version-2 object headers
//! (`OHDR`/`OCHK`), groups of link messages stored in the header ("compact" groups) and the
//! version-4 chunked layout with the single-chunk and fixed-array (unpaged) indexes.
//! Checksums are not verified (the values' own checks catch what matters: shapes, lengths).

use super::bytes::{Cur, File, R};
use super::dataset::ChunkRef;
use super::object::{Message, MSG_CONTINUATION};

pub(super) const MSG_LINK_INFO: u16 = 0x0002;
pub(super) const MSG_LINK: u16 = 0x0006;

/// The messages of a version-2 object header at `addr`, continuation blocks followed.
pub(super) fn messages<'a>(f: &File<'a>, addr: u64) -> R<Vec<Message<'a>>> {
    let mut c = f.at(addr)?;
    c.signature(b"OHDR")?;
    let version = c.u8()?;
    if version != 2 {
        return Err(format!("OHDR version {version} (2 is read)"));
    }
    let flags = c.u8()?;
    if flags & 0x20 != 0 {
        c.skip(16)?; // access, modification, change and birth times
    }
    if flags & 0x10 != 0 {
        c.skip(4)?; // attribute storage phase change values
    }
    let size = c.uint(1 << (flags & 3))? as usize;
    let ordered = flags & 0x04 != 0;
    let mut out = Vec::new();
    let mut blocks = vec![c.take(size)?];
    let mut i = 0;
    while i < blocks.len() {
        if i >= 1024 {
            return Err("too many object header continuation blocks".into());
        }
        let mut b = Cur::over(blocks[i], f.offset_size, f.length_size);
        let header = if ordered { 6 } else { 4 };
        while b.b.len() - b.pos >= header {
            let ty = b.u8()? as u16;
            let len = b.u16()? as usize;
            b.skip(header - 3)?; // flags, creation order
            let data = b.take(len)?;
            if ty == MSG_CONTINUATION {
                let mut m = Cur::over(data, f.offset_size, f.length_size);
                let (at, len) = (m.need_addr("continuation")?, m.length()?);
                let mut k = f.at(at)?;
                k.signature(b"OCHK")?;
                let len = usize::try_from(len).map_err(|_| "continuation length")?;
                // The block's length counts its signature and its checksum.
                blocks.push(k.take(len.checked_sub(8).ok_or("continuation block too short")?)?);
            }
            out.push(Message { ty, data });
        }
        i += 1;
    }
    Ok(out)
}

/// The (name, object header address) hard links of a compact group.
pub(super) fn links(f: &File, header: &[Message]) -> R<Vec<(String, u64)>> {
    if let Some(info) = header.iter().find(|m| m.ty == MSG_LINK_INFO) {
        let mut c = Cur::over(info.data, f.offset_size, f.length_size);
        let flags = {
            c.skip(1)?;
            c.u8()?
        };
        if flags & 1 != 0 {
            c.skip(8)?; // maximum creation index
        }
        if c.addr()?.is_some() {
            return Err("groups with dense link storage (a fractal heap) are not supported".into());
        }
    }
    let mut out = Vec::new();
    for m in header.iter().filter(|m| m.ty == MSG_LINK) {
        let mut c = Cur::over(m.data, f.offset_size, f.length_size);
        let version = c.u8()?;
        if version != 1 {
            return Err(format!("link message version {version}"));
        }
        let flags = c.u8()?;
        let kind = if flags & 0x08 != 0 { c.u8()? } else { 0 };
        if flags & 0x04 != 0 {
            c.skip(8)?; // creation order
        }
        if flags & 0x10 != 0 {
            c.skip(1)?; // character set
        }
        let name_len = c.uint(1 << (flags & 3))? as usize;
        let name = String::from_utf8_lossy(c.take(name_len)?).into_owned();
        if kind == 0 {
            out.push((name, c.need_addr("hard link")?));
        } // soft and external links name no object in this file: not variables
    }
    Ok(out)
}

/// A version-4 chunked layout (after the layout class byte): the chunks' (address, stored size,
/// filter mask, offsets in elements), in the order of the chunk grid.
pub(super) fn chunks_v4(f: &File, c: &mut Cur, dims: &[usize]) -> R<(Vec<usize>, Vec<ChunkRef>)> {
    let flags = c.u8()?;
    let rank = c.u8()? as usize;
    let width = c.u8()? as usize;
    if !(1..=8).contains(&width) || rank != dims.len() + 1 {
        return Err(format!(
            "chunked layout v4 with {rank} dims of {width} bytes for a dataset of rank {}",
            dims.len()
        ));
    }
    let chunk: Vec<usize> = (0..rank).map(|_| c.uint(width).map(|v| v as usize)).collect::<R<_>>()?;
    let index = c.u8()?;
    let grid: Vec<usize> = dims.iter().zip(&chunk).map(|(&d, &k)| if k == 0 { 0 } else { d.div_ceil(k) }).collect();
    let n: usize = grid.iter().product();
    let offsets = |i: usize| {
        let mut rem = i;
        let mut off = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            off[d] = (rem % grid[d]) * chunk[d];
            rem /= grid[d];
        }
        off
    };
    let mut out = Vec::new();
    match index {
        1 => {
            let (size, mask) = if flags & 0x02 != 0 { (Some(c.length()?), c.u32()?) } else { (None, 0) };
            if let Some(addr) = c.addr()? {
                let bytes = chunk.iter().product::<usize>() as u64;
                out.push((addr, size.unwrap_or(bytes), mask, vec![0; dims.len()]));
            }
        }
        3 => {
            c.skip(1)?; // page bits
            let Some(header) = c.addr()? else { return Ok((chunk, out)) };
            let mut h = f.at(header)?;
            h.signature(b"FAHD")?;
            h.skip(1)?;
            let client = h.u8()?;
            let entry = h.u8()? as usize;
            let page_bits = h.u8()?;
            let entries = h.length()? as usize;
            if entries != n || entries > (1usize << page_bits.min(40)) {
                return Err(format!("fixed array of {entries} chunks (paged arrays are not supported)"));
            }
            let Some(block) = h.addr()? else { return Ok((chunk, out)) };
            let mut b = f.at(block)?;
            b.signature(b"FADB")?;
            b.skip(2)?;
            b.addr()?; // the header's address
            for i in 0..entries {
                let addr = b.addr()?;
                let (size, mask) = if client == 1 {
                    (b.uint(entry.saturating_sub(f.offset_size + 4).clamp(1, 8))?, b.u32()?)
                } else {
                    (chunk.iter().product::<usize>() as u64, 0)
                };
                if let Some(addr) = addr {
                    out.push((addr, size, mask, offsets(i)));
                }
            }
        }
        2 => return Err("the implicit chunk index is not supported".into()),
        4 => return Err("the extensible-array chunk index (unlimited dims) is not supported".into()),
        5 => return Err("the v2 B-tree chunk index is not supported".into()),
        k => return Err(format!("chunk index type {k} is not supported")),
    }
    Ok((chunk, out))
}
