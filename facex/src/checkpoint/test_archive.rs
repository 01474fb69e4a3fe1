//! Hand-built torch.save archives for the checkpoint tests: a zip writer (stored entries, as
//! torch.save writes them) and a pickle opcode writer. Test-only.

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip with stored (uncompressed) entries, as torch.save writes.
pub(crate) fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_claiming(entries, None)
}

/// [`zip`], where `claim` gives one entry a zip64 size in the central directory (what a hostile
/// file can claim whatever its real length).
pub(crate) fn zip_claiming(entries: &[(&str, &[u8])], claim: Option<(&str, u64)>) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let claimed = claim.filter(|(n, _)| n == name).map(|(_, size)| size);
        // The version needed to extract: 2.0, or 4.5 for zip64.
        let version: u16 = if claim.is_some() { 45 } else { 20 };
        let header = |v: &mut Vec<u8>, size: u32, extra: u16| {
            for x in [version, 0, 0, 0, 0x21] {
                v.extend(x.to_le_bytes()); // version, flags, stored, time, date (1980-01-01)
            }
            v.extend(crc32(data).to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(extra.to_le_bytes());
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        header(&mut out, data.len() as u32, 0);
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(version.to_le_bytes());
        match claimed {
            None => header(&mut central, data.len() as u32, 0),
            Some(_) => header(&mut central, u32::MAX, 20),
        }
        central.extend([0u8; 6]); // comment length, disk number, internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
        if let Some(size) = claimed {
            // The zip64 extended information: uncompressed, then compressed size.
            central.extend(1u16.to_le_bytes());
            central.extend(16u16.to_le_bytes());
            central.extend(size.to_le_bytes());
            central.extend(size.to_le_bytes());
        }
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Writes pickle opcodes.
#[derive(Default)]
pub(crate) struct Pickle(pub(crate) Vec<u8>);

impl Pickle {
    /// Raw opcode bytes.
    pub(crate) fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend(b);
        self
    }
    /// BINUNICODE (4-byte length).
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }
    /// SHORT_BINUNICODE (1-byte length).
    pub(crate) fn short_str(&mut self, s: &str) -> &mut Self {
        self.0.extend([0x8c, s.len() as u8]);
        self.op(s.as_bytes())
    }
    /// BININT (4 bytes).
    pub(crate) fn int(&mut self, i: i32) -> &mut Self {
        self.0.push(b'J');
        self.op(&i.to_le_bytes())
    }
    /// LONG1 of 8 bytes.
    pub(crate) fn long(&mut self, i: i64) -> &mut Self {
        self.0.extend([0x8a, 8]);
        self.op(&i.to_le_bytes())
    }
    pub(crate) fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// A tuple of BININTs.
    pub(crate) fn tuple(&mut self, items: &[i32]) -> &mut Self {
        self.op(b"(");
        for &i in items {
            self.int(i);
        }
        self.op(b"t")
    }
    /// A tuple of LONG1s.
    pub(crate) fn long_tuple(&mut self, items: &[i64]) -> &mut Self {
        self.op(b"(");
        for &i in items {
            self.long(i);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    pub(crate) fn tensor(
        &mut self,
        storage: &str,
        key: &str,
        numel: i32,
        offset: i32,
        size: &[i32],
        stride: &[i32],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"((").str("storage").global("torch", storage);
        self.str(key).str("cuda:0").int(numel).op(b"tQ").int(offset).tuple(size).tuple(stride);
        self.op(b"\x89").global("collections", "OrderedDict").op(b")RtR")
    }
}
