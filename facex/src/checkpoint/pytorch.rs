//! PyTorch checkpoints: the zip format of `torch.save` (PyTorch >= 1.6) and the legacy format
//! (a sequence of pickles followed by raw storages; the MTCNN weights use it).
//!
//! The file is memory-mapped; the pickle yields tensor references, and only the tensors of the
//! chosen state dict are copied out of the map (optimizer state and other entries cost nothing).
//! dtype mapping to the tensor crate: float64 -> f32 (rounded), int32/int16/int8 -> i64,
//! bool -> u8; f32, f16, bf16, i64 and u8 are kept as they are.

use super::error::{CheckpointError, Result};
use super::pickle::{unpickle, Obj, StorageDType, TensorRef, Unpickled, Value};
use super::state_dict::StateDict;
use half::{bf16, f16};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use tensor::{CpuStorage, Layout, Tensor};

/// The first bytes of a zip file.
pub(crate) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// PROTO 2, LONG1 of 10 bytes: the legacy format's magic number 0x1950a86a20f9469cfc6c.
pub(crate) const LEGACY_MAGIC: &[u8] =
    &[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

/// The key under which the official FaceXFormer checkpoint keeps its weights.
pub const OFFICIAL_KEY: &str = "state_dict_backbone";

/// Memory-maps a file (an empty file gives an empty slice).
pub(crate) struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    pub(crate) fn open(path: &Path) -> Result<Mapped> {
        let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        let len = file.metadata().map_err(|e| CheckpointError::io(path, e))?.len();
        if len == 0 {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the map is read-only; a checkpoint modified while we read it gives wrong
        // numbers or an error, never unsoundness in our own code, which only copies bytes out.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
        Ok(Mapped { map: Some(map) })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// Loads the state dict of a PyTorch checkpoint. With `key`, the top-level dict's entry of that
/// name; without, `state_dict_backbone` when present, else the top-level dict when it is a state
/// dict itself (the MTCNN files), else `state_dict` or `model`.
pub fn load_pytorch(path: impl AsRef<Path>, key: Option<&str>) -> Result<StateDict> {
    let path = path.as_ref();
    let mapped = Mapped::open(path)?;
    load_pytorch_from_bytes(mapped.bytes(), path, key)
}

/// `load_pytorch` on bytes already in memory (e.g. `include_bytes!`); `origin` names them in errors.
pub fn load_pytorch_from_bytes(bytes: &[u8], origin: impl AsRef<Path>, key: Option<&str>) -> Result<StateDict> {
    let path = origin.as_ref();
    if bytes.starts_with(ZIP_MAGIC) {
        load_zip(path, bytes, key)
    } else if bytes.starts_with(LEGACY_MAGIC) {
        load_legacy(path, bytes, key)
    } else if bytes.len() < LEGACY_MAGIC.len() && (ZIP_MAGIC.starts_with(bytes) || LEGACY_MAGIC.starts_with(bytes)) {
        Err(CheckpointError::Truncated { path: path.into(), what: "file header".into(), offset: bytes.len() as u64 })
    } else {
        Err(CheckpointError::NotStateDict {
            path: path.into(),
            msg: "neither a torch.save zip archive nor a legacy torch.save file".into(),
        })
    }
}

/// A stored blob in the mapped file.
struct Blob {
    range: Range<usize>,
    compressed: bool,
}

fn zip_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Zip { path: path.into(), msg: e.to_string() }
}

fn load_zip(path: &Path, bytes: &[u8], key: Option<&str>) -> Result<StateDict> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| zip_err(path, e))?;
    let mut entries: HashMap<String, Blob> = HashMap::new();
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(|e| zip_err(path, e))?;
        let start = usize::try_from(f.data_start()).unwrap_or(usize::MAX);
        let len = usize::try_from(f.compressed_size()).unwrap_or(usize::MAX);
        let end = start.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| CheckpointError::Truncated {
            path: path.into(),
            what: format!("zip entry {}", f.name()),
            offset: bytes.len() as u64,
        })?;
        let compressed = f.compression() != zip::CompressionMethod::Stored || f.size() != f.compressed_size();
        entries.insert(f.name().to_string(), Blob { range: start..end, compressed });
    }
    let entry = |name: &str| -> Result<&[u8]> {
        let blob = entries.get(name).ok_or_else(|| zip_err(path, format!("entry {name} is missing")))?;
        if blob.compressed {
            return Err(zip_err(path, format!("entry {name} is compressed; torch.save writes stored entries")));
        }
        Ok(&bytes[blob.range.clone()])
    };
    // `<archive>/data.pkl`: the archive folder is named after the file torch.save wrote.
    let mut pkl_names: Vec<&String> = entries.keys().filter(|n| n.ends_with("data.pkl")).collect();
    pkl_names.sort_by_key(|n| n.len());
    let pkl_name = pkl_names.first().ok_or_else(|| zip_err(path, "no data.pkl entry"))?.to_string();
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if let Ok(order) = entry(&format!("{prefix}byteorder")) {
        if order != b"little" {
            return Err(zip_err(path, format!("byte order {:?} is not supported", String::from_utf8_lossy(order))));
        }
    }
    let pkl = entry(&pkl_name)?;
    let (u, _) = unpickle(pkl, 0, path)?;
    let chosen = select_state_dict(path, &u, key)?;
    build_state_dict(path, &u, chosen, |storage_key| entry(&format!("{prefix}data/{storage_key}")))
}

