//! A command's output as the tools get it, the way the local sandbox keeps
//! it (`local/process.rs`): stdout and stderr interleaved as they arrive,
//! decoded as UTF-8 across chunk boundaries, the last
//! [`OUTPUT_LIMIT`] bytes kept with a note of what was dropped.

use crate::sandbox::local::OUTPUT_LIMIT;

/// Interleaved output, capped.
#[derive(Debug, Default)]
pub struct Output {
    text: String,
    dropped: usize,
}

impl Output {
    pub fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        if self.text.len() > 2 * OUTPUT_LIMIT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.text.len() <= OUTPUT_LIMIT {
            return;
        }
        let mut cut = self.text.len() - OUTPUT_LIMIT;
        while !self.text.is_char_boundary(cut) {
            cut += 1;
        }
        self.text.drain(..cut);
        self.dropped += cut;
    }

    pub fn finish(mut self) -> String {
        self.trim();
        if self.dropped == 0 {
            self.text
        } else {
            format!(
                "[... output truncated: {} earlier bytes omitted, the last {} KB follow ...]\n{}",
                self.dropped,
                OUTPUT_LIMIT / 1024,
                self.text
            )
        }
    }
}

/// UTF-8 text of one stream's bytes; an incomplete trailing sequence waits
/// for the next chunk, invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8 {
    carry: Vec<u8>,
}

impl Utf8 {
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.carry);
        let rest = self.carry.split_off(self.carry.len() - keep);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

/// Bytes at the end that start a sequence not complete yet.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_its_end() {
        let mut out = Output::default();
        for i in 0..30_000 {
            out.push(&format!("line {i}\n"));
        }
        let text = out.finish();
        assert!(
            text.starts_with("[... output truncated: "),
            "{}",
            &text[..80]
        );
        assert!(text.ends_with("line 29999\n"));
        assert!(text.len() < OUTPUT_LIMIT + 200);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = Utf8::default();
        let bytes = "é€".as_bytes();
        assert_eq!(d.decode(&bytes[..1]), "");
        assert_eq!(d.decode(&bytes[1..3]), "é");
        assert_eq!(d.decode(&bytes[3..]), "€");
        assert_eq!(d.decode(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(d.decode(&[0xff, 0xe2]), "\u{fffd}");
        assert_eq!(d.decode(&[0x82, 0xac]), "€");
        assert_eq!(d.decode(&[0xe2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
