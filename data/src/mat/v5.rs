//! The Level 5 MAT reader (MATLAB's `-v6` and `-v7`, scipy's `savemat`).
//!
//! A file is a 128-byte header (116 bytes of text, 8 bytes of subsystem offset, the version
//! 0x0100 and the endian indicator `IM` for little-endian or `MI` for big-endian) and then data
//! elements. Each element has an 8-byte tag (type, byte count) and data padded to 8 bytes, or the
//! "small element" form where the byte count (at most 4) sits in the tag's upper half and the data
//! in its second word. A variable is an `miMATRIX` element holding, in order, its array flags
//! (class and the complex/logical bits), its dims, its name and its class's contents; or an
//! `miCOMPRESSED` element whose zlib stream inflates to one `miMATRIX`.
//!
//! Every length is checked against the bytes present before it is used: a tag claiming more bytes
//! than remain, or dims whose product disagrees with the values present, is an error, never an
//! allocation. Inflation stops at deflate's maximum ratio (1032:1) of the compressed bytes.

use super::write::*;
use super::{MatArray, MatData};

const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;
const FLAG_COMPLEX: u32 = 0x0800;
/// Deflate cannot expand data by more than about 1032:1; anything beyond is a corrupt stream.
const MAX_INFLATE_RATIO: usize = 1032;
/// Cells and structs nest; a hostile file must not overflow the stack.
const MAX_DEPTH: usize = 32;

type R<T> = std::result::Result<T, String>;

