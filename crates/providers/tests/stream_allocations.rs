//! The stream tap reads every chunk of every stream on the request's thread, so reading one must
//! not touch the heap: this counts the allocations `openai_sse_stream` makes over a long stream
//! of OpenAI chunks (each event as its own received piece, as upstreams write them).
#![allow(unsafe_code)] // a counting wrapper around the system allocator, for this test only
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use futures_util::Stream;
use switchyard_providers::{
    anthropic::anthropic_sse_stream, gemini::gemini_sse_stream, openai::openai_sse_stream,
    ProviderError, StreamItem,
};

/// Counts allocations (and reallocations) made by the thread that armed it.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note() {
    let _ = ALLOCATIONS.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns what it returned and how many allocations it made on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|c| c.set(Some(0)));
    let out = f();
    let n = ALLOCATIONS.with(|c| c.replace(None)).unwrap_or(0);
    (out, n)
}

/// The stream's next item, which must be ready: all of its input is there.
fn next_ready(
    stream: Pin<&mut impl Stream<Item = Result<StreamItem, ProviderError>>>,
) -> StreamItem {
    match stream.poll_next(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Some(item)) => item.unwrap(),
        other => panic!("the stream should have an item ready, got {other:?}"),
    }
}

/// The `i`th token as text, and as it stands in JSON: every third holds a newline and every
/// third quotes, so escapes are read too.
fn token(i: usize) -> (String, String) {
    match i % 3 {
        0 => (format!(" word{i}"), format!(" word{i}")),
        1 => (format!(" line{i}\n"), format!(" line{i}\\n")),
        _ => (format!(" \"q{i}\""), format!(" \\\"q{i}\\\"")),
    }
}

/// A chunk as OpenAI's streaming reference shows it ("The chat completion chunk object",
/// https://platform.openai.com/docs/api-reference/chat-streaming/streaming).
fn chunk(i: usize) -> Bytes {
    let content = token(i).1;
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-abc123\",\"object\":\"chat.completion.chunk\",\"created\":1733000000,\
         \"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{{\
         \"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"logprobs\":null,\"finish_reason\":null}}],\
         \"usage\":null}}\n\n"
    ))
}

#[test]
fn reading_a_streamed_chunk_allocates_nothing() {
    const CHUNKS: usize = 2_000;
    let mut pieces: Vec<Result<Bytes, ProviderError>> = (0..CHUNKS).map(|i| Ok(chunk(i))).collect();
    pieces.push(Ok(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-abc123\",\"object\":\"chat.completion.chunk\",\"choices\":[],\
          \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2000,\"total_tokens\":2009}}\n\n",
    )));
    pieces.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    let mut stream = pin!(openai_sse_stream(futures_util::stream::iter(pieces)));
    let mut next = || next_ready(stream.as_mut());

    // The first chunk sets the stream up; what matters is every chunk after it.
    assert!(matches!(next(), StreamItem::Data { content: true, .. }));
    let (content_chunks, allocations) = counted(|| {
        (1..CHUNKS)
            .filter(|_| matches!(next(), StreamItem::Data { content: true, .. }))
            .count()
    });
    assert_eq!(content_chunks, CHUNKS - 1);
    println!("{allocations} allocations over {content_chunks} chunks");
    // Only the summary's answer text grows (doubling: about a dozen times for 19 KB); a
    // per-chunk allocation would make this at least 1,999, and one per escaped token 1,333.
    assert!(
        allocations <= 16,
        "{allocations} allocations over {content_chunks} chunks"
    );

    assert!(matches!(
        next(),
        StreamItem::Data {
            content: false,
            usage_only: true,
            ..
        }
    ));
    let StreamItem::End(summary) = next() else {
        panic!("expected the end of the stream");
    };
    assert_eq!(summary.usage.unwrap().output_tokens, 2_000);
    let expected: String = (0..CHUNKS).map(|i| token(i).0).collect();
    assert_eq!(summary.output_text, expected);
}

