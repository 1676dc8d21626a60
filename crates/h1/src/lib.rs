//! HTTP/1.1 on the wire, for the two places Switchyard speaks it on every request:
//!
//! - [`server`]: the connection loop the gateway serves its clients with (in place of hyper's
//!   server, whose dispatcher costs a bare proxy ~14% of its CPU per request here:
//!   `bench/cpu-per-request.sh bare-raw|bare-rawserver`, docs/benchmarks.md);
//! - [`body`]: message-body framing (RFC 9112 §6–7), shared by that server and the upstream
//!   client in `switchyard-providers`.

pub mod body;
pub mod server;

/// Parses a decimal `Content-Length` value: digits only, at most 19 of them.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// A `Content-Length` field value: "42", or a list of one repeated value ("42, 42"), which
/// RFC 9112 §6.3 (item 5) lets a recipient accept. `None` for anything else.
pub fn parse_content_length(value: &[u8], seen: Option<u64>) -> Option<u64> {
    let mut length = seen;
    for part in value.split(|&b| b == b',') {
        let n = parse_decimal(part.trim_ascii())?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_are_one_decimal_value() {
        assert_eq!(parse_content_length(b"42", None), Some(42));
        assert_eq!(parse_content_length(b"7, 7", None), Some(7));
        assert_eq!(parse_content_length(b"7", Some(7)), Some(7));
        for bad in [
            &b"7, 8"[..],
            b"-1",
            b"0x10",
            b"",
            b"+5",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse_content_length(bad, None),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_content_length(b"8", Some(7)),
            None,
            "a second, different header"
        );
    }
}
