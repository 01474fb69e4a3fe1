//! The opcode loop: one match arm per opcode `torch.save` emits.

use super::vm::Vm;
use super::{Obj, Value, MAX_MARK_DEPTH};
use crate::checkpoint::error::Result;

impl Vm<'_> {
    pub(super) fn run(&mut self) -> Result<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.bad(format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a size hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARK_DEPTH {
                        return Err(self.bad(format!("MARKs nested deeper than {MAX_MARK_DEPTH}")));
                    }
                    self.marks.push(self.stack.len())
                }
                b'}' => {
                    let v = self.new_obj(Obj::Dict(Vec::new()));
                    self.push(v)
                }
                b']' => {
                    let v = self.new_obj(Obj::List(Vec::new()));
                    self.push(v)
                }
                0x8f => {
                    let v = self.new_obj(Obj::List(Vec::new())); // EMPTY_SET, kept as a list
                    self.push(v)
                }
                b')' => {
                    let v = self.new_obj(Obj::Tuple(Vec::new()));
                    self.push(v)
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let n = match op {
                        b'X' | b'T' => self.u32()? as usize,
                        0x8c | b'U' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    // BINSTRING/SHORT_BINSTRING are Python 2 byte strings: read as Latin-1.
                    let s =
                        if matches!(op, b'T' | b'U') { b.iter().map(|&c| c as char).collect() } else { self.utf8(b)? };
                    self.push(Value::Str(s.into()))
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        let n = self.u32()? as i32;
                        usize::try_from(n).map_err(|_| self.bad("LONG4 with a negative length"))?
                    };
                    let b = self.take(n)?;
                    self.push(long_value(b))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap_or_default())))
                }
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'N' => self.push(Value::None),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v)
                }
                0x91 => {
                    let items = self.pop_mark()?; // FROZENSET, kept as a list
                    let v = self.new_obj(Obj::List(items));
                    self.push(v)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append(&target, vec![v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.push(v)
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.push(v)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(&module, &name)?;
                    self.push(v)
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.bad("STACK_GLOBAL needs two strings"));
                    };
                    let v = self.global(&module, &name)?;
                    self.push(v)
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)
                }
                b'b' => {
                    let _state = self.pop()?;
                    let target = self.top()?.clone();
                    // State of an OrderedDict (`_metadata`), a tensor or an opaque object: not needed.
                    if !matches!(self.arena_get(&target), Some(Obj::Dict(_) | Obj::Tensor(_) | Obj::Opaque(_))) {
                        return Err(self.bad("BUILD on an object that is not a dict, tensor or allowed class"));
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)
                }
                _ => return Err(self.bad(format!("unsupported pickle opcode 0x{op:02x}"))),
            }
        }
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
pub(super) fn long_value(b: &[u8]) -> Value {
    if b.len() > 8 {
        return Value::BigInt(b.into());
    }
    if b.is_empty() {
        return Value::Int(0);
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 8];
    buf[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(buf))
}
