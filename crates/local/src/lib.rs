//! The built-in local engine: a llama-family GGUF model (SmolLM2-135M-Instruct is the one we
//! test with) run in process on the CPU with candle, behind [`switchyard_providers::Provider`]
//! with kind `local`.
//!
//! * [`LocalConfig`] → [`Local::build`] loads the weights (our own llama forward pass in
//!   `model.rs` over candle's quantized kernels; Q4_1 weights are re-encoded, see
//!   [`WeightFormat`]) and the tokenizer the GGUF carries, and starts `max_concurrency`
//!   generation threads.
//! * Requests are rendered with the model's ChatML template, queued FIFO, and answered in the
//!   OpenAI Chat Completions shapes (a `chat.completion` body, or `chat.completion.chunk` SSE
//!   events token by token) with exact token usage and an energy figure.
//!
//! Wire format: OpenAI API reference, "Create chat completion" and "The chat completion chunk
//! object" (<https://platform.openai.com/docs/api-reference/chat>).

mod config;
mod energy;
mod engine;
mod model;
mod text;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use candle_core::quantized::gguf_file;
use switchyard_api::{
    openai::{
        ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta, ResponseMessage, Usage,
    },
    ApiError, TokenUsage,
};
use switchyard_providers::{
    BoxFuture, ChatCall, ChatOutput, Completion, Provider, ProviderError, ProviderErrorKind,
    StreamItem, StreamSummary,
};
use tokio::sync::mpsc;

pub use config::{LocalConfig, WeightFormat};
pub use energy::thread_cpu_seconds;
pub use engine::{EngineStats, Event, Finished, GenParams, Timings};
pub use text::TextCodec;

use engine::Engine;
use model::{Model, Weights, MAX_SEQ_LEN};

/// The local engine as a provider.
pub struct Local {
    name: String,
    /// The model name reported in answers (the GGUF's `general.name`, else the file stem).
    model_name: String,
    engine: Engine,
}

