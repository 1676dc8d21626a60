//! Server-Sent Events, as specified by the WHATWG HTML standard ("9.2 Server-sent events",
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html>), which both OpenAI and
//! Anthropic streams follow.
//!
//! [`SseDecoder`] takes bytes as they arrive, in pieces of any size, and yields whole events;
//! it keeps the raw bytes of each event so a pass-through proxy can forward them untouched.

use bytes::{Bytes, BytesMut};

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The event's bytes as received, including the blank line that ended it.
    pub raw: Bytes,
}

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Where to resume the search for an event boundary.
    scanned: usize,
}

/// Largest event we accept before declaring the stream broken (guards memory).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseTooLarge;

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole event, if one has arrived. Events with neither data nor event name
    /// (comments, keep-alives) are returned too, with empty `data`, so a proxy can forward them.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseTooLarge> {
        let Some(end) = self.find_boundary() else {
            if self.buf.len() > MAX_EVENT_BYTES {
                return Err(SseTooLarge);
            }
            return Ok(None);
        };
        self.scanned = 0;
        let raw = self.buf.split_to(end).freeze();
        Ok(Some(parse_event(raw)))
    }

    /// Whatever is left when the stream ends without a final blank line; the standard says
    /// to discard it, but a lenient reader may parse it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = self.buf.split().freeze();
        Some(parse_event(raw))
    }

    /// End (exclusive) of the first event: after `\n\n`, `\r\n\r\n` or `\r\r`.
    fn find_boundary(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        let mut i = self.scanned;
        while let Some(off) = memchr::memchr2(b'\n', b'\r', &b[i..]) {
            let p = i + off;
            // A line ends at p; the event ends if the next line is empty.
            let next = if b[p] == b'\r' && b.get(p + 1) == Some(&b'\n') {
                p + 2
            } else {
                p + 1
            };
            match b.get(next) {
                Some(b'\n') => return Some(next + 1),
                Some(b'\r') => {
                    return match b.get(next + 1) {
                        Some(b'\n') => Some(next + 2),
                        Some(_) => Some(next + 1),
                        // `\r` at the very end: it may be the start of `\r\n`; wait.
                        None => {
                            self.scanned = p;
                            None
                        }
                    };
                }
                Some(_) => i = next,
                None => {
                    self.scanned = p;
                    return None;
                }
            }
        }
        self.scanned = b.len();
        None
    }
}

fn parse_event(raw: Bytes) -> SseEvent {
    let text = String::from_utf8_lossy(&raw);
    let mut event = None;
    let mut data = String::new();
    let mut has_data = false;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    SseEvent { event, data, raw }
}

/// Writes `data: {data}\n\n`.
pub fn encode_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Writes `event: {name}\ndata: {data}\n\n`.
pub fn encode_event(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    encode_data(out, data);
}

/// The OpenAI end-of-stream marker.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dec: &mut SseDecoder) -> Vec<SseEvent> {
        let mut v = vec![];
        while let Some(e) = dec.next_event().unwrap() {
            v.push(e);
        }
        v
    }

    #[test]
    fn events_split_at_any_byte_are_reassembled() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: x\ndata: y\r\n\r\ndata: [DONE]\n\n";
        for split in 0..input.len() {
            let mut dec = SseDecoder::new();
            let mut got = vec![];
            dec.push(&input[..split]);
            got.extend(all(&mut dec));
            dec.push(&input[split..]);
            got.extend(all(&mut dec));
            assert_eq!(got.len(), 4, "split at {split}");
            assert_eq!(got[0].event.as_deref(), Some("message_start"));
            assert_eq!(got[0].data, "{\"a\":1}");
            assert_eq!(got[1].data, "");
            assert_eq!(got[2].data, "x\ny");
            assert_eq!(got[3].data, "[DONE]");
            let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, input.to_vec(), "raw bytes are kept for pass-through");
        }
    }

    #[test]
    fn an_unterminated_tail_is_left_for_finish() {
        let mut dec = SseDecoder::new();
        dec.push(b"data: a\n\ndata: partial");
        assert_eq!(all(&mut dec).len(), 1);
        assert_eq!(dec.finish().unwrap().data, "partial");
    }

    #[test]
    fn data_without_space_and_bare_field() {
        let mut dec = SseDecoder::new();
        dec.push(b"data:x\ndata\n\n");
        let e = dec.next_event().unwrap().unwrap();
        assert_eq!(e.data, "x\n");
    }
}