fn load_legacy(path: &Path, bytes: &[u8], key: Option<&str>) -> Result<StateDict> {
    let bad = |offset: usize, msg: &str| CheckpointError::BadPickle { path: path.into(), offset, msg: msg.into() };
    let (_magic, pos) = unpickle(bytes, 0, path)?;
    let (proto, pos2) = unpickle(bytes, pos, path)?;
    if proto.root != Value::Int(LEGACY_PROTOCOL) {
        return Err(bad(pos, "legacy protocol version is not 1001"));
    }
    let (sys_info, pos3) = unpickle(bytes, pos2, path)?;
    if matches!(sys_info.dict_get(&sys_info.root, "little_endian"), Some(Value::Bool(false))) {
        return Err(bad(pos2, "big-endian checkpoints are not supported"));
    }
    let (u, pos4) = unpickle(bytes, pos3, path)?;
    let (keys, mut pos) = unpickle(bytes, pos4, path)?;
    let Some(Obj::List(key_list)) = keys.obj(&keys.root) else {
        return Err(bad(pos4, "the storage key list is not a list"));
    };
    let dtypes: HashMap<&str, StorageDType> = u.storages().map(|s| (s.key.as_str(), s.dtype)).collect();
    // The storages follow, in key-list order: an 8-byte element count, then the raw elements.
    let mut blobs: HashMap<String, Range<usize>> = HashMap::new();
    for k in key_list {
        let Value::Str(k) = k else { return Err(bad(pos4, "a storage key is not a string")) };
        let dtype = *dtypes.get(k.as_str()).ok_or_else(|| bad(pos4, &format!("storage {k} is never used")))?;
        let truncated = || CheckpointError::Truncated {
            path: path.into(),
            what: format!("storage {k}"),
            offset: bytes.len() as u64,
        };
        let header = bytes.get(pos..pos + 8).ok_or_else(truncated)?;
        let numel = u64::from_le_bytes(header.try_into().unwrap_or_default());
        let len =
            usize::try_from(numel).ok().and_then(|n| n.checked_mul(dtype.size_in_bytes())).ok_or_else(truncated)?;
        let start = pos + 8;
        let end = start.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(truncated)?;
        blobs.insert(k.clone(), start..end);
        pos = end;
    }
    let chosen = select_state_dict(path, &u, key)?;
    build_state_dict(path, &u, chosen, |storage_key| {
        blobs
            .get(storage_key)
            .map(|r| &bytes[r.clone()])
            .ok_or_else(|| bad(pos4, &format!("storage {storage_key} is not in the file")))
    })
}

/// True when every value of the dict is a tensor (and it has at least one).
fn is_state_dict(u: &Unpickled, items: &[(Value, Value)]) -> bool {
    !items.is_empty()
        && items.iter().all(|(k, v)| matches!(k, Value::Str(_)) && matches!(u.obj(v), Some(Obj::Tensor(_))))
}

