//! MAT v7.3: an HDF5 file behind a 512-byte userblock, read within the subset MATLAB writes for
//! numeric arrays and cells (what COFW's colour files use). Format: The HDF Group's "HDF5 File
//! Format Specification" (version 3.0); MATLAB's conventions: the MAT-file v7.3 notes.
//!
//! Supported:
//! - superblock versions 0 and 1 (MATLAB's and h5py's default `libver="earliest"`) and 2/3
//!   (`libver="latest"`), at byte 0 or after a userblock (512, 1024, ...); addresses relative to
//!   the superblock;
//! - object headers version 1 and version 2 (`OHDR`/`OCHK`), with continuation blocks;
//! - groups as symbol tables (v1 B-tree of symbol table nodes + local heap) or as link messages
//!   in the header (compact groups; hard links);
//! - dataspaces v1/v2; datatypes fixed-point (1/2/4/8 bytes), IEEE float (4/8), object references
//!   (MATLAB's cells) and fixed-length strings (attributes), little-endian;
//! - layouts compact, contiguous and chunked: the v1 B-tree index (layout message v3), and the
//!   single-chunk and unpaged fixed-array indexes (layout v4/v5; v5 is HDF5 2.0's, read as v4,
//!   which the fixture written by HDF5 2.0 checks);
//! - filters deflate, shuffle and Fletcher-32 (the checksum is stripped, not verified).
//!
//! Not supported, each a clear error naming the feature: dense groups (fractal heap), the
//! implicit, extensible-array and v2 B-tree chunk indexes and paged fixed arrays (datasets with
//! unlimited dims or more than 2^page_bits chunks), big-endian data, compound and variable-length
//! types, other filters (szip, n-bit, ...), virtual datasets. Checksums are not verified.
//!
//! MATLAB mapping: a dataset of HDF5 dims `(d0, ..., dk)` is the MATLAB array of dims
//! `[dk, ..., d0]` with the same bytes (HDF5 is row-major, MATLAB column-major). The class comes
//! from the `MATLAB_class` attribute where it refines the HDF5 type (`logical`, `char`), a
//! reference dataset is a cell whose elements are read from where they point (`#refs#`), and a
//! dataset marked `MATLAB_empty` is the empty array of the dims it stores.

mod bytes;
mod dataset;
mod object;
mod v2;

use bytes::{File, R};
use dataset::Elem;

use super::{MatArray, MatData};

/// Cells point to datasets that may be cells; a hostile file must not recurse forever.
const MAX_DEPTH: usize = 16;

/// Where the superblock may start: 0, then 512 and every doubling (the userblock sizes).
fn superblock_at(bytes: &[u8]) -> Option<usize> {
    std::iter::once(0)
        .chain((9..40).map(|s| 1usize << s))
        .take_while(|&a| a + 8 <= bytes.len())
        .find(|&a| &bytes[a..a + 8] == super::HDF5_SIGNATURE)
}

/// Parse a v7.3 file into its root-level variables (groups such as `#refs#` are not variables).
pub(super) fn parse(bytes: &[u8]) -> R<Vec<(String, MatArray)>> {
    let at = superblock_at(bytes).ok_or("no HDF5 superblock signature")?;
    let sb = &bytes[at..];
    let version = *sb.get(8).ok_or("truncated superblock")?;
    // Versions 0/1: sizes at bytes 13-14, addresses after 24 bytes (v1: 4 more); 2/3: sizes at
    // 9-10, addresses after 12 bytes, the root group's header address directly.
    let (sizes_at, fixed) = match version {
        0 => (13, 24),
        1 => (13, 28),
        2 | 3 => (9, 12),
        v => return Err(format!("HDF5 superblock version {v} is not supported (0 to 3 are)")),
    };
    let offset_size = *sb.get(sizes_at).ok_or("truncated superblock")? as usize;
    let length_size = *sb.get(sizes_at + 1).ok_or("truncated superblock")? as usize;
    if !matches!(offset_size, 2 | 4 | 8) || !matches!(length_size, 2 | 4 | 8) {
        return Err(format!("superblock sizes of offsets {offset_size} and lengths {length_size}"));
    }
    let mut probe = File::new(bytes, at, offset_size, length_size).at(0)?;
    probe.skip(fixed)?;
    // Addresses are relative to the superblock (the library's reading, whatever base it records).
    probe.need_addr("base address")?;
    let root = if version >= 2 {
        probe.addr()?; // superblock extension
        probe.addr()?; // end of file
        probe.need_addr("root group")?
    } else {
        probe.addr()?; // free space
        probe.addr()?; // end of file
        probe.addr()?; // driver information
        probe.length()?; // root entry: link name offset
        probe.need_addr("root group")?
    };
    let f = File::new(bytes, at, offset_size, length_size);
    let header = object::messages(&f, root).map_err(|e| format!("root group: {e}"))?;
    let mut vars = Vec::new();
    for (name, addr) in object::group_entries(&f, &header).map_err(|e| format!("root group: {e}"))? {
        let header = object::messages(&f, addr).map_err(|e| format!("variable {name}: {e}"))?;
        if !header.iter().any(|m| m.ty == object::MSG_LAYOUT) {
            continue; // not a dataset: a group (`#refs#`, or a MATLAB struct, not read)
        }
        let array = array(&f, &header, 0).map_err(|e| format!("variable {name}: {e}"))?;
        vars.push((name, array));
    }
    Ok(vars)
}

