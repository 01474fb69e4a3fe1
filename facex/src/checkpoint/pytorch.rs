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

/// How many top-level keys an error names, and how many characters of each.
const MAX_NAMED_KEYS: usize = 20;
const MAX_KEY_CHARS: usize = 64;

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
        let dtype = *dtypes.get(&**k).ok_or_else(|| bad(pos4, &format!("storage {k} is never used")))?;
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
        blobs.insert(k.to_string(), start..end);
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
    // Named in errors: the first few keys, each cut short (a hostile dict may hold many, long).
    let top_keys = || {
        let mut names: Vec<String> = root
            .iter()
            .take(MAX_NAMED_KEYS)
            .map(|(k, _)| {
                let name = match k {
                    Value::Str(s) => s.to_string(),
                    other => format!("{other:?}"),
                };
                match name.char_indices().nth(MAX_KEY_CHARS) {
                    Some((cut, _)) => format!("{}...", &name[..cut]),
                    None => name,
                }
            })
            .collect();
        if root.len() > MAX_NAMED_KEYS {
            names.push(format!("... {} in all", root.len()));
        }
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
        sd.insert(name.to_string(), materialize(path, name, t, data)?);
    }
    Ok(sd)
}

/// Copies one tensor's elements out of its storage blob (strided views become contiguous).
fn materialize(path: &Path, name: &str, t: &TensorRef, blob: &[u8]) -> Result<Tensor> {
    let es = t.storage.dtype.size_in_bytes();
    let empty = t.shape.contains(&0);
    // A view whose strides overlap (stride 0: `expand`) can claim any number of elements over a
    // one-element storage; making it contiguous would reserve them all. A tensor may hold at
    // most the elements its storage holds in the file.
    let numel = t.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
    let held = blob.len() / es;
    if numel.is_none_or(|n| n > held) {
        return Err(CheckpointError::NotStateDict {
            path: path.into(),
            msg: format!(
                "tensor `{name}` of size {:?} claims more elements than its storage {} holds ({held}): \
                 a broadcast view is not a weight",
                t.shape, t.storage.key
            ),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_archive::{zip, zip_claiming, Pickle};

    /// `{'w': _rebuild_tensor_v2(storage(FloatStorage, '0', numel), 0, size, stride)}`, every
    /// int a LONG1 of 8 bytes.
    fn one_tensor_pickle(numel: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(&[0x80, 2, b'}']).short_str("w").global("torch._utils", "_rebuild_tensor_v2").op(b"((");
        p.short_str("storage").global("torch", "FloatStorage").short_str("0").short_str("cpu").long(numel);
        p.op(b"tQ").long(0).long_tuple(size).long_tuple(stride).op(b"\x89tRs.");
        p.0
    }

    fn load(bytes: &[u8]) -> String {
        load_pytorch_from_bytes(bytes, "hostile.pt", None).unwrap_err().to_string()
    }

    #[test]
    fn small_tensor_loads() {
        let pkl = one_tensor_pickle(4, &[2, 2], &[2, 1]);
        let data: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|x| x.to_le_bytes()).collect();
        let sd = load_pytorch_from_bytes(&zip(&[("a/data.pkl", &pkl), ("a/data/0", &data)]), "ok.pt", None);
        assert_eq!(sd.unwrap().get("w").unwrap().shape(), &[2, 2]);
    }

    /// A zip entry claiming 100 GB (zip64) in a file of a few hundred bytes: refused while the
    /// entries are listed, naming the entry, before any of it is read.
    #[test]
    fn zip_entry_claiming_100_gb_is_refused() {
        let pkl = one_tensor_pickle(4, &[2, 2], &[2, 1]);
        let data = [0u8; 16];
        let bytes = zip_claiming(&[("a/data.pkl", &pkl), ("a/data/0", &data)], Some(("a/data/0", 100 << 30)));
        let e = load(&bytes);
        assert!(e.contains("hostile.pt") && e.contains("a/data/0"), "{e}");
    }

    /// A storage claiming 10^12 elements, read by a 10^6 x 10^6 tensor, with 16 bytes present:
    /// refused by name before the copy (4 TB).
    #[test]
    fn storage_claiming_1e12_elements_is_refused() {
        let pkl = one_tensor_pickle(1_000_000_000_000, &[1_000_000, 1_000_000], &[1_000_000, 1]);
        let e = load(&zip(&[("a/data.pkl", &pkl), ("a/data/0", &[0u8; 16])]));
        assert!(e.contains("hostile.pt") && e.contains("tensor `w`") && e.contains("holds (4)"), "{e}");
    }

    /// A broadcast view (strides 0) of one element claiming 10^12 elements: inside its storage as
    /// the pickle checks it, but making it contiguous would reserve 4 TB. Refused by name.
    #[test]
    fn broadcast_view_of_1e12_elements_is_refused() {
        let pkl = one_tensor_pickle(1, &[1_000_000, 1_000_000], &[0, 0]);
        let e = load(&zip(&[("a/data.pkl", &pkl), ("a/data/0", &[0u8; 4])]));
        assert!(e.contains("hostile.pt") && e.contains("tensor `w` of size [1000000, 1000000]"), "{e}");
        assert!(e.contains("holds (1)"), "{e}");
    }

    /// Legacy format: the 8-byte element count before a storage's data claims 10^12 elements.
    #[test]
    fn legacy_storage_count_claiming_1e12_elements_is_refused() {
        let mut bytes = include_bytes!("../../models/mtcnn/pnet.pt").to_vec();
        assert!(load_pytorch_from_bytes(&bytes, "pnet.pt", None).is_ok());
        // Magic, protocol, sys info, the object, the storage keys: then the first storage.
        let mut pos = 0;
        for _ in 0..5 {
            pos = unpickle(&bytes, pos, Path::new("pnet.pt")).unwrap().1;
        }
        bytes[pos..pos + 8].copy_from_slice(&1_000_000_000_000u64.to_le_bytes());
        let e = load(&bytes);
        assert!(e.contains("hostile.pt: truncated: storage"), "{e}");
    }

    /// A deep structure (refused by the pickle reader) and a self-referential top-level dict
    /// (`d['state_dict'] = d`: not a state dict, said so with its keys) in a torch.save zip.
    #[test]
    fn deep_and_self_referential_pickles_are_refused() {
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b'(', 5000));
        let e = load(&zip(&[("a/data.pkl", &deep)]));
        assert!(e.contains("hostile.pt: bad pickle") && e.contains("nested deeper"), "{e}");
        let mut selfref = vec![0x80, 2, b'}', b'q', 0, 0x8c, 10];
        selfref.extend(b"state_dict");
        selfref.extend([b'h', 0, b's', b'.']);
        let e = load(&zip(&[("a/data.pkl", &selfref)]));
        assert!(e.contains("hostile.pt: not a state dict") && e.contains("keys: state_dict"), "{e}");
    }

    /// An error names at most 20 top-level keys, each cut at 64 characters: a dict of 100 000
    /// references to one 1 MB key would otherwise make a 100 GB message.
    #[test]
    fn error_messages_stay_short() {
        let mut p = vec![0x80, 2, b'}', b'(', b'X'];
        p.extend((1u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'k', 1 << 20));
        p.extend([b'q', 0, b'N']);
        for _ in 0..100_000 {
            p.extend([b'h', 0, b'N']);
        }
        p.extend(b"u.");
        let e = load(&zip(&[("a/data.pkl", &p)]));
        assert!(e.len() < 3000 && e.contains("100001 in all"), "{} bytes: {}", e.len(), &e[..200]);
    }
}
