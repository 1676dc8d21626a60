//! Server-Sent Events, as specified by the WHATWG HTML standard ("9.2 Server-sent events",
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html>), which both OpenAI and
//! Anthropic streams follow.
//!
//! [`SseDecoder`] takes bytes as they arrive, in pieces of any size, and yields whole events;
//! it keeps the raw bytes of each event so a pass-through proxy can forward them untouched.

use bytes::{Bytes, BytesMut};

/// One decoded event. Its fields are slices of the bytes as received (no copy) unless the
/// event spread its data over several lines or held invalid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field's value, if any (UTF-8, checked).
    event: Option<Bytes>,
    /// The `data:` lines joined by `\n` (UTF-8, checked).
    data: Bytes,
    /// The event's bytes as received, including the blank line that ended it.
    pub raw: Bytes,
}

impl SseEvent {
    /// The `event:` field, if any.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref().map(utf8)
    }

    /// The `data:` lines joined by `\n`; empty for comments and keep-alives.
    pub fn data(&self) -> &str {
        utf8(&self.data)
    }
}

/// Text the decoder already checked (or made valid) when it built the event.
fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// Incremental SSE decoder.
///
/// Received pieces are kept as they came while they hold whole events, so each event (and its
/// data) is a slice of the received buffer; only an event split across pieces is copied
/// together. Upstreams send one or more whole events per write, so that is the rare case.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The piece being read, while it is the only one pending.
    piece: Bytes,
    /// Pending bytes gathered from several pieces (then `piece` is empty).
    buf: BytesMut,
    /// Where to resume the search for an event boundary in the pending bytes.
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

    /// Adds received bytes (copied).
    pub fn push(&mut self, bytes: &[u8]) {
        self.gather();
        self.buf.extend_from_slice(bytes);
    }

    /// Adds a received piece; kept without copying while nothing else is pending.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if self.piece.is_empty() && self.buf.is_empty() {
            self.piece = bytes;
        } else {
            self.push(&bytes);
        }
    }

    /// Moves a half-read piece into `buf`, so more bytes can follow it.
    fn gather(&mut self) {
        if !self.piece.is_empty() {
            self.buf.extend_from_slice(&self.piece);
            self.piece.clear();
        }
    }

    /// Bytes received but not yet part of a whole event.
    pub fn pending(&self) -> usize {
        self.piece.len() + self.buf.len()
    }

    /// The next whole event, if one has arrived. Events with neither data nor event name
    /// (comments, keep-alives) are returned too, with empty `data`, so a proxy can forward them.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseTooLarge> {
        let in_piece = !self.piece.is_empty();
        let pending: &[u8] = if in_piece { &self.piece } else { &self.buf };
        let Some(end) = find_boundary(pending, &mut self.scanned) else {
            if self.pending() > MAX_EVENT_BYTES {
                return Err(SseTooLarge);
            }
            return Ok(None);
        };
        self.scanned = 0;
        let raw = if in_piece {
            self.piece.split_to(end)
        } else {
            self.buf.split_to(end).freeze()
        };
        Ok(Some(parse_event(raw)))
    }

    /// Whatever is left when the stream ends without a final blank line; the standard says
    /// to discard it, but a lenient reader may parse it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.gather();
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = self.buf.split().freeze();
        Some(parse_event(raw))
    }
}

/// End (exclusive) of the first event in `b`: after `\n\n`, `\r\n\r\n` or `\r\r`. `scanned`
/// is where to resume; it is left where the next call should resume when there is none yet.
fn find_boundary(b: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut i = *scanned;
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
                        *scanned = p;
                        None
                    }
                };
            }
            Some(_) => i = next,
            None => {
                *scanned = p;
                return None;
            }
        }
    }
    *scanned = b.len();
    None
}

