//! safetensors: load through the `safetensors` crate (memory-mapped), save with a small writer of
//! our own so that the file keeps the state dict's order (the crate's writer reorders tensors).
//! Loading returns tensors in the order of their data in the file, so a save/load round trip keeps
//! the order. dtypes: f32, f16, bf16, i64 and u8 (bool -> u8, f64 -> f32, i32/i16/i8 -> i64).

use super::error::{CheckpointError, Result};
use super::pytorch::Mapped;
use super::state_dict::StateDict;
use ::safetensors::{Dtype, SafeTensors};
use half::{bf16, f16};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use tensor::{CpuStorage, DType, Layout, Tensor};

fn st_err(path: &Path, msg: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Safetensors { path: path.into(), msg: msg.to_string() }
}

pub fn load_safetensors(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let mapped = Mapped::open(path)?;
    load_safetensors_from_bytes(mapped.bytes(), path)
}

/// `load_safetensors` on bytes already in memory; `origin` names them in errors.
pub fn load_safetensors_from_bytes(bytes: &[u8], origin: impl AsRef<Path>) -> Result<StateDict> {
    let path = origin.as_ref();
    check_claims(bytes, path)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err(path, format!("{e:?}")))?;
    let mut views: Vec<_> = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut sd = StateDict::new();
    for (name, view) in views {
        let storage = convert(view.dtype(), view.data())
            .ok_or_else(|| st_err(path, format!("tensor `{name}` has unsupported dtype {:?}", view.dtype())))?;
        if storage.len() != view.shape().iter().product::<usize>() {
            return Err(st_err(path, format!("tensor `{name}`: data does not match shape {:?}", view.shape())));
        }
        sd.insert(name, Tensor::from_storage(storage, Layout::contiguous(view.shape())));
    }
    Ok(sd)
}

/// The format's limit on the JSON header (the `safetensors` crate's `MAX_HEADER_SIZE`).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Every size the header claims, against the bytes the file holds, before anything is reserved
/// and with the tensor named: the header length, and each tensor's shape times its dtype's size.
/// (The crate checks the same, but its errors name no tensor.) A header that is not JSON, or a
/// tensor entry without a known dtype or a shape, is left to the crate to report.
fn check_claims(bytes: &[u8], path: &Path) -> Result<()> {
    let Some(len) = bytes.get(..8) else { return Ok(()) };
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
    let after = bytes.len() as u64 - 8;
    if len > after.min(MAX_HEADER_BYTES) {
        return Err(st_err(
            path,
            format!(
                "the header claims {len} bytes; the file holds {after} after the length (and the format allows {MAX_HEADER_BYTES})"
            ),
        ));
    }
    let data = after - len;
    let Ok(header) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes[8..8 + len as usize])
    else {
        return Ok(());
    };
    for (name, info) in &header {
        let (Some(dtype), Some(shape)) =
            (info.get("dtype").and_then(|d| d.as_str()), info.get("shape").and_then(|s| s.as_array()))
        else {
            continue;
        };
        let size: u64 = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
            _ => continue,
        };
        let Some(dims) = shape.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>() else { continue };
        let claimed = if dims.contains(&0) { Some(0) } else { dims.iter().try_fold(size, |a, &d| a.checked_mul(d)) };
        if claimed.is_none_or(|c| c > data) {
            let claimed = claimed.map_or("more than 2^64".to_string(), |c| c.to_string());
            return Err(st_err(
                path,
                format!("tensor `{name}`: shape {dims:?} of {dtype} claims {claimed} bytes; the file holds {data} bytes of data"),
            ));
        }
        // A file cut short (a copy or download that stopped) keeps a whole header whose last
        // tensors lie past the end: say so, naming one of them.
        let end = info.get("data_offsets").and_then(|o| o.as_array()).and_then(|o| o.get(1)).and_then(|e| e.as_u64());
        if let Some(end) = end.filter(|&end| end > data) {
            return Err(st_err(
                path,
                format!("tensor `{name}`'s data ends at byte {end}; the file holds {data} bytes of data (truncated?)"),
            ));
        }
    }
    Ok(())
}

fn convert(dtype: Dtype, b: &[u8]) -> Option<CpuStorage> {
    fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.as_chunks::<N>().0.iter().map(|c| f(*c)).collect()
    }
    Some(match dtype {
        Dtype::F32 => CpuStorage::F32(chunks(b, f32::from_le_bytes)),
        Dtype::F64 => CpuStorage::F32(chunks(b, |c| f64::from_le_bytes(c) as f32)),
        Dtype::F16 => CpuStorage::F16(chunks(b, |c| f16::from_bits(u16::from_le_bytes(c)))),
        Dtype::BF16 => CpuStorage::BF16(chunks(b, |c| bf16::from_bits(u16::from_le_bytes(c)))),
        Dtype::I64 => CpuStorage::I64(chunks(b, i64::from_le_bytes)),
        Dtype::I32 => CpuStorage::I64(chunks(b, |c| i32::from_le_bytes(c) as i64)),
        Dtype::I16 => CpuStorage::I64(chunks(b, |c| i16::from_le_bytes(c) as i64)),
        Dtype::I8 => CpuStorage::I64(b.iter().map(|&x| x as i8 as i64).collect()),
        Dtype::U8 | Dtype::BOOL => CpuStorage::U8(b.to_vec()),
        _ => return None,
    })
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::U8 => "U8",
    }
}

