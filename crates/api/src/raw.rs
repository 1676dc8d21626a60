//! The client's own request bytes, edited in place instead of re-serialized.
//!
//! An OpenAI-compatible target gets the chat request as the client sent it, with only `model`
//! replaced (and, on a stream without `stream_options`, `stream_options.include_usage` added).
//! Re-serializing the parsed request was JSON work on every request that a gateway need not do,
//! and it also rewrote what it did not need to touch (number spellings such as `1.50`, key order
//! of unmodelled fields, explicit `null`s).
//!
//! Safety rule: the bytes go upstream only when they cannot mean something other than what the
//! gateway read. serde keeps the last of repeated keys and an upstream parser may keep the first,
//! so a body with a repeated key in any object, or an escaped key (whose repeat cannot be seen by
//! comparing bytes), is re-serialized instead. So is anything the scan does not understand.

use std::ops::Range;

/// What [`scan`] finds in a top-level JSON object.
#[derive(Debug, PartialEq)]
pub(crate) struct TopLevel {
    /// The value of `model`, quotes included.
    pub model: Range<usize>,
    /// Whether a `stream_options` member is present (whatever its value).
    pub has_stream_options: bool,
    /// Offset of the object's closing `}`.
    pub close: usize,
}

/// Walks a JSON document (already accepted by serde_json) and returns the spans the editor
/// needs, or `None` when the document is not an object with one string `model` member, has a
/// repeated or escaped key in any object, or is not well formed as far as the walk reads it.
pub(crate) fn scan(raw: &[u8]) -> Option<TopLevel> {
    let start = skip_ws(raw, 0);
    if raw.get(start) != Some(&b'{') {
        return None;
    }
    let mut model = None;
    let mut has_stream_options = false;
    let mut walker = Walker {
        raw,
        keys: Vec::with_capacity(32),
    };
    let end = walker.object(start, 1, &mut |key, value| {
        if key == b"model" {
            model = Some(value);
        } else if key == b"stream_options" {
            has_stream_options = true;
        }
    })?;
    if skip_ws(raw, end) != raw.len() {
        return None;
    }
    let model = model.filter(|m| raw[m.start] == b'"')?;
    Some(TopLevel {
        model,
        has_stream_options,
        close: end - 1,
    })
}

/// serde_json's own nesting limit: a document it accepted is no deeper.
const MAX_DEPTH: usize = 128;

struct Walker<'a> {
    raw: &'a [u8],
    /// Keys of the objects being walked, as spans without quotes; each open object's keys are
    /// the tail from where it started.
    keys: Vec<Range<usize>>,
}

