//! The pickle machine's state and its calls: stack, marks, memo and arena; globals resolved
//! against the allow-list, persistent ids (storages), `_rebuild_tensor_v2` and REDUCE.

use super::{resolve_global, Global, Obj, StorageRef, TensorRef, Value, MAX_RANK};
use crate::checkpoint::error::{CheckpointError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub(super) struct Vm<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    /// Offset of the opcode being executed (for errors).
    pub(super) op_pos: usize,
    pub(super) path: &'a Path,
    pub(super) stack: Vec<Value>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u32, Value>,
    pub(super) arena: Vec<Obj>,
}

impl<'a> Vm<'a> {
    pub(super) fn path(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    pub(super) fn bad(&self, msg: impl Into<String>) -> CheckpointError {
        CheckpointError::BadPickle { path: self.path(), offset: self.op_pos, msg: msg.into() }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(CheckpointError::Truncated {
                path: self.path(),
                what: format!("pickle opcode at offset {}", self.op_pos),
                offset: self.data.len() as u64,
            }),
        }
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    pub(super) fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.bad(format!("length {n} too large")))
    }

    /// One text line (for GLOBAL), without its newline.
    pub(super) fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(CheckpointError::Truncated {
                path: self.path(),
                what: format!("GLOBAL name at offset {}", self.op_pos),
                offset: self.data.len() as u64,
            });
        };
        let line = self.take(n + 1)?;
        self.utf8(&line[..n])
    }

    pub(super) fn utf8(&self, b: &[u8]) -> Result<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not valid UTF-8"))
    }

    pub(super) fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    pub(super) fn new_obj(&mut self, o: Obj) -> Value {
        self.arena.push(o);
        Value::Obj(self.arena.len() - 1)
    }

    pub(super) fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow"))
    }

    pub(super) fn top(&self) -> Result<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.bad("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.bad("stack underflow"))
    }

    /// Everything above the last MARK, removing the mark.
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| self.bad("no MARK on the stack"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    pub(super) fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo.get(&i).cloned().ok_or_else(|| self.bad(format!("memo entry {i} is not set")))
    }

    pub(super) fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    pub(super) fn obj_mut(&mut self, v: &Value) -> Option<&mut Obj> {
        match v {
            Value::Obj(i) => self.arena.get_mut(*i),
            _ => None,
        }
    }

    pub(super) fn global(&mut self, module: &str, name: &str) -> Result<Value> {
        match resolve_global(module, name) {
            Some(g) => Ok(self.new_obj(Obj::Global(g))),
            None => Err(CheckpointError::ForbiddenGlobal {
                path: self.path(),
                global: format!("{module}.{name}"),
                offset: self.op_pos,
            }),
        }
    }

    pub(super) fn set_items(&mut self, target: &Value, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of values"));
        }
        let bad = self.bad("SETITEM on something that is not a dict");
        match self.obj_mut(target) {
            Some(Obj::Dict(d)) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            Some(Obj::Opaque(_)) => Ok(()),
            _ => Err(bad),
        }
    }

    pub(super) fn append(&mut self, target: &Value, items: Vec<Value>) -> Result<()> {
        let bad = self.bad("APPEND on something that is not a list");
        match self.obj_mut(target) {
            Some(Obj::List(l)) => {
                l.extend(items);
                Ok(())
            }
            Some(Obj::Opaque(_)) => Ok(()),
            _ => Err(bad),
        }
    }

    pub(super) fn as_usize(&self, v: &Value, what: &str) -> Result<usize> {
        match v {
            Value::Int(i) if *i >= 0 => usize::try_from(*i).map_err(|_| self.bad(format!("{what} too large"))),
            _ => Err(self.bad(format!("{what}: expected a non-negative int, got {v:?}"))),
        }
    }

    pub(super) fn usize_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>> {
        match self.arena_get(v) {
            Some(Obj::Tuple(items)) | Some(Obj::List(items)) => {
                if items.len() > MAX_RANK {
                    return Err(self.bad(format!("{what}: rank {} is too large", items.len())));
                }
                items.iter().map(|x| self.as_usize(x, what)).collect()
            }
            _ => Err(self.bad(format!("{what}: expected a tuple"))),
        }
    }

    pub(super) fn arena_get(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.arena.get(*i),
            _ => None,
        }
    }

    pub(super) fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let Some(Obj::Tuple(t)) = self.arena_get(&pid) else {
            return Err(self.bad("persistent id is not a tuple"));
        };
        // ('storage', type, key, location, numel[, view]): copy no more than that.
        let t: Vec<Value> = t.iter().take(6).cloned().collect();
        if t.len() < 5 || t[0] != Value::Str("storage".into()) {
            return Err(self.bad("persistent id is not ('storage', type, key, location, numel)"));
        }
        let dtype = match self.arena_get(&t[1]) {
            Some(Obj::Global(Global::StorageType(d))) => *d,
            _ => return Err(self.bad("persistent id: storage type is not a torch storage class")),
        };
        let key = match &t[2] {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            _ => return Err(self.bad("persistent id: storage key is not a string")),
        };
        let mut numel = self.as_usize(&t[4], "storage numel")?;
        let mut base = 0;
        // Legacy storage views: (view_key, offset, size) into the root storage.
        if let Some(view) = t.get(5).filter(|v| **v != Value::None) {
            let Some(Obj::Tuple(v)) = self.arena_get(view) else {
                return Err(self.bad("persistent id: bad view metadata"));
            };
            if v.len() != 3 {
                return Err(self.bad("persistent id: bad view metadata"));
            }
            base = self.as_usize(&v[1], "view offset")?;
            let size = self.as_usize(&v[2], "view size")?;
            if base.checked_add(size).is_none_or(|e| e > numel) {
                return Err(self.bad("persistent id: storage view out of bounds"));
            }
            numel = size;
        }
        Ok(self.new_obj(Obj::Storage(StorageRef { dtype, key, base, numel })))
    }

    pub(super) fn rebuild_tensor(&mut self, args: &[Value]) -> Result<Value> {
        if args.len() < 4 {
            return Err(self.bad("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)"));
        }
        let Some(Obj::Storage(storage)) = self.arena_get(&args[0]) else {
            return Err(self.bad("_rebuild_tensor_v2: first argument is not a storage"));
        };
        let storage = storage.clone();
        let offset = self.as_usize(&args[1], "tensor storage offset")?;
        let shape = self.usize_tuple(&args[2], "tensor size")?;
        let strides = self.usize_tuple(&args[3], "tensor stride")?;
        if shape.len() != strides.len() {
            return Err(self.bad(format!("tensor size {shape:?} and stride {strides:?} differ in rank")));
        }
        let overflow = || self.bad(format!("tensor size {shape:?} overflows"));
        shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).ok_or_else(overflow)?;
        // One past the last element read, which must lie inside the storage.
        let extent = if shape.contains(&0) {
            0
        } else {
            shape
                .iter()
                .zip(&strides)
                .try_fold(offset, |acc, (&n, &s)| (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x)))
                .and_then(|x| x.checked_add(1))
                .ok_or_else(overflow)?
        };
        if extent > storage.numel {
            return Err(self.bad(format!(
                "tensor (offset {offset}, size {shape:?}, stride {strides:?}) reads past its storage of {} elements",
                storage.numel
            )));
        }
        Ok(self.new_obj(Obj::Tensor(TensorRef { storage, offset, shape, strides })))
    }

    pub(super) fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        // The arguments are read, never kept: copy only the few a constructor looks at (a
        // memoized tuple of n values reduced n times must not cost n^2).
        let args: Vec<Value> = match self.arena_get(&args) {
            Some(Obj::Tuple(a)) => a.iter().take(4).cloned().collect(),
            _ => return Err(self.bad("REDUCE arguments are not a tuple")),
        };
        match self.arena_get(&callable).cloned() {
            Some(Obj::Global(Global::OrderedDict)) if args.is_empty() => Ok(self.new_obj(Obj::Dict(Vec::new()))),
            Some(Obj::Global(Global::OrderedDict)) => Err(self.bad("OrderedDict with arguments is not supported")),
            Some(Obj::Global(Global::RebuildTensorV2)) => self.rebuild_tensor(&args),
            Some(Obj::Global(Global::RebuildParameter)) => match args.first() {
                Some(v @ Value::Obj(_)) if matches!(self.arena_get(v), Some(Obj::Tensor(_))) => Ok(v.clone()),
                _ => Err(self.bad("_rebuild_parameter: first argument is not a tensor")),
            },
            Some(Obj::Global(Global::StorageType(_))) => Err(self.bad("calling a storage class is not supported")),
            Some(Obj::Global(Global::Inert(name))) | Some(Obj::Opaque(name)) => Ok(self.new_obj(Obj::Opaque(name))),
            _ => Err(self.bad("REDUCE on something that is not an allowed global")),
        }
    }
}
