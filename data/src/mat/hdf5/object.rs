//! Object headers (version 1, what MATLAB and h5py's default write; version 2 in `v2`) and
//! groups (symbol tables: a v1 B-tree of symbol table nodes, names in a local heap; or links).

use super::bytes::{Cur, File, R};

pub(super) const MSG_DATASPACE: u16 = 0x0001;
pub(super) const MSG_DATATYPE: u16 = 0x0003;
pub(super) const MSG_LAYOUT: u16 = 0x0008;
pub(super) const MSG_FILTERS: u16 = 0x000B;
pub(super) const MSG_ATTRIBUTE: u16 = 0x000C;
pub(super) const MSG_CONTINUATION: u16 = 0x0010;
pub(super) const MSG_SYMBOL_TABLE: u16 = 0x0011;

/// A bound on continuation blocks, against loops in a corrupt file.
const MAX_BLOCKS: usize = 1024;

/// One header message: its type and its bytes.
pub(super) struct Message<'a> {
    pub ty: u16,
    pub data: &'a [u8],
}

/// The messages of the object header at `addr`, continuation blocks followed.
pub(super) fn messages<'a>(f: &File<'a>, addr: u64) -> R<Vec<Message<'a>>> {
    let mut c = f.at(addr)?;
    let mut out = Vec::new();
    if c.b.get(c.pos..c.pos + 4) == Some(b"OHDR") {
        return super::v2::messages(f, addr);
    }
    let version = c.u8()?;
    if version != 1 {
        return Err(format!("object header version {version} at {addr:#x} (1, or 2 with OHDR, are read)"));
    }
    c.skip(1)?;
    let count = c.u16()? as usize;
    c.skip(4)?; // reference count
    let size = c.u32()? as u64;
    c.skip(4)?; // the header is padded to 8 bytes
    let mut blocks = vec![(addr + 16, size)];
    let mut i = 0;
    while i < blocks.len() && out.len() < count {
        if i >= MAX_BLOCKS {
            return Err("too many object header continuation blocks".into());
        }
        let (start, len) = blocks[i];
        let mut b = Cur::over(f.slice(start, len)?, f.offset_size, f.length_size);
        while b.b.len() - b.pos >= 8 && out.len() < count {
            let ty = b.u16()?;
            let size = b.u16()? as usize;
            b.skip(4)?; // flags, reserved
            let data = b.take(size)?;
            if ty == MSG_CONTINUATION {
                let mut m = Cur::over(data, f.offset_size, f.length_size);
                blocks.push((m.need_addr("continuation")?, m.length()?));
            }
            out.push(Message { ty, data });
        }
        i += 1;
    }
    Ok(out)
}

/// The (name, object header address) entries of a symbol-table group, in B-tree order.
pub(super) fn group_entries(f: &File, header: &[Message]) -> R<Vec<(String, u64)>> {
    let Some(msg) = header.iter().find(|m| m.ty == MSG_SYMBOL_TABLE) else {
        return super::v2::links(f, header); // a new-style group: links in the header
    };
    let mut m = Cur::over(msg.data, f.offset_size, f.length_size);
    let btree = m.need_addr("group B-tree")?;
    let heap = m.need_addr("group local heap")?;
    // The local heap: names are NUL-terminated strings in its data segment.
    let mut h = f.at(heap)?;
    h.signature(b"HEAP")?;
    h.skip(4)?; // version, reserved
    let heap_size = h.length()?;
    h.length()?; // free list
    let names = f.slice(h.need_addr("local heap data")?, heap_size)?;
    let mut out = Vec::new();
    let mut nodes = vec![btree];
    let mut visited = 0usize;
    while let Some(node) = nodes.pop() {
        visited += 1;
        if visited + nodes.len() > 1 << 20 {
            return Err("group B-tree too large (a cycle?)".into());
        }
        let mut c = f.at(node)?;
        c.signature(b"TREE")?;
        let (kind, level, used) = (c.u8()?, c.u8()?, c.u16()? as usize);
        if kind != 0 {
            return Err(format!("group B-tree node of type {kind} (0 expected)"));
        }
        c.addr()?;
        c.addr()?; // siblings
        let mut children = Vec::new();
        for _ in 0..used {
            c.length()?; // key: a heap offset
            children.push(c.need_addr("B-tree child")?);
        }
        if level > 0 {
            nodes.extend(children.into_iter().rev());
            continue;
        }
        for snod in children {
            let mut s = f.at(snod)?;
            s.signature(b"SNOD")?;
            s.skip(2)?; // version, reserved
            let count = s.u16()? as usize;
            for _ in 0..count {
                let name_at = s.length()? as usize;
                let obj = s.need_addr("symbol table entry")?;
                s.skip(8 + 16)?; // cache type, reserved, scratch pad
                let tail = names.get(name_at..).ok_or("symbol name beyond its heap")?;
                let end = tail.iter().position(|&b| b == 0).ok_or("unterminated symbol name")?;
                out.push((String::from_utf8_lossy(&tail[..end]).into_owned(), obj));
            }
        }
    }
    Ok(out)
}

/// The attributes of an object header: name and raw value bytes, with the datatype's class.
/// Only what MATLAB writes is interpreted by the caller (`MATLAB_class`, `MATLAB_empty`).
pub(super) fn attributes<'a>(f: &File, header: &[Message<'a>]) -> Vec<(String, &'a [u8])> {
    let mut out = Vec::new();
    for m in header.iter().filter(|m| m.ty == MSG_ATTRIBUTE) {
        let parse = || -> R<(String, &'a [u8])> {
            let mut c = Cur::over(m.data, f.offset_size, f.length_size);
            let version = c.u8()?;
            c.skip(1)?;
            let (name_len, type_len, space_len) = (c.u16()? as usize, c.u16()? as usize, c.u16()? as usize);
            let pad = |n: usize| if version == 1 { n.next_multiple_of(8) } else { n };
            if version == 3 {
                c.skip(1)?; // name encoding
            }
            let name = c.take(pad(name_len))?;
            let name = &name[..name_len.min(name.len())];
            let name = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
            c.skip(pad(type_len))?;
            c.skip(pad(space_len))?;
            Ok((name, &m.data[c.pos..]))
        };
        if let Ok(a) = parse() {
            out.push(a);
        }
    }
    out
}