impl Walker<'_> {
    /// The end (exclusive) of the value starting at `i` (after whitespace).
    fn value(&mut self, i: usize, depth: usize) -> Option<usize> {
        let raw = self.raw;
        let i = skip_ws(raw, i);
        match raw.get(i)? {
            b'{' => self.object(i, depth + 1, &mut |_, _| {}),
            b'[' => self.array(i, depth + 1),
            b'"' => Some(string_end(raw, i)? + 1),
            _ => {
                // A number or a literal, checked as JSON spells them.
                let end = raw[i..]
                    .iter()
                    .position(
                        |b| !matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'+' | b'-' | b'.' | b'E'),
                    )
                    .map_or(raw.len(), |n| i + n);
                literal(&raw[i..end]).then_some(end)
            }
        }
    }

    /// The end of the object opening at `i`; `member` sees each key and its value's span.
    fn object(
        &mut self,
        i: usize,
        depth: usize,
        member: &mut dyn FnMut(&[u8], Range<usize>),
    ) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let raw = self.raw;
        let from = self.keys.len();
        let mut j = skip_ws(raw, i + 1);
        if raw.get(j) == Some(&b'}') {
            return Some(j + 1);
        }
        loop {
            if raw.get(j) != Some(&b'"') {
                return None;
            }
            let end = string_end(raw, j)?;
            let name = j + 1..end;
            let key = &raw[name.clone()];
            if key.contains(&b'\\') || self.keys[from..].iter().any(|k| &raw[k.clone()] == key) {
                return None;
            }
            self.keys.push(name);
            j = skip_ws(raw, end + 1);
            if raw.get(j) != Some(&b':') {
                return None;
            }
            let start = skip_ws(raw, j + 1);
            let value_end = self.value(start, depth)?;
            member(key, start..value_end);
            j = skip_ws(raw, value_end);
            match raw.get(j)? {
                b',' => j = skip_ws(raw, j + 1),
                b'}' => {
                    self.keys.truncate(from);
                    return Some(j + 1);
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, i: usize, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        let raw = self.raw;
        let mut j = skip_ws(raw, i + 1);
        if raw.get(j) == Some(&b']') {
            return Some(j + 1);
        }
        loop {
            let end = self.value(j, depth)?;
            j = skip_ws(raw, end);
            match raw.get(j)? {
                b',' => j = skip_ws(raw, j + 1),
                b']' => return Some(j + 1),
                _ => return None,
            }
        }
    }
}

/// `true`, `false`, `null` or a number by JSON's grammar (RFC 8259 §6).
fn literal(b: &[u8]) -> bool {
    if matches!(b, b"true" | b"false" | b"null") {
        return true;
    }
    let digits = |b: &[u8], at: usize| b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int = digits(b, i);
    if int == 0 || (int > 1 && b[i] == b'0') {
        return false;
    }
    i += int;
    if b.get(i) == Some(&b'.') {
        let frac = digits(b, i + 1);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(b, i);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// The offset of the closing quote of the string opening at `start`.
fn string_end(raw: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', raw.get(i..)?)?;
        if raw[i] == b'"' {
            return Some(i);
        }
        i += 2; // an escape: the next byte is escaped (`\uXXXX`'s digits are plain bytes)
    }
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while i < raw.len() && matches!(raw[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The client's body with `model` set to `model` and, when `add_stream_usage`, a
/// `"stream_options": {"include_usage": true}` member appended. `None` when [`scan`] refuses the
/// body or `add_stream_usage` is asked of a body that already has `stream_options`.
pub(crate) fn edited(raw: &[u8], model: &str, add_stream_usage: bool) -> Option<Vec<u8>> {
    let top = scan(raw)?;
    if add_stream_usage && top.has_stream_options {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + model.len() + 48);
    out.extend_from_slice(&raw[..top.model.start]);
    if model.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(&mut out, model).ok()?;
    } else {
        out.push(b'"');
        out.extend_from_slice(model.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(&raw[top.model.end..top.close]);
    if add_stream_usage {
        out.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
    }
    out.extend_from_slice(&raw[top.close..]);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn top(s: &str) -> Option<TopLevel> {
        scan(s.as_bytes())
    }

    #[test]
    fn finds_the_model_and_the_end_of_the_object() {
        let s = r#" {"messages": [{"role": "user", "content": "a \"model\": b"}], "model" : "gpt",
            "n": 1, "x": [true, null, -1.5e3, {"model": "inner"}], "stream_options": null } "#;
        let t = top(s).unwrap();
        assert_eq!(&s[t.model.clone()], r#""gpt""#);
        assert!(t.has_stream_options);
        assert_eq!(&s[t.close..t.close + 1], "}");
        assert_eq!(s[t.close + 1..].trim(), "");
        let s = r#"{"model":"m\"x\\","a":{}}"#;
        let t = top(s).unwrap();
        assert_eq!(&s[t.model], r#""m\"x\\""#);
        assert!(!t.has_stream_options);
    }

    #[test]
    fn refuses_what_could_be_read_two_ways_or_is_not_understood() {
        for s in [
            r#"{"model": "a", "model": "b"}"#,
            r#"{"model": "a", "messages": [{"role": "user", "role": "system"}]}"#,
            r#"{"model": "a", "x": {"b": {"c": 1, "c": 2}}}"#,
            r#"{"mod\u0065l": "a", "model": "b"}"#,
            r#"{"model": "a", "x": {"\u0063": 1}}"#,
            r#"{"messages": []}"#,
            r#"{"model": 3}"#,
            r#"[{"model": "a"}]"#,
            r#"{"model": "a"} x"#,
            r#"{"model": "a""#,
            r#"{"model": "a", "x": [1, 2}"#,
            r#"{"model": "a", "x": {"b": 1]}"#,
            r#"{"model": "a",, "n": 1}"#,
            r#"{"model" "a"}"#,
            r#"{"model": "a" "n": 1}"#,
            "",
            "{",
        ] {
            assert_eq!(top(s), None, "{s}");
        }
        // The same key in different objects, or a key equal to a string value, is no repeat.
        assert!(
            top(r#"{"model": "a", "x": {"model": "b"}, "y": [{"k": 1}, {"k": 2}], "k": "k"}"#)
                .is_some()
        );
    }

    #[test]
    fn edits_only_the_model_and_the_stream_usage() {
        let s =
            br#"{"model":"route","temperature":1.50,"messages":[],"seed":18446744073709551615}"#;
        assert_eq!(
            edited(s, "gpt-4o", false).unwrap(),
            br#"{"model":"gpt-4o","temperature":1.50,"messages":[],"seed":18446744073709551615}"#
        );
        assert_eq!(
            edited(s, "a \"b\"", true).unwrap(),
            br#"{"model":"a \"b\"","temperature":1.50,"messages":[],"seed":18446744073709551615,"stream_options":{"include_usage":true}}"#
        );
        let with_options =
            br#"{"model":"r","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(edited(with_options, "r", false).unwrap(), with_options);
        assert_eq!(edited(with_options, "r", true), None);
    }

    #[test]
    fn the_edited_body_means_what_the_re_serialized_one_means() {
        use crate::openai::ChatRequest;
        let bodies = [
            r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{ "messages" : [ {"role":"system","content":"be \"brief\"\n"},
                {"role":"user","content":[{"type":"text","text":"caf\u00e9 ☕"}]} ],
               "model" : "r", "temperature": 0.70, "stop": ["\n"], "logprobs": true }"#,
            r#"{"model":"r","stream":true,"messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]}"#,
            r#"{"model":"r","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[]}"#,
            r#"{"model":"r","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#,
            r#"{"model":"r","stream":true,"stream_options":null,"messages":[]}"#,
            r#"{"model":"r","stream":false,"max_tokens":null,"messages":[],"seed":-3,"top_p":1e0}"#,
            r#"{"model":"r","messages":[{"role":"user","content":"a","content":"b"}]}"#,
        ];
        for body in bodies {
            let req: ChatRequest = serde_json::from_str(body).expect(body);
            for model in ["r", "gpt-4o-mini", "a\"b"] {
                let fast = req.forwarded_body(Some(body.as_bytes()), model).unwrap();
                let slow = req.forwarded_json(model).unwrap();
                let fast: serde_json::Value = serde_json::from_slice(&fast).expect(body);
                let mut slow: serde_json::Value = serde_json::from_slice(&slow).unwrap();
                // Re-serializing drops `null` members the client sent; the bytes keep them.
                if let Some(o) = fast.as_object() {
                    for (k, v) in o {
                        if v.is_null() {
                            slow.as_object_mut().unwrap().insert(k.clone(), v.clone());
                        }
                    }
                }
                assert_eq!(fast, slow, "{body} as {model}");
            }
        }
    }

    #[test]
    fn numbers_and_literals_are_checked_as_json_spells_them() {
        for ok in [
            "0", "-0", "12", "-1.5", "1e9", "1E+9", "2.50e-3", "true", "false", "null",
        ] {
            assert!(literal(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "tru", "nul", "True", "1.2.3", "0x10",
            "NaN",
        ] {
            assert!(!literal(bad.as_bytes()), "{bad}");
        }
    }
}