/// One dataset as a MATLAB array.
fn array(f: &File, header: &[object::Message], depth: usize) -> R<MatArray> {
    if depth > MAX_DEPTH {
        return Err(format!("cells nested deeper than {MAX_DEPTH}"));
    }
    let attrs = object::attributes(f, header);
    let attr_text = |name: &str| {
        attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).trim_end_matches('\0').to_string())
    };
    let class = attr_text("MATLAB_class").unwrap_or_default();
    let raw = dataset::read(f, header)?;
    let mut dims: Vec<usize> = raw.dims.iter().rev().copied().collect();
    while dims.len() < 2 {
        dims.push(1);
    }
    if attrs.iter().any(|(n, _)| n == "MATLAB_empty") {
        // The data holds the dims of an empty array, not its values.
        let d: Vec<usize> = raw.bytes.chunks_exact(raw.elem.size()).map(|c| le(c) as usize).collect();
        let d = if d.len() >= 2 { d } else { vec![0, 0] };
        return Ok(MatArray { dims: d, data: empty(&class) });
    }
    let words = || raw.bytes.chunks_exact(raw.elem.size());
    let data = match raw.elem {
        Elem::Reference { .. } => {
            let mut items = Vec::new();
            for (i, w) in words().enumerate() {
                let addr = le(w);
                let item = object::messages(f, addr).and_then(|h| array(f, &h, depth + 1));
                items.push(item.map_err(|e| format!("cell element {}: {e}", i + 1))?);
            }
            MatData::Cell(items)
        }
        Elem::Float { size: 8 } => MatData::Double(words().map(|w| f64::from_bits(le(w))).collect()),
        Elem::Float { .. } => MatData::Single(words().map(|w| f32::from_bits(le(w) as u32)).collect()),
        Elem::Int { size, signed } => int_data(size, signed, &class, words().map(le)),
        Elem::String { .. } => return Err("a string dataset is not a MATLAB array".into()),
    };
    let a = MatArray { dims, data };
    a.check_len()?;
    Ok(a)
}

fn le(w: &[u8]) -> u64 {
    w.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64)
}

/// Integers into the class MATLAB_class names (`logical` and `char` share uint8/uint16 storage).
fn int_data(size: usize, signed: bool, class: &str, v: impl Iterator<Item = u64>) -> MatData {
    let sx = |x: u64, bits: u32| ((x << (64 - bits)) as i64) >> (64 - bits);
    match (size, signed, class) {
        (1, false, "logical") => MatData::Logical(v.map(|x| x as u8).collect()),
        (2, false, "char") => MatData::Char(v.map(|x| x as u16).collect()),
        (1, false, _) => MatData::UInt8(v.map(|x| x as u8).collect()),
        (1, true, _) => MatData::Int8(v.map(|x| sx(x, 8) as i8).collect()),
        (2, false, _) => MatData::UInt16(v.map(|x| x as u16).collect()),
        (2, true, _) => MatData::Int16(v.map(|x| sx(x, 16) as i16).collect()),
        (4, false, _) => MatData::UInt32(v.map(|x| x as u32).collect()),
        (4, true, _) => MatData::Int32(v.map(|x| sx(x, 32) as i32).collect()),
        (_, false, _) => MatData::UInt64(v.collect()),
        (_, true, _) => MatData::Int64(v.map(|x| x as i64).collect()),
    }
}

/// The empty data of a MATLAB class.
fn empty(class: &str) -> MatData {
    match class {
        "cell" => MatData::Cell(Vec::new()),
        "char" => MatData::Char(Vec::new()),
        "uint8" => MatData::UInt8(Vec::new()),
        "logical" => MatData::Logical(Vec::new()),
        "single" => MatData::Single(Vec::new()),
        _ => MatData::Double(Vec::new()),
    }
}