/// Writes the state dict as safetensors, tensors in the state dict's order, atomically (a
/// temporary file renamed into place: an interrupted save leaves the previous file).
pub fn save_safetensors(path: impl AsRef<Path>, sd: &StateDict) -> Result<()> {
    save_safetensors_with_metadata(path, sd, &BTreeMap::new())
}

/// `save_safetensors` with extra `__metadata__` entries (string to string, as the format allows).
pub fn save_safetensors_with_metadata(
    path: impl AsRef<Path>,
    sd: &StateDict,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let tensors: Vec<(&str, Tensor)> = sd.iter().map(|(k, t)| (k, t.contiguous())).collect();
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    for (k, v) in metadata {
        meta.insert(k.clone(), v.clone().into());
    }
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let n = t.elem_count() * t.dtype().size_in_bytes();
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype_name(t.dtype()), "shape": t.shape(), "data_offsets": [offset, offset + n] }),
        );
        offset += n;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| st_err(path, e))?;
    // The data starts 8-byte aligned: pad the header with spaces, as the format allows.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut storages = Vec::with_capacity(tensors.len());
    for (_, t) in &tensors {
        storages.push(t.cpu_storage().map_err(|e| st_err(path, e))?);
    }
    crate::atomic::write_atomic(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        for ((_, t), s) in tensors.iter().zip(&storages) {
            let es = t.dtype().size_in_bytes();
            // `contiguous()` may keep a longer buffer with an offset: write only this tensor's range.
            let r = t.layout().contiguous_range().unwrap_or(0..0);
            w.write_all(&s.as_bytes()[r.start * es..r.end * es])?;
        }
        Ok(())
    })
    .map_err(|e| CheckpointError::io(path, e))
}

/// The `__metadata__` of a safetensors file in memory.
pub fn safetensors_metadata(bytes: &[u8], origin: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    check_claims(bytes, origin.as_ref())?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| st_err(origin.as_ref(), format!("{e:?}")))?;
    Ok(meta.metadata().clone().map(|m| m.into_iter().collect()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    fn err(bytes: &[u8]) -> String {
        load_safetensors_from_bytes(bytes, "hostile.safetensors").unwrap_err().to_string()
    }

    #[test]
    fn small_file_loads() {
        let b = file(
            r#"{"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"e":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}"#,
            &[0; 8],
        );
        let sd = load_safetensors_from_bytes(&b, "ok.safetensors").unwrap();
        assert_eq!(sd.get("w").unwrap().shape(), &[1, 2]);
        assert_eq!(sd.get("e").unwrap().shape(), &[0]);
    }

    /// A header claiming 10^12 elements (and one whose shape overflows u64) with 4 bytes of
    /// data: refused naming the tensor, before the crate or we reserve anything.
    #[test]
    fn header_claiming_1e12_elements_is_refused() {
        let b = file(r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4]}}"#, &[0; 4]);
        let e = err(&b);
        assert!(e.contains("hostile.safetensors") && e.contains("tensor `w`"), "{e}");
        assert!(e.contains("claims 4000000000000 bytes; the file holds 4 bytes"), "{e}");
        let b = file(r#"{"v":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, &[0; 4]);
        assert!(err(&b).contains("tensor `v`: shape [4294967296, 4294967296] of F64 claims more than 2^64"));
    }

    /// A file cut short after its header: refused naming the first tensor past the end, by the
    /// loader and by the metadata reader (`--resume` reads the metadata first).
    #[test]
    fn truncated_file_names_the_tensor_past_its_end() {
        let b = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            &[0; 12],
        );
        let e = err(&b);
        assert!(e.contains("hostile.safetensors") && e.contains("tensor `b`'s data ends at byte 16"), "{e}");
        assert!(e.contains("holds 12 bytes of data"), "{e}");
        let e = safetensors_metadata(&b, "cut.ckpt").unwrap_err().to_string();
        assert!(e.contains("cut.ckpt") && e.contains("tensor `b`"), "{e}");
        let whole = file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
        assert!(safetensors_metadata(&whole, "ok.ckpt").unwrap().is_empty());
    }

    /// The 8-byte header length claiming 10^12 bytes in a 20-byte file.
    #[test]
    fn header_length_beyond_the_file_is_refused() {
        let mut b = 1_000_000_000_000u64.to_le_bytes().to_vec();
        b.extend(b"{}  abcdefghij");
        let e = err(&b);
        assert!(e.contains("hostile.safetensors") && e.contains("header claims 1000000000000 bytes"), "{e}");
    }
}
