//! A small Level 5 MAT writer: uncompressed, little-endian, every class of [`MatData`] stored in
//! its natural type (double as `miDOUBLE`, uint8 as `miUINT8`, char as `miUINT16`...). Enough to
//! write 300W-LP- and COFW-style files for tests and synthetic data; MATLAB, Octave and scipy
//! read what it writes.

use std::path::Path;

use super::{MatArray, MatData};
use crate::error::{Error, Result};

// Storage types and array classes of the Level 5 format (MathWorks' "MAT-File Format", table 1-1
// and 1-3), shared with the reader.
pub(super) const MI_INT8: u32 = 1;
pub(super) const MI_UINT8: u32 = 2;
pub(super) const MI_INT16: u32 = 3;
pub(super) const MI_UINT16: u32 = 4;
pub(super) const MI_INT32: u32 = 5;
pub(super) const MI_UINT32: u32 = 6;
pub(super) const MI_SINGLE: u32 = 7;
pub(super) const MI_DOUBLE: u32 = 9;
pub(super) const MI_INT64: u32 = 12;
pub(super) const MI_UINT64: u32 = 13;
pub(super) const MI_MATRIX: u32 = 14;

pub(super) const MX_CELL: u8 = 1;
pub(super) const MX_STRUCT: u8 = 2;
pub(super) const MX_CHAR: u8 = 4;
pub(super) const MX_DOUBLE: u8 = 6;
pub(super) const MX_SINGLE: u8 = 7;
pub(super) const MX_INT8: u8 = 8;
pub(super) const MX_UINT8: u8 = 9;
pub(super) const MX_INT16: u8 = 10;
pub(super) const MX_UINT16: u8 = 11;
pub(super) const MX_INT32: u8 = 12;
pub(super) const MX_UINT32: u8 = 13;
pub(super) const MX_INT64: u8 = 14;
pub(super) const MX_UINT64: u8 = 15;

/// The array-flags bit of a logical array (bit 1 of the flags byte).
pub(super) const FLAG_LOGICAL: u32 = 0x0200;

/// Field names are written in fixed-width slots of this many bytes (MATLAB's own choice: 31
/// characters and a NUL).
const FIELD_SLOT: usize = 32;

/// Write `vars` as an uncompressed Level 5 MAT file. Each array's values must match its dims
/// and names must be valid MATLAB identifiers (checked, not fixed).
pub fn write_v5(path: &Path, vars: &[(&str, MatArray)]) -> Result<()> {
    let err = |msg: String| Error::Format { path: path.to_path_buf(), msg };
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, Platform: any, Created by: facex data::mat::write_v5".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0u8; 8]); // no subsystem data
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for (name, array) in vars {
        if !is_identifier(name) {
            return Err(err(format!("variable name {name:?} is not a MATLAB identifier")));
        }
        let body = matrix(name, array).map_err(|m| err(format!("variable {name}: {m}")))?;
        element(&mut out, MI_MATRIX, &body);
    }
    std::fs::write(path, out).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() < FIELD_SLOT
}

/// Append one data element: 8-byte tag, data, zero padding to 8 bytes.
fn element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(8), 0);
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The contents of one `miMATRIX` element (without its tag).
fn matrix(name: &str, a: &MatArray) -> std::result::Result<Vec<u8>, String> {
    a.check_len()?;
    if a.dims.len() < 2 {
        return Err(format!("dims {:?}: MATLAB arrays have at least two", a.dims));
    }
    let (class, flags) = match &a.data {
        MatData::Double(_) => (MX_DOUBLE, 0),
        MatData::Single(_) => (MX_SINGLE, 0),
        MatData::Int8(_) => (MX_INT8, 0),
        MatData::UInt8(_) => (MX_UINT8, 0),
        MatData::Logical(_) => (MX_UINT8, FLAG_LOGICAL),
        MatData::Int16(_) => (MX_INT16, 0),
        MatData::UInt16(_) => (MX_UINT16, 0),
        MatData::Int32(_) => (MX_INT32, 0),
        MatData::UInt32(_) => (MX_UINT32, 0),
        MatData::Int64(_) => (MX_INT64, 0),
        MatData::UInt64(_) => (MX_UINT64, 0),
        MatData::Char(_) => (MX_CHAR, 0),
        MatData::Cell(_) => (MX_CELL, 0),
        MatData::Struct { .. } => (MX_STRUCT, 0),
    };
    let mut out = Vec::new();
    element(&mut out, MI_UINT32, &[(class as u32 | flags).to_le_bytes(), [0; 4]].concat());
    let dims: Vec<i32> = a
        .dims
        .iter()
        .map(|&d| i32::try_from(d).map_err(|_| format!("dim {d} too large")))
        .collect::<std::result::Result<_, _>>()?;
    element(&mut out, MI_INT32, &le_bytes(&dims, i32::to_le_bytes));
    element(&mut out, MI_INT8, name.as_bytes());
    match &a.data {
        MatData::Double(v) => element(&mut out, MI_DOUBLE, &le_bytes(v, f64::to_le_bytes)),
        MatData::Single(v) => element(&mut out, MI_SINGLE, &le_bytes(v, f32::to_le_bytes)),
        MatData::Int8(v) => element(&mut out, MI_INT8, &le_bytes(v, i8::to_le_bytes)),
        MatData::UInt8(v) | MatData::Logical(v) => element(&mut out, MI_UINT8, v),
        MatData::Int16(v) => element(&mut out, MI_INT16, &le_bytes(v, i16::to_le_bytes)),
        MatData::UInt16(v) | MatData::Char(v) => element(&mut out, MI_UINT16, &le_bytes(v, u16::to_le_bytes)),
        MatData::Int32(v) => element(&mut out, MI_INT32, &le_bytes(v, i32::to_le_bytes)),
        MatData::UInt32(v) => element(&mut out, MI_UINT32, &le_bytes(v, u32::to_le_bytes)),
        MatData::Int64(v) => element(&mut out, MI_INT64, &le_bytes(v, i64::to_le_bytes)),
        MatData::UInt64(v) => element(&mut out, MI_UINT64, &le_bytes(v, u64::to_le_bytes)),
        MatData::Cell(items) => {
            for item in items {
                element(&mut out, MI_MATRIX, &matrix("", item)?);
            }
        }
        MatData::Struct { fields, values } => {
            element(&mut out, MI_INT32, &(FIELD_SLOT as i32).to_le_bytes());
            let mut names = vec![0u8; FIELD_SLOT * fields.len()];
            for (i, f) in fields.iter().enumerate() {
                if !is_identifier(f) {
                    return Err(format!("field name {f:?} is not a MATLAB identifier"));
                }
                names[i * FIELD_SLOT..i * FIELD_SLOT + f.len()].copy_from_slice(f.as_bytes());
            }
            element(&mut out, MI_INT8, &names);
            if values.len() != a.len() * fields.len() {
                return Err(format!(
                    "{} struct values for {} elements x {} fields",
                    values.len(),
                    a.len(),
                    fields.len()
                ));
            }
            for v in values {
                element(&mut out, MI_MATRIX, &matrix("", v)?);
            }
        }
    }
    Ok(out)
}
