//! Hand-written `Deserialize` for the request types that keep unmodelled fields.
//!
//! Why not `#[serde(flatten)]`: serde deserializes a struct with a flattened field by first
//! buffering the whole object into its private `Content` tree (an allocation per key and per
//! value, nested objects included) and then deserializing the fields again from that tree. A chat
//! request's `messages` went through it twice (the request and each message flatten), on every
//! request on the gateway's hot path. The visitor below reads each known field straight into its
//! type and only the unknown ones into `extra`.
//!
//! Behaviour matches the derived code: a missing required field is "missing field `model`", a
//! wrong type names what was expected, `null` for an optional field is `None`. One difference: a
//! repeated key keeps its last value (as JSON parsers commonly do) instead of failing.

use std::borrow::Cow;

use serde::de::{Deserializer, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Implements `Deserialize` for a struct with required fields, optional (`Option`) fields and
/// `extra: serde_json::Map<String, Value>` holding every other field. JSON names are the Rust
/// field names. The struct must implement `Default`.
macro_rules! deserialize_with_extra {
    ($ty:ident { required: [$($req:ident),* $(,)?], optional: [$($opt:ident),* $(,)?] $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct StructVisitor;
                impl<'de> serde::de::Visitor<'de> for StructVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        let mut out = <$ty>::default();
                        $(let mut $req = None;)*
                        while let Some(key) = map.next_key::<$crate::de::Key<'de>>()? {
                            match &*key.0 {
                                $(stringify!($req) => $req = Some(map.next_value()?),)*
                                $(stringify!($opt) => out.$opt = map.next_value()?,)*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    out.extra.insert(key.0.into_owned(), value);
                                }
                            }
                        }
                        $(
                            out.$req = $req.ok_or_else(|| {
                                <A::Error as serde::de::Error>::missing_field(stringify!($req))
                            })?;
                        )*
                        Ok(out)
                    }
                }
                d.deserialize_map(StructVisitor)
            }
        }
    };
}

pub(crate) use deserialize_with_extra;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use crate::anthropic::MessagesRequest;
    use crate::openai::{ChatRequest, Content, ContentPart, EmbeddingsRequest};

    #[test]
    fn known_fields_are_typed_and_every_other_field_is_kept() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi", "x_vendor": {"a": [1, 2]}},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_audio", "input_audio": {}}]}
            ],
            "stream": true,
            "stream_options": {"include_usage": true, "continuous": 1},
            "temperature": 0.5,
            "max_tokens": null,
            "logprobs": true,
            "reasoning_effort": "low"
        });
        let r: ChatRequest = serde_json::from_str(&body.to_string()).unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.stream, Some(true));
        assert_eq!(r.temperature, Some(0.5));
        assert_eq!(r.max_tokens, None, "null reads as absent");
        assert_eq!(r.extra.len(), 2);
        assert_eq!(r.extra["reasoning_effort"], "low");
        let opts = r.stream_options.as_ref().unwrap();
        assert_eq!(opts.include_usage, Some(true));
        assert_eq!(opts.extra["continuous"], 1);
        assert_eq!(r.messages[0].extra["x_vendor"], json!({"a": [1, 2]}));
        assert_eq!(r.messages[0].content, Some(Content::Text("hi".into())));
        match &r.messages[1].content {
            Some(Content::Parts(p)) => {
                assert_eq!(p.len(), 2);
                assert!(matches!(p[1], ContentPart::Other(_)));
            }
            other => panic!("parts expected, got {other:?}"),
        }
        // What is forwarded is what came in, field for field.
        let mut back = serde_json::to_value(&r).unwrap();
        back.as_object_mut()
            .unwrap()
            .insert("max_tokens".into(), json!(null));
        assert_eq!(back, body);
    }

    #[test]
    fn errors_name_the_field_as_serde_does() {
        let e = serde_json::from_str::<ChatRequest>(r#"{"messages": []}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `model`"), "{e}");
        let e = serde_json::from_str::<ChatRequest>(r#"{"model": 3, "messages": []}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid type: integer `3`, expected a string"),
            "{e}"
        );
        let e =
            serde_json::from_str::<ChatRequest>(r#"{"model": "m", "messages": [{}]}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `role`"), "{e}");
        let e = serde_json::from_str::<ChatRequest>(
            r#"{"model": "m", "messages": [{"role": "user", "content": 7}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("a string or an array of content parts"),
            "{e}"
        );
        let e = serde_json::from_str::<ChatRequest>("[]").unwrap_err();
        assert!(e.to_string().contains("expected struct ChatRequest"), "{e}");
        let e = serde_json::from_str::<MessagesRequest>(r#"{"model": "m", "messages": []}"#)
            .unwrap_err();
        assert!(e.to_string().contains("missing field `max_tokens`"), "{e}");
        let e = serde_json::from_str::<EmbeddingsRequest>(r#"{"model": "m"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `input`"), "{e}");
    }

    #[test]
    fn escaped_keys_and_texts_are_read() {
        // An escaped key cannot be borrowed from the input; it must still match.
        let r: ChatRequest = serde_json::from_str(
            r#"{"mod\u0065l": "m", "messages": [{"role": "user", "content": "a\nb"}], "x\u0041": 1}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.messages[0].content, Some(Content::Text("a\nb".into())));
        assert_eq!(r.extra["xA"], 1);
        // From a `Value` too (the learned router and tests build requests that way).
        let v = json!({"model": "m", "messages": [], "top_k": 3});
        let r: ChatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(r.extra["top_k"], 3);
    }
}