/// Parse a Level 5 file into its variables (errors name the variable where it is known).
pub(super) fn parse(bytes: &[u8]) -> R<Vec<(String, MatArray)>> {
    if bytes.len() < 128 {
        return Err(format!("truncated: {} bytes, a MAT file header alone is 128", bytes.len()));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!(
                "not a Level 5 MAT file (endian indicator {:?} at byte 126, expected \"IM\" or \"MI\")",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let mut vars = Vec::new();
    let mut r = Elements { bytes, pos: 128, big };
    while r.pos < bytes.len() {
        let at = r.pos;
        let (ty, data) = r.next().map_err(|e| match peek_name(&bytes[at..], big) {
            Some(name) => format!("variable {name}: {e}"),
            None => format!("element at byte {at}: {e}"),
        })?;
        let (name, array) = match ty {
            MI_MATRIX => matrix(data, big, 0),
            MI_COMPRESSED => {
                let inflated = inflate(data).map_err(|(partial, e)| match peek_name(&partial, big) {
                    Some(name) => format!("variable {name}: {e}"),
                    None => format!("compressed element at byte {at}: {e}"),
                })?;
                let mut inner = Elements { bytes: &inflated, pos: 0, big };
                let (ty, data) = inner.next().map_err(|e| format!("compressed element at byte {at}: {e}"))?;
                if ty != MI_MATRIX {
                    return Err(format!("compressed element at byte {at} holds type {ty}, expected miMATRIX (14)"));
                }
                matrix(data, big, 0)
            }
            _ => return Err(format!("element at byte {at}: top-level type {ty}, expected miMATRIX or miCOMPRESSED")),
        }
        .map_err(|e| if e.starts_with("variable ") { e } else { format!("element at byte {at}: {e}") })?;
        vars.push((name, array));
    }
    Ok(vars)
}

/// A cursor over consecutive data elements.
struct Elements<'a> {
    bytes: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Elements<'a> {
    /// The next element's type and data, moving past its padding.
    fn next(&mut self) -> R<(u32, &'a [u8])> {
        let left = self.bytes.len() - self.pos;
        if left < 8 {
            return Err(format!("truncated: {left} bytes left, a data element tag needs 8"));
        }
        let w0 = u32_at(self.bytes, self.pos, self.big);
        let (ty, start, n, advance) = if w0 >> 16 != 0 {
            let n = (w0 >> 16) as usize;
            if n > 4 {
                return Err(format!("small data element claims {n} bytes (at most 4)"));
            }
            (w0 & 0xffff, self.pos + 4, n, 8)
        } else {
            let n = u32_at(self.bytes, self.pos + 4, self.big) as usize;
            if n > left - 8 {
                return Err(format!("truncated: element of type {w0} claims {n} bytes, {} remain", left - 8));
            }
            // A compressed element's stream is not padded (MATLAB and scipy agree).
            let padded = if w0 == MI_COMPRESSED { n } else { n.next_multiple_of(8) };
            (w0, self.pos + 8, n, 8 + padded)
        };
        self.pos = (self.pos + advance).min(self.bytes.len());
        Ok((ty, &self.bytes[start..start + n]))
    }

    /// The next element, which must be of one of `types` (what it is, for the message).
    fn expect(&mut self, types: &[u32], what: &str) -> R<(u32, &'a [u8])> {
        let (ty, data) = self.next().map_err(|e| format!("{what}: {e}"))?;
        if !types.contains(&ty) {
            return Err(format!("{what}: storage type {ty}, expected one of {types:?}"));
        }
        Ok((ty, data))
    }
}

fn u32_at(b: &[u8], at: usize, big: bool) -> u32 {
    let w: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
    if big {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

/// Inflate a zlib stream, at most [`MAX_INFLATE_RATIO`] times its size; on failure, what
/// inflated before it (to name the variable) and the message.
pub(super) fn inflate(data: &[u8]) -> std::result::Result<Vec<u8>, (Vec<u8>, String)> {
    let limit = data.len().saturating_mul(MAX_INFLATE_RATIO) + 64;
    let mut z = flate2::Decompress::new(true);
    let mut out = Vec::new();
    // Small steps, so that what precedes a corruption is kept for the message.
    let mut chunk = vec![0u8; 4096];
    loop {
        let (in0, out0) = (z.total_in() as usize, z.total_out() as usize);
        let status = z.decompress(&data[in0..], &mut chunk, flate2::FlushDecompress::None);
        let produced = z.total_out() as usize - out0;
        out.extend_from_slice(&chunk[..produced]);
        match status {
            Err(e) => return Err((out, format!("corrupted zlib stream: {e}"))),
            Ok(flate2::Status::StreamEnd) => return Ok(out),
            Ok(_) if out.len() > limit => {
                return Err((out, "zlib stream inflates beyond deflate's maximum ratio".into()))
            }
            Ok(_) if produced == 0 && z.total_in() as usize == in0 => {
                return Err((out, "truncated zlib stream".into()))
            }
            Ok(_) => {}
        }
    }
}

/// The name of the `miMATRIX` at the start of `b`, if enough of it is there.
fn peek_name(b: &[u8], big: bool) -> Option<String> {
    let mut outer = Elements { bytes: b, pos: 0, big };
    if b.len() < 8 || u32_at(b, 0, big) != MI_MATRIX {
        return None;
    }
    outer.pos = 8; // the matrix tag's byte count may exceed what inflated: read inside it directly
    outer.next().ok()?;
    outer.next().ok()?;
    let (_, name) = outer.next().ok()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// One `miMATRIX` element's contents: its name and array.
fn matrix(data: &[u8], big: bool, depth: usize) -> R<(String, MatArray)> {
    if data.is_empty() {
        // MATLAB writes an empty cell element as a matrix element with no contents.
        return Ok((String::new(), MatArray::double(&[0, 0], Vec::new())));
    }
    if depth > MAX_DEPTH {
        return Err(format!("cells or structs nested deeper than {MAX_DEPTH}"));
    }
    let mut r = Elements { bytes: data, pos: 0, big };
    let (_, flags) = r.expect(&[MI_UINT32], "array flags")?;
    if flags.len() < 8 {
        return Err(format!("array flags of {} bytes, expected 8", flags.len()));
    }
    let flags = u32_at(flags, 0, big);
    let (_, dims) = r.expect(&[MI_INT32], "dimensions")?;
    let dims: Vec<i32> = cast(MI_INT32, dims, big)?;
    if dims.len() < 2 || dims.iter().any(|&d| d < 0) {
        return Err(format!("dimensions {dims:?}: need at least two, none negative"));
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let (_, name) = r.expect(&[MI_INT8, MI_UINT8], "array name")?;
    let name = String::from_utf8_lossy(name).into_owned();
    let mut body = || -> R<MatArray> {
        if flags & FLAG_COMPLEX != 0 {
            return Err("complex arrays are not supported".into());
        }
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimensions overflow")?;
        let class = (flags & 0xff) as u8;
        let mut numeric = || -> R<(u32, &[u8])> {
            let (ty, d) = r.next().map_err(|e| format!("real part: {e}"))?;
            Ok((ty, d))
        };
        let data = match class {
            MX_DOUBLE => MatData::Double(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_SINGLE => MatData::Single(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_INT8 => MatData::Int8(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_UINT8 if flags & FLAG_LOGICAL != 0 => MatData::Logical(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_UINT8 => MatData::UInt8(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_INT16 => MatData::Int16(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_UINT16 => MatData::UInt16(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_INT32 => MatData::Int32(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_UINT32 => MatData::UInt32(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_INT64 => MatData::Int64(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_UINT64 => MatData::UInt64(numeric().and_then(|(t, d)| cast(t, d, big))?),
            MX_CHAR => {
                let (ty, d) = numeric()?;
                MatData::Char(match ty {
                    MI_UTF8 => String::from_utf8_lossy(d).encode_utf16().collect(),
                    MI_UTF16 => cast(MI_UINT16, d, big)?,
                    _ => cast(ty, d, big)?,
                })
            }
            MX_CELL => {
                let mut items = Vec::new();
                for i in 0..count {
                    let (_, d) = r.expect(&[MI_MATRIX], &format!("cell element {i}"))?;
                    items.push(matrix(d, big, depth + 1).map_err(|e| format!("cell element {i}: {e}"))?.1);
                }
                MatData::Cell(items)
            }
            MX_STRUCT => {
                let (_, len) = r.expect(&[MI_INT32], "field name length")?;
                let len = *cast::<i32>(MI_INT32, len, big)?.first().ok_or("empty field name length")?;
                let (_, names) = r.expect(&[MI_INT8, MI_UINT8], "field names")?;
                if len <= 0 || names.len() % len as usize != 0 {
                    return Err(format!("field names of {} bytes in slots of {len}", names.len()));
                }
                let fields: Vec<String> = names
                    .chunks(len as usize)
                    .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
                    .collect();
                let mut values = Vec::new();
                for e in 0..count {
                    for f in &fields {
                        let (_, d) = r.expect(&[MI_MATRIX], &format!("element {e} field {f}"))?;
                        values.push(matrix(d, big, depth + 1).map_err(|m| format!("element {e} field {f}: {m}"))?.1);
                    }
                }
                MatData::Struct { fields, values }
            }
            3 => return Err("MATLAB objects (class 3) are not supported".into()),
            5 => return Err("sparse arrays (class 5) are not supported".into()),
            c => return Err(format!("array class {c} is not supported")),
        };
        let array = MatArray { dims: dims.clone(), data };
        array.check_len()?;
        Ok(array)
    };
    let array = body().map_err(|e| if depth == 0 { format!("variable {name}: {e}") } else { e })?;
    Ok((name, array))
}

/// A number that any storage type converts to, as MATLAB's class conversion does (`as` casts:
/// MATLAB stores a double array as `miUINT8` only when every value fits exactly).
pub(super) trait Elem: Copy {
    fn from_i64(v: i64) -> Self;
    fn from_u64(v: u64) -> Self;
    fn from_f64(v: f64) -> Self;
}

macro_rules! elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_i64(v: i64) -> Self { v as $t }
            fn from_u64(v: u64) -> Self { v as $t }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
elem!(f64, f32, i8, u8, i16, u16, i32, u32, i64, u64);

/// Decode `data`, stored as `ty`, into values of type `T`.
pub(super) fn cast<T: Elem>(ty: u32, data: &[u8], big: bool) -> R<Vec<T>> {
    let size = match ty {
        MI_INT8 | MI_UINT8 | MI_UTF8 => 1,
        MI_INT16 | MI_UINT16 | MI_UTF16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE | MI_UTF32 => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return Err(format!("storage type {ty} is not a numeric type")),
    };
    if !data.len().is_multiple_of(size) {
        return Err(format!("{} bytes of storage type {ty} (elements of {size} bytes)", data.len()));
    }
    fn word<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut w: [u8; N] = c.try_into().expect("chunk of N bytes");
        if big {
            w.reverse();
        }
        w
    }
    Ok(data
        .chunks_exact(size)
        .map(|c| match ty {
            MI_INT8 => T::from_i64(c[0] as i8 as i64),
            MI_UINT8 | MI_UTF8 => T::from_u64(c[0] as u64),
            MI_INT16 => T::from_i64(i16::from_le_bytes(word(c, big)) as i64),
            MI_UINT16 | MI_UTF16 => T::from_u64(u16::from_le_bytes(word(c, big)) as u64),
            MI_INT32 => T::from_i64(i32::from_le_bytes(word(c, big)) as i64),
            MI_UINT32 | MI_UTF32 => T::from_u64(u32::from_le_bytes(word(c, big)) as u64),
            MI_SINGLE => T::from_f64(f32::from_le_bytes(word(c, big)) as f64),
            MI_DOUBLE => T::from_f64(f64::from_le_bytes(word(c, big))),
            MI_INT64 => T::from_i64(i64::from_le_bytes(word(c, big))),
            _ => T::from_u64(u64::from_le_bytes(word(c, big))),
        })
        .collect())
}
