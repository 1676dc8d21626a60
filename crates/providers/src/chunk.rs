//! OpenAI `chat.completion.chunk` events written by the adapters that translate another vendor's
//! stream (Anthropic, Gemini) into OpenAI's: borrowed shapes, serialized into one reused buffer,
//! so a relayed token costs no allocation ("The chat completion chunk object",
//! <https://platform.openai.com/docs/api-reference/chat-streaming/streaming>).

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use switchyard_api::openai::{JsonStr, Usage as OpenAiUsage};

use crate::{ProviderError, StreamItem};

/// Seconds since the Unix epoch, for `created`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes one stream's chunks: its id, model and creation time, and the buffer they are built in.
pub(crate) struct ChunkWriter {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) created: u64,
    /// Every chunk's JSON is written here and split off: once the relay has dropped the chunks
    /// before it, the buffer takes its memory back instead of allocating (`BytesMut::reserve`).
    buf: BytesMut,
}

impl ChunkWriter {
    pub(crate) fn new(model: String) -> Self {
        ChunkWriter {
            id: String::new(),
            model,
            created: unix_now(),
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// A chunk with one choice: `delta`, and `finish` as its `finish_reason`.
    pub(crate) fn chunk(
        &mut self,
        delta: DeltaOut<'_>,
        finish: Option<&str>,
    ) -> Result<Bytes, ProviderError> {
        let choices = [ChoiceOut {
            index: 0,
            delta,
            finish_reason: finish,
        }];
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: None,
        };
        encode(&mut self.buf, &chunk)
    }

    /// The usage-only chunk (no choices) a client asks for with `stream_options.include_usage`.
    pub(crate) fn usage_chunk(&mut self, usage: &OpenAiUsage) -> Result<Bytes, ProviderError> {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: Some(usage),
        };
        encode(&mut self.buf, &chunk)
    }
}

/// The borrowed chunk we write: `chat.completion.chunk`.
#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a OpenAiUsage>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
pub(crate) struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<TextOut<'a>>,
    /// The reasoning field DeepSeek and vLLM use; OpenAI has none for chat completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reasoning_content: Option<TextOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<[ToolDeltaOut<'a>; 1]>,
}

/// A tool call's delta: the first names the call (`id`, `type`, function name), later ones
/// carry only more of the arguments.
#[derive(Serialize)]
pub(crate) struct ToolDeltaOut<'a> {
    pub(crate) index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<&'static str>,
    pub(crate) function: FunctionDeltaOut<'a>,
    /// Vendor data on the call (Google's `{"google": {"thought_signature": ...}}`); left out
    /// when none, as OpenAI's own chunks have no such field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) extra_content: Option<ExtraContentOut<'a>>,
}

/// A tool call's `extra_content`, borrowed. Google's OpenAI-compatible endpoint puts Gemini's
/// thought signature here (<https://ai.google.dev/gemini-api/docs/thought-signatures>).
#[derive(Serialize, Clone, Copy)]
pub(crate) struct ExtraContentOut<'a> {
    google: GoogleExtraOut<'a>,
}

#[derive(Serialize, Clone, Copy)]
struct GoogleExtraOut<'a> {
    thought_signature: TextOut<'a>,
}

impl<'a> ExtraContentOut<'a> {
    pub(crate) fn google_thought_signature(signature: TextOut<'a>) -> Self {
        ExtraContentOut {
            google: GoogleExtraOut {
                thought_signature: signature,
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<&'a str>,
    /// (More of) the arguments object's JSON text, written as a JSON string.
    pub(crate) arguments: TextOut<'a>,
}

/// A string for the chunk: one of ours, or the vendor's own as it stood in its event (written
/// through unchanged, escapes included: no decoding and re-escaping per token).
#[derive(Serialize, Clone, Copy)]
#[serde(untagged)]
pub(crate) enum TextOut<'a> {
    Str(&'a str),
    Json(JsonStr<'a>),
}

/// `data: {json}\n\n`, built in the shared buffer and split off it. The server drops each
/// chunk once written, so the buffer's memory comes back before the next; when a chunk is still
/// held, the ones after it go to a fresh 4 KiB buffer: one allocation per few dozen chunks, not
/// one per chunk.
fn encode(buf: &mut BytesMut, chunk: &ChunkOut<'_>) -> Result<Bytes, ProviderError> {
    use bytes::BufMut as _;
    // Room for a typical chunk; reclaims the buffer's own memory when nothing holds it.
    buf.reserve(512);
    buf.extend_from_slice(b"data: ");
    let mut writer = buf.writer();
    let written = serde_json::to_writer(&mut writer, chunk);
    let buf = writer.into_inner();
    if let Err(e) = written {
        buf.clear();
        return Err(ProviderError::protocol(format!(
            "could not encode a chunk: {e}"
        )));
    }
    buf.extend_from_slice(b"\n\n");
    Ok(buf.split().freeze())
}

pub(crate) fn data_item(bytes: Bytes, content: bool, usage_only: bool) -> StreamItem {
    StreamItem::Data {
        bytes,
        content,
        usage_only,
    }
}