fn select_state_dict<'u>(path: &Path, u: &'u Unpickled, key: Option<&str>) -> Result<&'u [(Value, Value)]> {
    let not = |msg: String| CheckpointError::NotStateDict { path: path.into(), msg };
    let root = u.dict(&u.root).ok_or_else(|| not("the top-level object is not a dict".into()))?;
    let top_keys = || {
        let names: Vec<String> = root
            .iter()
            .map(|(k, _)| match k {
                Value::Str(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        names.join(", ")
    };
    if let Some(key) = key {
        let v = u.dict_get(&u.root, key).ok_or_else(|| not(format!("no key `{key}` (keys: {})", top_keys())))?;
        return u.dict(v).ok_or_else(|| not(format!("`{key}` is not a dict")));
    }
    if let Some(d) = u.dict_get(&u.root, OFFICIAL_KEY).and_then(|v| u.dict(v)) {
        return Ok(d);
    }
    if is_state_dict(u, root) {
        return Ok(root);
    }
    for k in ["state_dict", "model"] {
        if let Some(d) = u.dict_get(&u.root, k).and_then(|v| u.dict(v)).filter(|d| is_state_dict(u, d)) {
            return Ok(d);
        }
    }
    Err(not(format!("no `{OFFICIAL_KEY}` and the top-level dict is not a state dict (keys: {})", top_keys())))
}

fn build_state_dict<'b>(
    path: &Path,
    u: &Unpickled,
    items: &[(Value, Value)],
    blob: impl Fn(&str) -> Result<&'b [u8]>,
) -> Result<StateDict> {
    let mut sd = StateDict::new();
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(CheckpointError::NotStateDict { path: path.into(), msg: format!("key {k:?} is not a string") });
        };
        let Some(Obj::Tensor(t)) = u.obj(v) else {
            return Err(CheckpointError::NotStateDict { path: path.into(), msg: format!("`{name}` is not a tensor") });
        };
        let data = blob(&t.storage.key)?;
        sd.insert(name.clone(), materialize(path, name, t, data)?);
    }
    Ok(sd)
}

/// Copies one tensor's elements out of its storage blob (strided views become contiguous).
fn materialize(path: &Path, name: &str, t: &TensorRef, blob: &[u8]) -> Result<Tensor> {
    let es = t.storage.dtype.size_in_bytes();
    let empty = t.shape.contains(&0);
    // Element range this tensor touches; the pickle reader checked it lies inside the storage.
    let extent = if empty {
        0
    } else {
        t.offset + t.shape.iter().zip(&t.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    };
    let first = if empty { 0 } else { t.storage.base + t.offset };
    let last = t.storage.base + extent;
    let range = first.checked_mul(es).zip(last.checked_mul(es)).filter(|(_, e)| *e <= blob.len());
    let Some((b0, b1)) = range else {
        return Err(CheckpointError::Truncated {
            path: path.into(),
            what: format!("storage {} of tensor `{name}`", t.storage.key),
            offset: blob.len() as u64,
        });
    };
    let storage = convert(t.storage.dtype, &blob[b0..b1]);
    let layout = if empty {
        Layout::contiguous(&t.shape)
    } else {
        Layout { shape: t.shape.clone(), strides: t.strides.clone(), offset: 0 }
    };
    let tensor = Tensor::from_storage(storage, layout);
    // A contiguous layout over exactly the copied range needs no second copy.
    Ok(if tensor.is_contiguous() { tensor } else { tensor.contiguous() })
}

/// Little-endian storage bytes to the tensor crate's dtypes.
fn convert(dtype: StorageDType, b: &[u8]) -> CpuStorage {
    fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.as_chunks::<N>().0.iter().map(|c| f(*c)).collect()
    }
    match dtype {
        StorageDType::F32 => CpuStorage::F32(chunks(b, f32::from_le_bytes)),
        StorageDType::F64 => CpuStorage::F32(chunks(b, |c| f64::from_le_bytes(c) as f32)),
        StorageDType::F16 => CpuStorage::F16(chunks(b, |c| f16::from_bits(u16::from_le_bytes(c)))),
        StorageDType::BF16 => CpuStorage::BF16(chunks(b, |c| bf16::from_bits(u16::from_le_bytes(c)))),
        StorageDType::I64 => CpuStorage::I64(chunks(b, i64::from_le_bytes)),
        StorageDType::I32 => CpuStorage::I64(chunks(b, |c| i32::from_le_bytes(c) as i64)),
        StorageDType::I16 => CpuStorage::I64(chunks(b, |c| i16::from_le_bytes(c) as i64)),
        StorageDType::I8 => CpuStorage::I64(b.iter().map(|&x| x as i8 as i64).collect()),
        StorageDType::U8 | StorageDType::Bool => CpuStorage::U8(b.to_vec()),
    }
}
