//! The "stream back" phase: forwards a provider's stream to the client event by event as it
//! arrives, watches for stalls, and hands the request's outcome to the meter when the stream
//! ends — or when the client goes away, in which case dropping the relay drops the upstream
//! stream and so cancels the upstream call.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use switchyard_api::sse::DONE;
use switchyard_providers::{ChunkStream, ProviderError, ProviderErrorKind, StreamItem};
use tokio::time::{Instant, Sleep};

use crate::{finish::Finish, messages::StreamTranslator};

/// The wire format the client speaks.
pub enum Face {
    /// OpenAI chunks, forwarded as they came; the usage chunk only if the client asked.
    OpenAi { include_usage: bool },
    /// Anthropic events, translated chunk by chunk.
    Anthropic(Box<StreamTranslator>),
}

pub struct Relay {
    head: std::vec::IntoIter<StreamItem>,
    rest: ChunkStream,
    /// Fires at the idle limit or the deadline. Not reset per event (that would take the timer
    /// driver's lock per token): when it fires early, it is re-armed from `last_event`.
    timer: Pin<Box<Sleep>>,
    last_event: Instant,
    idle_limit: Duration,
    deadline: Instant,
    face: Face,
    finish: Option<Finish>,
    done: bool,
}

impl Relay {
    pub fn new(
        head: Vec<StreamItem>,
        rest: ChunkStream,
        idle_limit: Duration,
        deadline: Instant,
        face: Face,
        finish: Finish,
    ) -> Self {
        let first = (Instant::now() + idle_limit).min(deadline);
        Relay {
            head: head.into_iter(),
            rest,
            timer: Box::pin(tokio::time::sleep_until(first)),
            last_event: Instant::now(),
            idle_limit,
            deadline,
            face,
            finish: Some(finish),
            done: false,
        }
    }

    /// Turns one item into bytes for the client (or nothing, for a usage chunk the client did
    /// not ask for).
    fn on_item(&mut self, item: StreamItem) -> Option<Bytes> {
        match item {
            StreamItem::Data {
                bytes,
                content,
                usage_only,
            } => {
                if content {
                    if let Some(f) = self.finish.as_mut() {
                        f.first_content();
                    }
                }
                match &mut self.face {
                    Face::OpenAi { include_usage } => {
                        (!usage_only || *include_usage).then_some(bytes)
                    }
                    Face::Anthropic(t) => {
                        let mut out = Vec::new();
                        t.on_openai_event(&bytes, &mut out);
                        (!out.is_empty()).then(|| Bytes::from(out))
                    }
                }
            }
            StreamItem::End(summary) => {
                self.done = true;
                let last = match &mut self.face {
                    Face::OpenAi { .. } => Bytes::from_static(DONE),
                    Face::Anthropic(t) => {
                        let mut out = Vec::new();
                        t.on_end(summary.usage, &mut out);
                        Bytes::from(out)
                    }
                };
                if let Some(f) = self.finish.take() {
                    f.stream_ended(summary);
                }
                Some(last)
            }
        }
    }

    fn on_error(&mut self, e: ProviderError) -> Bytes {
        self.done = true;
        let api = e.to_api_error();
        if let Some(f) = self.finish.take() {
            f.stream_failed(&e);
        }
        let mut out = Vec::with_capacity(128);
        match &mut self.face {
            Face::OpenAi { .. } => {
                switchyard_api::sse::encode_data(&mut out, &api.to_openai_json())
            }
            Face::Anthropic(t) => t.on_error(&api, &mut out),
        }
        Bytes::from(out)
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        while let Some(item) = this.head.next() {
            if let Some(b) = this.on_item(item) {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.done {
                return Poll::Ready(None);
            }
        }
        loop {
            match this.rest.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    this.last_event = Instant::now();
                    if let Some(b) = this.on_item(item) {
                        return Poll::Ready(Some(Ok(b)));
                    }
                    if this.done {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Ok(this.on_error(e)))),
                Poll::Ready(None) => {
                    let e = ProviderError::new(
                        ProviderErrorKind::Io,
                        "upstream stream ended without finishing",
                    );
                    return Poll::Ready(Some(Ok(this.on_error(e))));
                }
                Poll::Pending => {
                    while this.timer.as_mut().poll(cx).is_ready() {
                        let due = (this.last_event + this.idle_limit).min(this.deadline);
                        if Instant::now() < due {
                            this.timer.as_mut().reset(due);
                            continue;
                        }
                        let what = if Instant::now() >= this.deadline {
                            "the stream exceeded its total time limit"
                        } else {
                            "the stream stalled (no event within the idle limit)"
                        };
                        let e = ProviderError::new(ProviderErrorKind::Timeout, what);
                        return Poll::Ready(Some(Ok(this.on_error(e))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            f.client_went_away();
        }
    }
}

use std::future::Future as _;