/// An Anthropic stream as the Messages streaming reference shows it
/// (https://docs.anthropic.com/en/docs/build-with-claude/streaming): the tap translates each
/// `content_block_delta` into an OpenAI chunk, and that too must not allocate per token.
#[test]
fn translating_an_anthropic_token_allocates_nothing() {
    const DELTAS: usize = 2_000;
    let event =
        |name: &str, data: String| Ok(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    let mut pieces: Vec<Result<Bytes, ProviderError>> = vec![
        event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#.to_string(),
        ),
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_string(),
        ),
    ];
    for i in 0..DELTAS {
        let text = token(i).1;
        pieces.push(event(
            "content_block_delta",
            format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#),
        ));
    }
    pieces.push(event(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.to_string(),
    ));
    pieces.push(event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2000}}"#.to_string(),
    ));
    pieces.push(event(
        "message_stop",
        r#"{"type":"message_stop"}"#.to_string(),
    ));
    let mut stream = pin!(anthropic_sse_stream(futures_util::stream::iter(pieces)));
    let mut next = || next_ready(stream.as_mut());

    // The role chunk, then the first token (which sets the stream up).
    assert!(matches!(next(), StreamItem::Data { content: false, .. }));
    let StreamItem::Data {
        bytes,
        content: true,
        ..
    } = next()
    else {
        panic!("expected the first token's chunk");
    };
    let relayed = [bytes];
    let (last, allocations) = counted(|| {
        // Each chunk is dropped before the next is asked for, as the server does once it has
        // written it to the client (`switchyard_h1`'s body loop); the last one is kept to read.
        let mut last = None;
        for i in 1..DELTAS {
            match next() {
                StreamItem::Data {
                    bytes,
                    content: true,
                    ..
                } => {
                    if i == DELTAS - 1 {
                        last = Some(bytes);
                    }
                }
                other => panic!("expected a token's chunk, got {other:?}"),
            }
        }
        last
    });
    println!(
        "{allocations} allocations over {} translated chunks",
        DELTAS - 1
    );
    assert!(
        allocations <= 16,
        "{allocations} allocations over {} translated chunks",
        DELTAS - 1
    );

    // What the client gets is OpenAI's chunk with the token's text, escapes included.
    let content = |chunk: &Bytes| {
        let v: serde_json::Value =
            serde_json::from_slice(chunk.strip_prefix(b"data: ").unwrap()).unwrap();
        v["choices"][0]["delta"]["content"].clone()
    };
    assert_eq!(content(&relayed[0]), token(0).0);
    assert_eq!(content(&last.unwrap()), token(DELTAS - 1).0);
    // Then the finish and usage chunks, and the end.
    for _ in 0..3 {
        match next() {
            StreamItem::Data { content, .. } => assert!(!content),
            StreamItem::End(summary) => {
                assert_eq!(summary.usage.unwrap().output_tokens, 2_000);
                let expected: String = (0..DELTAS).map(|i| token(i).0).collect();
                assert_eq!(summary.output_text, expected);
                return;
            }
        }
    }
    panic!("the stream did not end after its finish and usage chunks");
}

/// A Gemini stream as "Generating content" documents it (https://ai.google.dev/api/generate-content,
/// `streamGenerateContent?alt=sse`): each event a whole `GenerateContentResponse` with the usage
/// so far, framed with `\r\n\r\n`; the last carries `finishReason`; every part a
/// `thoughtSignature` ("Thought signatures", https://ai.google.dev/gemini-api/docs/thought-signatures),
/// read borrowed. The translation into OpenAI chunks must not allocate per token either.
#[test]
fn translating_a_gemini_token_allocates_nothing() {
    const EVENTS: usize = 2_000;
    let event = |text: &str, finish: &str, done: usize| {
        Ok(Bytes::from(format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\",\"thoughtSignature\": \"CiQBjz1rX+Yz/9kQ2w==\"}}],\"role\": \"model\"}}{finish},\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 9,\"candidatesTokenCount\": {done},\"totalTokenCount\": {}}},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mKdAaeCBA5Dqz7IPhbDO6Ak\"}}\r\n\r\n",
            9 + done
        )))
    };
    let mut pieces: Vec<Result<Bytes, ProviderError>> =
        (0..EVENTS).map(|i| event(&token(i).1, "", i + 1)).collect();
    pieces.push(event("", ",\"finishReason\": \"STOP\"", EVENTS));
    let mut stream = pin!(gemini_sse_stream(
        futures_util::stream::iter(pieces),
        "gemini-2.5-flash".to_string()
    ));
    let mut next = || next_ready(stream.as_mut());

    // The role chunk and the first token (which set the stream up), then every token after.
    let mut first = None;
    while first.is_none() {
        if let StreamItem::Data {
            bytes,
            content: true,
            ..
        } = next()
        {
            first = Some(bytes);
        }
    }
    let (last, allocations) = counted(|| {
        let mut last = None;
        for i in 1..EVENTS {
            match next() {
                StreamItem::Data {
                    bytes,
                    content: true,
                    ..
                } => {
                    if i == EVENTS - 1 {
                        last = Some(bytes);
                    }
                }
                other => panic!("expected a token's chunk, got {other:?}"),
            }
        }
        last
    });
    println!(
        "{allocations} allocations over {} translated chunks",
        EVENTS - 1
    );
    assert!(
        allocations <= 16,
        "{allocations} allocations over {} translated chunks",
        EVENTS - 1
    );
    let content = |chunk: &Bytes| {
        let v: serde_json::Value =
            serde_json::from_slice(chunk.strip_prefix(b"data: ").unwrap()).unwrap();
        v["choices"][0]["delta"]["content"].clone()
    };
    assert_eq!(content(&first.unwrap()), token(0).0);
    assert_eq!(content(&last.unwrap()), token(EVENTS - 1).0);
    for _ in 0..4 {
        if let StreamItem::End(summary) = next() {
            let usage = summary.usage.unwrap();
            assert_eq!((usage.input_tokens, usage.output_tokens), (9, 2_000));
            let expected: String = (0..EVENTS).map(|i| token(i).0).collect();
            assert_eq!(summary.output_text, expected);
            return;
        }
    }
    panic!("the stream did not end after its finish chunk");
}