impl Local {
    /// Loads the model (reads the GGUF; downloads it first when the config names a Hugging Face
    /// file) and starts the generation threads.
    pub fn build(name: &str, cfg: &LocalConfig) -> Result<Local, String> {
        cfg.validate()?;
        let path = match (&cfg.model_path, &cfg.hf_repo, &cfg.hf_file) {
            (Some(p), _, _) => p.clone(),
            (None, Some(repo), Some(file)) => download_hf(repo, file)?,
            _ => return Err("model_path (or hf_repo + hf_file) is required".into()),
        };
        let threads = cfg.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        // Candle's quantized kernels run on one process-wide pool sized from these variables
        // at first use; gemm (attention during prefill) reads RAYON_NUM_THREADS.
        for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, threads.to_string());
            }
        }
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("model_path {}: {e}", path.display()))?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| format!("{} is not a readable GGUF file: {e}", path.display()))?;
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(format!(
                "{}: architecture '{arch}' is not supported (only llama-family GGUF models)",
                path.display()
            ));
        }
        let file_context = ct
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .unwrap_or(MAX_SEQ_LEN);
        // The rotary tables stop at MAX_SEQ_LEN positions.
        let context_length = match cfg.context_length {
            Some(c) if c > MAX_SEQ_LEN => {
                return Err(format!(
                    "context_length {c} exceeds the engine's maximum of {MAX_SEQ_LEN} tokens"
                ))
            }
            Some(c) => c,
            None => file_context.min(MAX_SEQ_LEN),
        };
        let model_name = ct
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "local".into())
            });
        let codec = Arc::new(TextCodec::from_gguf(&ct)?);
        let weights = Weights::from_gguf(&ct, &mut file, cfg.weight_format)
            .map_err(|e| format!("cannot load the weights from {}: {e}", path.display()))?;
        let formats = weights.formats.clone();
        let model = Model::new(Arc::new(weights));
        let engine = Engine::start(
            model,
            codec,
            context_length,
            cfg.max_concurrency,
            threads,
            cfg.cpu_watts,
        )?;
        tracing::info!(provider = name, model = %model_name, context_length, threads,
            workers = cfg.max_concurrency, weights = %formats, "local engine loaded");
        Ok(Local {
            name: name.to_string(),
            model_name,
            engine,
        })
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub fn context_length(&self) -> usize {
        self.engine.context_length()
    }

    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    pub fn codec(&self) -> &TextCodec {
        self.engine.codec()
    }

    /// The prompt tokens for a request: its messages rendered with the chat template.
    pub fn prompt_tokens(&self, req: &ChatRequest) -> Result<Vec<u32>, ProviderError> {
        let prompt = self.codec().render_chat(&req.messages);
        self.codec()
            .encode(&prompt)
            .map_err(|e| ProviderError::new(ProviderErrorKind::Status(500), e))
    }

    /// Checks a request and turns it into the prompt tokens and generation parameters.
    pub fn prepare(&self, req: &ChatRequest) -> Result<(Vec<u32>, GenParams), ProviderError> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(invalid(
                "n",
                "the local engine returns one choice: n must be 1",
            ));
        }
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(invalid("tools", "the local engine does not support tools"));
        }
        let temperature = req.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(invalid(
                "temperature",
                format!("{temperature} is not a valid temperature: it must be between 0 and 2"),
            ));
        }
        let top_p = req.top_p.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&top_p) {
            return Err(invalid(
                "top_p",
                format!("{top_p} is not a valid top_p: it must be between 0 and 1"),
            ));
        }
        let stops = req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
        if stops.len() > 4 {
            return Err(invalid("stop", "stop may hold at most 4 sequences"));
        }
        let field = if req.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        if req.max_output_tokens() == Some(0) {
            return Err(invalid(field, format!("{field} must be at least 1")));
        }
        let prompt = self.prompt_tokens(req)?;
        let limit = self.context_length();
        let max_tokens = match req.max_output_tokens() {
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            None => limit.saturating_sub(prompt.len()).max(1),
        };
        if prompt.len().saturating_add(max_tokens) > limit {
            let msg = format!(
                "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                prompt.len().saturating_add(max_tokens),
                prompt.len()
            );
            let mut e = ProviderError::new(ProviderErrorKind::InvalidRequest, msg.clone());
            e.body = Some(Bytes::from(
                ApiError::invalid(msg)
                    .with_param("messages")
                    .with_code("context_length_exceeded")
                    .to_openai_json(),
            ));
            return Err(e);
        }
        let seed = req.seed.map(|s| s as u64).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok((
            prompt,
            GenParams {
                max_tokens,
                temperature,
                top_p,
                seed,
                stops,
            },
        ))
    }

    /// Queues a prepared request; the engine's events come on the receiver.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        params: GenParams,
    ) -> Result<mpsc::Receiver<Event>, ProviderError> {
        self.engine
            .submit(prompt, params)
            .map_err(|e| ProviderError::new(ProviderErrorKind::Status(503), e))
    }

    async fn chat_inner(&self, call: ChatCall) -> Result<ChatOutput, ProviderError> {
        let req = &call.request;
        let (prompt, params) = self.prepare(req)?;
        let mut rx = self.submit(prompt, params)?;
        // Wait for the prompt to be processed, so that engine failures become errors
        // rather than broken streams.
        match rx.recv().await {
            Some(Event::Started) => {}
            Some(Event::Error(e)) => return Err(engine_error(e)),
            _ => {
                return Err(engine_error(
                    "the generation stopped before it started".into(),
                ))
            }
        }
        let meta = ChunkMeta {
            id: new_id(),
            created: unix_now(),
            model: call.model.to_string(),
        };
        if req.is_stream() {
            Ok(ChatOutput::Stream(stream_events(rx, meta)))
        } else {
            complete(rx, meta).await.map(ChatOutput::Complete)
        }
    }
}

impl Provider for Local {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn chat(&self, call: ChatCall) -> BoxFuture<'_, Result<ChatOutput, ProviderError>> {
        Box::pin(self.chat_inner(call))
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ProviderError {
    let message = message.into();
    let mut e = ProviderError::new(ProviderErrorKind::InvalidRequest, message.clone());
    e.body = Some(Bytes::from(
        ApiError::invalid(message)
            .with_param(param)
            .to_openai_json(),
    ));
    e
}

fn engine_error(e: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Status(500), format!("local engine: {e}"))
}

struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
}

impl ChunkMeta {
    fn chunk(&self, delta: Delta, finish_reason: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_string),
            }],
            usage: None,
        }
    }
}

fn sse(chunk: &ChatChunk) -> Bytes {
    let mut out = Vec::with_capacity(256);
    let json = serde_json::to_vec(chunk).unwrap_or_default();
    switchyard_api::sse::encode_data(&mut out, &json);
    Bytes::from(out)
}

fn usage_of(f: &Finished) -> TokenUsage {
    TokenUsage {
        input_tokens: f.prompt_tokens as u64,
        output_tokens: f.completion_tokens as u64,
        ..TokenUsage::default()
    }
}

