//! Is a JPEG file whole? The `image` crate's decoder (zune-jpeg) pads a file cut short with grey
//! and returns an image; PIL refuses it ("image file is truncated"). A training set with such a
//! file would teach from half-grey faces without a word, so a JPEG must reach its end-of-image
//! marker before it is decoded.
//!
//! The walk follows the file's structure rather than searching for the two bytes FF D9: marker
//! segments (APPn, DQT, DHT, SOF, SOS headers) carry their own length and are skipped whole, so
//! an EXIF thumbnail's end marker inside APP1 does not count; in entropy-coded data a 0xFF byte
//! is followed by 0x00 (a stuffed 0xFF) or a restart marker D0-D7, so any other FF xx there is
//! the next marker. Bytes after the end marker (camera trailers, padding) are allowed.

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;

/// `Ok` when `bytes` (a JPEG: it starts with FF D8) reaches its end-of-image marker, else what
/// is wrong, with the byte offset where the file stops making sense.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(&[0xFF, SOI]) {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let truncated =
        |at: usize| Err(format!("truncated JPEG: the file ends at byte {at} before its end-of-image marker"));
    let mut i = 2;
    loop {
        // A marker: one or more 0xFF fill bytes, then its code. Stray bytes before it are skipped,
        // as libjpeg skips them (with a warning) and PIL loads such files.
        while bytes.get(i).is_some_and(|&b| b != 0xFF) {
            i += 1;
        }
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&code)) = (bytes.get(i), bytes.get(i + 1)) else {
            return truncated(bytes.len());
        };
        i += 2;
        match code {
            EOI => return Ok(()),
            // Standalone markers: no length, no payload.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
            return truncated(bytes.len());
        };
        if len < 2 {
            return Err(format!("corrupt JPEG: marker FF {code:02X} at byte {} has length {len}", i - 2));
        }
        i += len;
        if i > bytes.len() {
            return truncated(bytes.len());
        }
        if code == SOS {
            // Entropy-coded data up to the next marker that is not a stuffed byte or a restart.
            loop {
                let Some(ff) = bytes[i..].iter().position(|&b| b == 0xFF) else { return truncated(bytes.len()) };
                i += ff;
                match bytes.get(i + 1) {
                    None => return truncated(bytes.len()),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline-shaped file: SOI, an APP0 segment, an SOS header, entropy data with a stuffed
    /// 0xFF and a restart marker, then EOI.
    fn whole() -> Vec<u8> {
        let mut b = vec![0xFF, SOI];
        b.extend([0xFF, 0xE0, 0x00, 0x04, 0xAB, 0xCD]);
        b.extend([0xFF, SOS, 0x00, 0x03, 0x01]);
        b.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]);
        b.extend([0xFF, EOI]);
        b
    }

    #[test]
    fn whole_file_passes_and_every_cut_of_it_fails() {
        let b = whole();
        assert_eq!(check_jpeg_complete(&b), Ok(()));
        for cut in 2..b.len() {
            let e = check_jpeg_complete(&b[..cut]).unwrap_err();
            assert!(e.contains("truncated JPEG") && e.contains(&format!("byte {cut}")), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn trailing_bytes_and_fill_bytes_are_allowed() {
        let mut b = whole();
        b.extend([0, 0, 0x12, 0x34]);
        assert_eq!(check_jpeg_complete(&b), Ok(()));
        let mut filled = vec![0xFF, SOI, 0xFF, 0xFF];
        filled.extend(&whole()[3..]);
        assert_eq!(check_jpeg_complete(&filled), Ok(()));
    }

    /// An end marker inside a segment (an EXIF thumbnail in APP1) does not end the file.
    #[test]
    fn an_end_marker_inside_a_segment_does_not_count() {
        let mut b = vec![0xFF, SOI, 0xFF, 0xE1, 0x00, 0x06, 0xFF, SOI, 0xFF, EOI];
        b.extend([0xFF, SOS, 0x00, 0x03, 0x01, 0x12, 0x34]);
        assert!(check_jpeg_complete(&b).unwrap_err().contains("truncated JPEG"));
        b.extend([0xFF, EOI]);
        assert_eq!(check_jpeg_complete(&b), Ok(()));
    }

    /// Stray bytes between segments are skipped, as libjpeg does; a segment length below 2 is
    /// named.
    #[test]
    fn stray_bytes_are_skipped_and_bad_lengths_named() {
        let mut b = vec![0xFF, SOI, 0x12, 0x34];
        b.extend(&whole()[2..]);
        assert_eq!(check_jpeg_complete(&b), Ok(()));
        assert!(check_jpeg_complete(&[0xFF, SOI, 0x12, 0x34]).unwrap_err().contains("truncated JPEG"));
        let b = [0xFF, SOI, 0xFF, 0xE0, 0x00, 0x01, 0xFF, EOI];
        assert!(check_jpeg_complete(&b).unwrap_err().contains("has length 1"));
        assert!(check_jpeg_complete(b"GIF89a").unwrap_err().contains("not a JPEG"));
    }
}
