use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use switchyard_api::TokenUsage;

use crate::ProviderError;

/// A streamed answer in OpenAI SSE framing. Adapters never emit `data: [DONE]`: the gateway
/// writes it after [`StreamItem::End`].
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ProviderError>> + Send>>;

#[derive(Debug, Clone)]
pub enum StreamItem {
    /// Whole OpenAI SSE events (`data: {chat.completion.chunk}\n\n`), to forward as they are.
    Data {
        bytes: Bytes,
        /// The events carry answer content (text, reasoning or a tool call), as opposed to
        /// a role-only opening chunk: the first such item marks time to first token.
        content: bool,
        /// The events are only the final usage chunk (`choices: []`), which a client gets
        /// only if it asked with `stream_options.include_usage`.
        usage_only: bool,
    },
    /// The provider finished the stream.
    End(StreamSummary),
}

/// What the provider reported over a whole stream.
#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    pub usage: Option<TokenUsage>,
    pub response_model: Option<String>,
    pub finish_reason: Option<String>,
    /// The streamed answer text, for counting tokens when `usage` is `None`.
    pub output_text: String,
    /// Energy the provider measured or estimated itself.
    pub energy: Option<crate::Energy>,
}