/// Collects a whole answer into a `chat.completion` body.
async fn complete(
    mut rx: mpsc::Receiver<Event>,
    meta: ChunkMeta,
) -> Result<Completion, ProviderError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(f)) => {
                let usage = usage_of(&f);
                let body = ChatCompletion {
                    id: meta.id,
                    object: "chat.completion".into(),
                    created: meta.created,
                    model: meta.model.clone(),
                    choices: vec![Choice {
                        index: 0,
                        message: ResponseMessage {
                            role: "assistant".into(),
                            content: Some(text),
                            ..ResponseMessage::default()
                        },
                        finish_reason: Some(f.finish_reason.into()),
                        logprobs: None,
                    }],
                    usage: Some(Usage::from_token_usage(&usage)),
                    system_fingerprint: None,
                };
                let body = serde_json::to_vec(&body).map_err(|e| engine_error(e.to_string()))?;
                return Ok(Completion {
                    body: Bytes::from(body),
                    usage: Some(usage),
                    response_model: Some(meta.model),
                    output_text: None,
                    energy: f.energy,
                });
            }
            Some(Event::Error(e)) => return Err(engine_error(e)),
            Some(Event::Started) => {}
            None => return Err(engine_error("the generation stopped".into())),
        }
    }
}

/// The SSE stream: a role chunk, content chunks as text arrives, a finish chunk, a usage-only
/// chunk, then the summary. Dropping the stream drops the receiver, which stops generation.
fn stream_events(rx: mpsc::Receiver<Event>, meta: ChunkMeta) -> switchyard_providers::ChunkStream {
    type Item = Result<StreamItem, ProviderError>;
    struct State {
        rx: mpsc::Receiver<Event>,
        meta: ChunkMeta,
        text: String,
        ready: VecDeque<Item>,
        ended: bool,
    }
    let opening = Delta {
        role: Some("assistant".into()),
        content: Some(String::new()),
        tool_calls: None,
    };
    let first = StreamItem::Data {
        bytes: sse(&meta.chunk(opening, None)),
        content: false,
        usage_only: false,
    };
    let state = State {
        rx,
        meta,
        text: String::new(),
        ready: VecDeque::from([Ok(first)]),
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.ready.pop_front() {
                return Some((item, st));
            }
            if st.ended {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Started) => {}
                Some(Event::Text(t)) => {
                    st.text.push_str(&t);
                    let delta = Delta {
                        content: Some(t),
                        ..Delta::default()
                    };
                    st.ready.push_back(Ok(StreamItem::Data {
                        bytes: sse(&st.meta.chunk(delta, None)),
                        content: true,
                        usage_only: false,
                    }));
                }
                Some(Event::Done(f)) => {
                    let usage = usage_of(&f);
                    st.ready.push_back(Ok(StreamItem::Data {
                        bytes: sse(&st.meta.chunk(Delta::default(), Some(f.finish_reason))),
                        content: false,
                        usage_only: false,
                    }));
                    // A separate item, so the gateway can drop it for clients that did not
                    // ask for usage (`stream_options.include_usage`).
                    let mut usage_chunk = st.meta.chunk(Delta::default(), None);
                    usage_chunk.choices.clear();
                    usage_chunk.usage = Some(Usage::from_token_usage(&usage));
                    st.ready.push_back(Ok(StreamItem::Data {
                        bytes: sse(&usage_chunk),
                        content: false,
                        usage_only: true,
                    }));
                    st.ready.push_back(Ok(StreamItem::End(StreamSummary {
                        usage: Some(usage),
                        response_model: Some(st.meta.model.clone()),
                        finish_reason: Some(f.finish_reason.into()),
                        output_text: std::mem::take(&mut st.text),
                        energy: f.energy,
                    })));
                    st.ended = true;
                }
                Some(Event::Error(e)) => {
                    st.ready.push_back(Err(engine_error(e)));
                    st.ended = true;
                }
                None => {
                    st.ready
                        .push_back(Err(engine_error("the generation stopped".into())));
                    st.ended = true;
                }
            }
        }
    });
    Box::pin(stream)
}

fn new_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "chatcmpl-local-{:x}{:08x}",
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Downloads `file` from the Hugging Face repository `repo` once, into
/// `$SWITCHYARD_MODEL_DIR` (else `~/.cache/switchyard/models`), and returns its path.
/// Needs network access to huggingface.co; untested here (this machine has none).
fn download_hf(repo: &str, file: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("SWITCHYARD_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/switchyard/models"))
        })
        .ok_or("set SWITCHYARD_MODEL_DIR to a folder for downloaded models")?
        .join(repo.replace('/', "--"));
    let dest = dir.join(file);
    if dest.is_file() {
        return Ok(dest);
    }
    let url = format!("https://huggingface.co/{repo}/resolve/main/{file}");
    let parent = dest.parent().unwrap_or(&dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let part = dest.with_extension("part");
    // Its own thread and runtime, so this works whether or not the caller is inside tokio.
    let (u, p) = (url.clone(), part.clone());
    let fetched = std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut resp = reqwest::get(&u).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let mut out = std::fs::File::create(&p).map_err(|e| e.to_string())?;
            while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
                std::io::Write::write_all(&mut out, &chunk).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the download thread failed".to_string())?;
    fetched.map_err(|e| format!("downloading {url}: {e}"))?;
    std::fs::rename(&part, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest)
}
