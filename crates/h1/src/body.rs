//! Message-body framing (RFC 9112 §6 "Message Body", §7.1 "Chunked Transfer Coding"): a
//! decoder that takes a body out of a connection's read buffer as its bytes arrive, whatever
//! the pieces. Shared by the gateway's server (request bodies) and the upstream client
//! (answers).

use bytes::{Bytes, BytesMut};

/// The longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most a chunked body's trailer section may take.
pub const MAX_TRAILERS: usize = 64 * 1024;

/// A body that breaks its framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FramingError(pub String);

fn invalid(what: impl Into<String>) -> FramingError {
    FramingError(what.into())
}

/// How the rest of a body is framed, and where the reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes to go.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailers { seen: usize },
}

/// One step of decoding.
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    /// The buffer holds nothing more to decode: read from the socket.
    NeedMore,
    Done,
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Takes the next piece of body out of `buf`; bytes past the body's end stay in it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self {
                Decoder::Done => return Ok(Step::Done),
                Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Step::Done);
                }
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let data = take(buf, left);
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Step::Data(data));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let data = take(buf, left);
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Step::Data(data));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE, "chunk-size line")? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    *self = Decoder::Chunked(if size == 0 {
                        Chunk::Trailers { seen: 0 }
                    } else {
                        Chunk::Data(size)
                    });
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    let Some(line) = take_line(buf, 2, "chunk end")? else {
                        return Ok(Step::NeedMore);
                    };
                    if !line.is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers { seen }) => {
                    let room = MAX_TRAILERS.saturating_sub(*seen);
                    let Some(line) = take_line(buf, room, "trailers")? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Decoder::Done;
                        return Ok(Step::Done);
                    }
                    *seen += line.len() + 2;
                }
            }
        }
    }
}

/// Up to `left` bytes from the front of the buffer, without copying.
fn take(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
    *left -= n as u64;
    buf.split_to(n).freeze()
}

/// The next line (without its CRLF, or a bare LF as RFC 9112 §2.2 lets a recipient accept), or
/// `None` until one is complete; an error when no line end comes within `max` bytes.
fn take_line(buf: &mut BytesMut, max: usize, what: &str) -> Result<Option<BytesMut>, FramingError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) if i <= max => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        Some(_) => Err(invalid(format!("{what} too long"))),
        None if buf.len() > max => Err(invalid(format!("{what} too long"))),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(invalid("invalid chunk size"));
    }
    line[..digits].iter().try_fold(0u64, |n, &b| {
        let d = (b as char)
            .to_digit(16)
            .ok_or_else(|| invalid("invalid chunk size"))?;
        Ok(n << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Feeds `wire` to a decoder in pieces of `step` bytes; returns the body and whether the
    /// decoder ended.
    fn decode_in_pieces(mut decoder: Decoder, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.step(&mut buf).unwrap() {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::NeedMore => break,
                    Step::Done => return (body, buf.is_empty()),
                }
            }
        }
        (body, false)
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_are_split() {
        let wire = b"5;ext=1\r\nhello\r\n7 \r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            let (body, clean) = decode_in_pieces(Decoder::Chunked(Chunk::Size), wire, step);
            assert_eq!(body, b"hello, world", "pieces of {step}");
            assert!(
                clean,
                "the decoder stopped at the message's end (pieces of {step})"
            );
        }
        // Bare LF line ends are accepted.
        let (body, _) = decode_in_pieces(Decoder::Chunked(Chunk::Size), b"2\nhi\n0\n\n", 3);
        assert_eq!(body, b"hi");
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhello!!\r\n",
            b"fffffffffffffffff\r\n",
            b";ext\r\n",
        ] {
            let mut d = Decoder::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(wire);
            let result = loop {
                match d.step(&mut buf) {
                    Ok(Step::Data(_)) => continue,
                    other => break other,
                }
            };
            assert!(
                result.is_err(),
                "{:?}: {result:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut d = Decoder::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&[b'1'; MAX_CHUNK_LINE + 1][..]);
        assert!(
            d.step(&mut buf).is_err(),
            "a size line without end is cut off"
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, clean) = decode_in_pieces(Decoder::Length(5), b"hello", 2);
        assert_eq!((body.as_slice(), clean), (&b"hello"[..], true));
        let mut d = Decoder::Length(3);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert!(matches!(d.step(&mut buf), Ok(Step::Data(b)) if b == "abc"));
        assert!(matches!(d.step(&mut buf), Ok(Step::Done)));
        assert_eq!(
            buf, "def",
            "bytes past the length are left for the caller to see"
        );
    }
}
