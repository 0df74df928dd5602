//! Connect RPC with the JSON codec, as envd speaks it and the SDK's
//! `connectrpc` client writes it (`_protocol_connect.py`): a unary call is a
//! JSON body (`Content-Type: application/json`) answered with JSON or with a
//! Connect error `{code, message}` and an HTTP error status; a streaming call
//! sends and receives envelopes — a flag byte, a big-endian `u32` length,
//! the JSON message — and ends with an envelope flagged
//! [`END_STREAM`] carrying `{}` or `{"error": {code, message}}`.
//!
//! Only the framing: which RPC carries what is `envd.rs`'s.

use serde::Deserialize;

/// `Content-Type` of a streaming call with the JSON codec.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";
/// `Content-Type` of a unary call with the JSON codec.
pub const UNARY_CONTENT_TYPE: &str = "application/json";
/// Every call carries `Connect-Protocol-Version: 1`.
pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";
pub const PROTOCOL_VERSION: &str = "1";

/// Flag of the envelope that ends a stream.
pub const END_STREAM: u8 = 0b10;
/// Flag of a compressed envelope (never asked for, so refused).
pub const COMPRESSED: u8 = 0b01;
/// Larger envelopes are refused rather than buffered.
pub const MAX_ENVELOPE: usize = 16 << 20;

/// `payload` in an envelope flagged `flags`.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One envelope of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn ends_stream(&self) -> bool {
        self.flags & END_STREAM != 0
    }
}

/// Cuts a byte stream, arriving in chunks of any size, into envelopes.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole envelope, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_ENVELOPE {
            return Err(format!(
                "an envelope of {len} bytes (at most {MAX_ENVELOPE})"
            ));
        }
        if flags & COMPRESSED != 0 {
            return Err("a compressed envelope (none was accepted)".into());
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(Frame { flags, payload }))
    }

    /// Bytes of an envelope that has not fully arrived.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A Connect error: `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct EndMessage {
    #[serde(default)]
    error: Option<WireError>,
}

/// The error an end-of-stream message carries, if any.
pub fn end_error(payload: &[u8]) -> Result<Option<WireError>, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<EndMessage>(payload)
        .map(|m| m.error)
        .map_err(|e| format!("an end-of-stream message that is not Connect's: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_across_any_chunking() {
        let mut bytes = envelope(0, br#"{"a":1}"#);
        bytes.extend(envelope(0, b"{}"));
        bytes.extend(envelope(END_STREAM, b"{}"));
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        for size in [1, 2, 3, 5, 7, 100] {
            let mut decoder = FrameDecoder::default();
            let mut frames = Vec::new();
            for chunk in bytes.chunks(size) {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 3, "chunks of {size}");
            assert_eq!(frames[0].payload, br#"{"a":1}"#);
            assert!(!frames[1].ends_stream());
            assert!(frames[2].ends_stream());
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut d = FrameDecoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
        let mut d = FrameDecoder::default();
        d.push(&envelope(COMPRESSED, b"x"));
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn end_messages() {
        assert_eq!(end_error(b"{}"), Ok(None));
        assert_eq!(end_error(b""), Ok(None));
        assert_eq!(
            end_error(br#"{"error":{"code":"not_found","message":"gone"}}"#),
            Ok(Some(WireError {
                code: "not_found".into(),
                message: "gone".into()
            }))
        );
        assert!(end_error(b"[").is_err());
    }
}
