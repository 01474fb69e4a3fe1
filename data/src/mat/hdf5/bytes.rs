//! A bounds-checked little-endian cursor over the file (HDF5 metadata is little-endian) and the
//! file-wide sizes every structure is read with.

pub(super) type R<T> = std::result::Result<T, String>;

/// The file's bytes, where HDF5 begins (addresses are relative to it), and the superblock's
/// sizes of addresses ("offsets") and lengths.
pub(super) struct File<'a> {
    pub bytes: &'a [u8],
    pub base: usize,
    pub offset_size: usize,
    pub length_size: usize,
    /// Bytes of data still allowed to be produced: deflate's maximum ratio (1032:1) of the whole
    /// file. Cells may point many times to one dataset; this bounds the work and memory of any
    /// file, hostile ones included, by its size.
    pub budget: std::cell::Cell<usize>,
}

impl<'a> File<'a> {
    pub fn new(bytes: &'a [u8], base: usize, offset_size: usize, length_size: usize) -> File<'a> {
        let budget = std::cell::Cell::new(bytes.len().saturating_mul(1032));
        File { bytes, base, offset_size, length_size, budget }
    }

    /// Account for `n` bytes of data about to be produced.
    pub fn spend(&self, n: usize) -> R<()> {
        let left = self.budget.get();
        if n > left {
            return Err(format!("{n} bytes of data, more than the file ({} bytes) could hold", self.bytes.len()));
        }
        self.budget.set(left - n);
        Ok(())
    }

    /// A cursor at a file address (relative to the base), checked against the file's end.
    pub fn at(&self, addr: u64) -> R<Cur<'a>> {
        let pos = usize::try_from(addr).ok().and_then(|a| a.checked_add(self.base)).filter(|&p| p <= self.bytes.len());
        let pos =
            pos.ok_or_else(|| format!("address {addr:#x} is beyond the end of the file ({} bytes)", self.bytes.len()))?;
        Ok(Cur { b: self.bytes, pos, offset_size: self.offset_size, length_size: self.length_size })
    }

    /// `len` bytes at a file address.
    pub fn slice(&self, addr: u64, len: u64) -> R<&'a [u8]> {
        let mut c = self.at(addr)?;
        let len = usize::try_from(len).map_err(|_| format!("length {len} too large"))?;
        c.take(len)
    }
}

/// A cursor: every read checks the bytes remain.
#[derive(Clone)]
pub(super) struct Cur<'a> {
    pub b: &'a [u8],
    pub pos: usize,
    pub offset_size: usize,
    pub length_size: usize,
}

impl<'a> Cur<'a> {
    /// A cursor over a message's own bytes (offsets 0..len).
    pub fn over(b: &'a [u8], offset_size: usize, length_size: usize) -> Cur<'a> {
        Cur { b, pos: 0, offset_size, length_size }
    }

    pub fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            format!(
                "truncated: {n} bytes needed at byte {}, {} remain",
                self.pos,
                self.b.len().saturating_sub(self.pos)
            )
        })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize) -> R<()> {
        self.take(n).map(|_| ())
    }

    /// An unsigned little-endian integer of `n` (1..=8) bytes.
    pub fn uint(&mut self, n: usize) -> R<u64> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64))
    }

    pub fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> R<u16> {
        Ok(self.uint(2)? as u16)
    }

    pub fn u32(&mut self) -> R<u32> {
        Ok(self.uint(4)? as u32)
    }

    /// A file address; `None` for the "undefined" address (all bits set).
    pub fn addr(&mut self) -> R<Option<u64>> {
        let n = self.offset_size;
        let v = self.uint(n)?;
        Ok(if n == 8 && v == u64::MAX || n < 8 && v == (1u64 << (8 * n)) - 1 { None } else { Some(v) })
    }

    /// A defined file address (`what` names it in the error).
    pub fn need_addr(&mut self, what: &str) -> R<u64> {
        self.addr()?.ok_or_else(|| format!("{what}: undefined address"))
    }

    pub fn length(&mut self) -> R<u64> {
        let n = self.length_size;
        self.uint(n)
    }

    /// Check a four-byte signature.
    pub fn signature(&mut self, sig: &[u8; 4]) -> R<()> {
        let at = self.pos;
        let got = self.take(4)?;
        if got != sig {
            return Err(format!(
                "expected {:?} at byte {at}, found {:?}",
                String::from_utf8_lossy(sig),
                String::from_utf8_lossy(got)
            ));
        }
        Ok(())
    }
}