fn parse_event(raw: Bytes) -> SseEvent {
    let mut event: Option<Bytes> = None;
    // One data line is a slice of `raw`; several are joined into `joined`.
    let mut data: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let len = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
        let (start, line) = (pos, &rest[..len]);
        pos += len + 1;
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = i + 1 + usize::from(line.get(i + 1) == Some(&b' '));
                (&line[..i], start + v..start + len)
            }
            None => (line, start + len..start + len),
        };
        match field {
            b"event" => event = Some(raw.slice(value)),
            b"data" => match (&mut joined, &data) {
                (Some(j), _) => {
                    j.push(b'\n');
                    j.extend_from_slice(&raw[value]);
                }
                (None, Some(first)) => {
                    let mut j = first.to_vec();
                    j.push(b'\n');
                    j.extend_from_slice(&raw[value]);
                    joined = Some(j);
                }
                (None, None) => data = Some(raw.slice(value)),
            },
            _ => {}
        }
    }
    let data = joined.map(Bytes::from).or(data).unwrap_or_default();
    SseEvent {
        event: event.map(valid_utf8),
        data: valid_utf8(data),
        raw,
    }
}

/// The bytes as they are when they are UTF-8; otherwise with U+FFFD in place of what is not.
fn valid_utf8(b: Bytes) -> Bytes {
    // The strict check first: it is the common case and much cheaper than the lossy walk.
    if std::str::from_utf8(&b).is_ok() {
        return b;
    }
    match String::from_utf8_lossy(&b) {
        std::borrow::Cow::Borrowed(_) => b,
        std::borrow::Cow::Owned(s) => Bytes::from(s),
    }
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
            dec.push_bytes(Bytes::copy_from_slice(&input[..split]));
            got.extend(all(&mut dec));
            dec.push_bytes(Bytes::copy_from_slice(&input[split..]));
            got.extend(all(&mut dec));
            assert_eq!(got.len(), 4, "split at {split}");
            assert_eq!(got[0].event(), Some("message_start"));
            assert_eq!(got[0].data(), "{\"a\":1}");
            assert_eq!(got[1].data(), "");
            assert_eq!(got[2].data(), "x\ny");
            assert_eq!(got[3].data(), "[DONE]");
            let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, input.to_vec(), "raw bytes are kept for pass-through");
        }
    }

    #[test]
    fn an_unterminated_tail_is_left_for_finish() {
        let mut dec = SseDecoder::new();
        dec.push(b"data: a\n\ndata: partial");
        assert_eq!(all(&mut dec).len(), 1);
        assert_eq!(dec.finish().unwrap().data(), "partial");
    }

    #[test]
    fn data_without_space_and_bare_field() {
        let mut dec = SseDecoder::new();
        dec.push(b"data:x\ndata\n\n");
        let e = dec.next_event().unwrap().unwrap();
        assert_eq!(e.data(), "x\n");
    }

    #[test]
    fn whole_events_in_a_piece_are_slices_of_it() {
        let piece = Bytes::from_static(b"data: {\"a\":1}\n\nevent: ping\ndata: 2\n\n");
        let range = piece.as_ptr_range();
        let mut dec = SseDecoder::new();
        dec.push_bytes(piece.clone());
        let got = all(&mut dec);
        assert_eq!(got.len(), 2);
        for e in &got {
            assert!(range.contains(&e.raw.as_ptr()), "raw was copied");
            assert!(range.contains(&e.data().as_ptr()), "data was copied");
        }
        assert_eq!(got[1].event(), Some("ping"));
        assert_eq!(got[1].data(), "2");
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn an_event_over_three_pieces_is_joined() {
        let mut dec = SseDecoder::new();
        for piece in ["data: he", "llo\nda", "ta: world\n\ndata: next"] {
            dec.push_bytes(Bytes::from(piece));
        }
        let got = all(&mut dec);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data(), "hello\nworld");
        assert_eq!(dec.pending(), "data: next".len());
    }

    #[test]
    fn invalid_utf8_reads_as_replacement_characters() {
        let mut dec = SseDecoder::new();
        dec.push_bytes(Bytes::from_static(b"event: a\xff\ndata: x\xfe\xfdy\n\n"));
        let e = dec.next_event().unwrap().unwrap();
        assert_eq!(e.event(), Some("a\u{fffd}"));
        assert_eq!(e.data(), "x\u{fffd}\u{fffd}y");
    }
}
