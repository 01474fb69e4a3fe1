//! A restricted pickle reader: a small VM for the opcodes `torch.save` emits (protocol 2, plus the
//! few protocol 3/4 additions). It executes nothing. `GLOBAL`/`STACK_GLOBAL` resolve names against an
//! allow-list: the constructors a state dict needs (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, `torch.*Storage`) and a few
//! inert data classes that training scripts put beside the weights (argparse.Namespace, numpy
//! scalars), which become opaque values that can never turn into tensors. Any other global is an
//! error naming it.
//!
//! Tensors are not read here: `_rebuild_tensor_v2` yields a `TensorRef` (storage key, dtype, offset,
//! shape, strides), so the caller copies only the tensors it keeps.
//!
//! The pieces: this file holds the values and the entry point [`unpickle`]; `vm.rs` the machine's
//! state and the calls it may make (globals, persistent ids, `_rebuild_tensor_v2`, REDUCE);
//! `opcodes.rs` the opcode loop.

use super::error::Result;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

mod opcodes;
#[cfg(test)]
mod tests;
mod vm;

use vm::Vm;

/// Element type of a PyTorch storage (`torch.FloatStorage` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => StorageDType::F64,
            "FloatStorage" => StorageDType::F32,
            "HalfStorage" => StorageDType::F16,
            "BFloat16Storage" => StorageDType::BF16,
            "LongStorage" => StorageDType::I64,
            "IntStorage" => StorageDType::I32,
            "ShortStorage" => StorageDType::I16,
            "CharStorage" => StorageDType::I8,
            "ByteStorage" => StorageDType::U8,
            "BoolStorage" => StorageDType::Bool,
            _ => return None,
        })
    }

    pub(crate) fn size_in_bytes(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }
}

/// A persistent-id storage reference: which blob, what type, how many elements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub dtype: StorageDType,
    pub key: String,
    /// Element offset into the blob (non-zero only for legacy storage views).
    pub base: usize,
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it; its bounds are checked against the storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(StorageDType),
    /// A harmless data class; calling it gives an opaque value.
    Inert(String),
}

/// A pickle value. Containers live in the arena so that memo entries alias them, as in Python;
/// strings and bytes are shared, so that copying one (BINGET, DUP) costs the same whatever its
/// length: a pickle of n bytes holds O(n) memory however often it repeats a long string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, as little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Obj(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
    Opaque(String),
}

/// The result of one pickle: the root value and the arena it points into.
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub arena: Vec<Obj>,
    pub root: Value,
}

impl Unpickled {
    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.arena.get(*i),
            _ => None,
        }
    }

    /// The entries of a dict value (None when it is not a dict).
    pub fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.obj(v)? {
            Obj::Dict(items) => Some(items),
            _ => None,
        }
    }

    /// The last value stored under a string key (Python's dict keeps the last assignment).
    pub fn dict_get<'a>(&'a self, v: &Value, key: &str) -> Option<&'a Value> {
        self.dict(v)?.iter().rev().find(|(k, _)| matches!(k, Value::Str(s) if &**s == key)).map(|(_, v)| v)
    }

    /// Every storage referenced anywhere, in first-seen order (legacy files need their dtypes).
    pub fn storages(&self) -> impl Iterator<Item = &StorageRef> {
        self.arena.iter().filter_map(|o| match o {
            Obj::Storage(s) => Some(s),
            Obj::Tensor(t) => Some(&t.storage),
            _ => None,
        })
    }
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", n) => Global::StorageType(StorageDType::from_name(n)?),
        ("argparse", "Namespace")
        | ("numpy", "dtype")
        | ("numpy", "ndarray")
        | ("numpy.core.multiarray", "scalar" | "_reconstruct")
        | ("numpy._core.multiarray", "scalar" | "_reconstruct")
        | ("_codecs", "encode")
        | ("torch.torch_version", "TorchVersion") => Global::Inert(format!("{module}.{name}")),
        _ => return None,
    })
}

const MAX_RANK: usize = 64;
/// How deeply MARKs may nest. torch.save nests a few levels (a dict of tuples of tuples); nothing
/// here recurses over a structure (containers live in a flat arena, so a deep or
/// self-referential one costs memory linear in the pickle), but a depth no checkpoint reaches is
/// refused by name rather than carried along.
pub(crate) const MAX_MARK_DEPTH: usize = 1000;

/// Runs one pickle starting at `start`; returns the result and the offset just after STOP.
pub(crate) fn unpickle(data: &[u8], start: usize, path: &Path) -> Result<(Unpickled, usize)> {
    let mut vm = Vm {
        data,
        pos: start,
        op_pos: start,
        path,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Vec::new(),
    };
    let root = vm.run()?;
    Ok((Unpickled { arena: vm.arena, root }, vm.pos))
}
