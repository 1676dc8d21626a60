//! HTTP/1.1 on one upstream connection, driven by whichever task is making the call: write the
//! request in one system call, parse the answer's head, then decode its body as it is read.
//! No connection task and no channels between tasks, unlike hyper's client, whose dispatcher
//! task, callbacks and body channel cost a bare proxy ~6 µs of CPU per request here
//! (`bench/cpu-per-request.sh bare-hyper` against `bare-raw`, docs/benchmarks.md).
//!
//! The client side only: we send the requests (`POST` with a `Content-Length`), so what must be
//! right is reading answers. Message framing follows RFC 9112 (HTTP/1.1): §6.3 "Message Body
//! Length" (no body for 1xx, 204 and 304; `Transfer-Encoding` before `Content-Length`; an
//! invalid `Content-Length` is an error; otherwise the body runs to the close), §7.1 "Chunked
//! Transfer Coding" (hex sizes, extensions ignored, trailers read and dropped) and §9.3
//! "Persistence" (HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
//! `keep-alive`). Informational answers (`100 Continue`, `103 Early Hints`) are skipped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) use switchyard_h1::body::{Chunk, Decoder, Step};

/// The most an answer's head (status line and headers) or a chunk's trailers may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may carry.
const MAX_HEADERS: usize = 128;
/// Read buffer: its first size, and the room made before each read.
const READ_BUFFER: usize = 8 * 1024;
const READ_ROOM: usize = 1024;

/// What went wrong on the wire. The caller turns it into a provider error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the answer (or its body) was complete.
    #[error("the upstream closed the connection before the answer was complete")]
    Incomplete,
    /// Not a valid HTTP/1.x answer.
    #[error("invalid HTTP answer from the upstream: {0}")]
    Invalid(String),
}

fn invalid(what: impl Into<String>) -> WireError {
    WireError::Invalid(what.into())
}

/// One upstream connection and the bytes read from it but not used yet.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// The head of an answer and how to read its body.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Decoder,
    /// The connection may carry another request once this body has been read.
    pub keep_alive: bool,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUFFER),
        }
    }

    /// Writes the request's head and body, as one `writev` when the socket takes it all.
    pub(crate) async fn write_request(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let (mut head, mut body) = (head, body);
        while !head.is_empty() {
            let parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
            let n = self.io.write_vectored(&parts).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.io.write_all(body).await
    }

    /// Reads until an answer's head is complete (skipping informational answers) and parses it.
    pub(crate) async fn read_head(&mut self) -> Result<Head, WireError> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf)? {
                    Parsed::Final(head, len) => {
                        self.buf.advance(len);
                        return Ok(head);
                    }
                    Parsed::Informational(len) => {
                        self.buf.advance(len);
                        continue;
                    }
                    Parsed::Partial if self.buf.len() > MAX_HEAD => {
                        return Err(invalid(format!("answer head over {MAX_HEAD} bytes")));
                    }
                    Parsed::Partial => {}
                }
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(WireError::Incomplete);
            }
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the server's close.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_BUFFER);
        }
        // `poll_read` (not `try_read`): after a read that did not fill the buffer, tokio marks
        // the socket not readable, so the pool's check of an idle connection costs no syscall.
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether an idle connection can be used: no close, error or stray bytes seen on it since
    /// its last answer. Asks tokio's readiness first, so a quiet connection costs no syscall.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Something happened (most often the server's close after its idle timeout).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Takes the next piece of body out of the buffer (no reading).
    pub(crate) fn decode(&mut self, decoder: &mut Decoder) -> Result<Step, WireError> {
        decoder
            .step(&mut self.buf)
            .map_err(|e| WireError::Invalid(e.0))
    }

    /// Whether bytes beyond the answer are waiting (a server that wrote past its own framing).
    pub(crate) fn has_leftover(&self) -> bool {
        !self.buf.is_empty()
    }
}

enum Parsed {
    Final(Head, usize),
    Informational(usize),
    Partial,
}

fn parse_head(buf: &[u8]) -> Result<Parsed, WireError> {
    // Uninitialised slots: an initialised array would be 4 KiB of stores per answer.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buf,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(invalid(e.to_string())),
    };
    let code = answer.code.ok_or_else(|| invalid("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(|e| invalid(e.to_string()))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(invalid(
            "101 Switching Protocols to a request that asked for none",
        ));
    }
    if status.is_informational() {
        return Ok(Parsed::Informational(len));
    }
    let version = match answer.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in answer.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| invalid(e.to_string()))?;
        if name == http::header::TRANSFER_ENCODING {
            // Chunked only counts as the last coding of the last such header.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == http::header::CONTENT_LENGTH {
            // "42" or a list of one repeated value ("42, 42"); anything else is an error.
            length = Some(
                switchyard_h1::parse_content_length(h.value, length)
                    .ok_or_else(|| invalid("invalid or conflicting Content-Length"))?,
            );
        } else if name == http::header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    let mut keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Decoder::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), l) => {
                // Both framings at once is a smuggling shape: read by the chunks, then close.
                keep_alive &= l.is_none();
                Decoder::Chunked(Chunk::Size)
            }
            (Some(false), _) => {
                keep_alive = false;
                Decoder::UntilClose
            }
            (None, Some(n)) => Decoder::Length(n),
            (None, None) => {
                keep_alive = false;
                Decoder::UntilClose
            }
        }
    };
    Ok(Parsed::Final(
        Head {
            status,
            version,
            headers,
            body,
            keep_alive,
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()).unwrap() {
            Parsed::Final(h, len) => {
                assert_eq!(len, text.len());
                h
            }
            _ => panic!("not a final head"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Decoder::Length(12), true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            (h.body, h.keep_alive),
            (Decoder::Chunked(Chunk::Size), true)
        );
        // Transfer-Encoding wins over Content-Length, and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(
            (h.body, h.keep_alive),
            (Decoder::Chunked(Chunk::Size), false)
        );
        // A coding that is not chunked last: the body runs to the close.
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Decoder::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Decoder::UntilClose, false));
        for s in ["204 No Content", "304 Not Modified"] {
            let h = head(&format!("HTTP/1.1 {s}\r\ncontent-length: 10\r\n\r\n"));
            assert_eq!(h.body, Decoder::Length(0), "{s}");
        }
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n");
        assert_eq!(h.body, Decoder::Length(7));
        for bad in ["7, 8", "-1", "0x10", "", "99999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert!(parse_head(text.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn persistence_follows_the_version_and_connection_header() {
        assert!(
            !head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive
        );
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: foo, Close\r\ncontent-length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.version, Version::HTTP_10);
    }

    #[test]
    fn heads_keep_status_and_headers_and_skip_informational_answers() {
        let h = head("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.headers["retry-after"], "7");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        let text = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(matches!(parse_head(text), Ok(Parsed::Informational(25))));
        assert!(matches!(parse_head(&text[25..]), Ok(Parsed::Partial)));
        assert!(parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let many = |n: usize| {
            let fields: String = (0..n).map(|i| format!("x-{i}: v\r\n")).collect();
            format!("HTTP/1.1 200 OK\r\n{fields}\r\n")
        };
        assert_eq!(head(&many(MAX_HEADERS)).headers.len(), MAX_HEADERS);
        assert!(parse_head(many(MAX_HEADERS + 1).as_bytes()).is_err());
    }
}
