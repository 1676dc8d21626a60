//! The local engine against the real SmolLM2-135M-Instruct GGUF.

mod common;

use common::*;
use futures_util::StreamExt;
use switchyard_api::openai::{Message, Stop};
use switchyard_providers::{ChatOutput, Provider, ProviderErrorKind, StreamItem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_answers_are_deterministic_and_sensible() {
    let local = local(|_| {});
    let req = request("What is the capital of France? Answer in one word.", |_| {});
    let (a, ca) = complete(&local, req.clone()).await;
    let (b, _) = complete(&local, req).await;
    let text = text_of(&a);
    assert_eq!(text, text_of(&b), "greedy decoding must repeat itself");
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert_eq!(a.object, "chat.completion");
    let usage = a.usage.unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 40);
    let energy = ca.energy.unwrap();
    assert!(energy.wh > 0.0, "{energy:?}");
    assert!(["measured-rapl", "estimated-cpu-time"].contains(&energy.method));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_with_a_seed_repeats_and_different_seeds_differ() {
    let local = local(|_| {});
    let with_seed = |seed| {
        request("Write a short poem about the sea.", move |r| {
            r.temperature = Some(1.0);
            r.top_p = Some(0.95);
            r.seed = Some(seed);
            r.max_tokens = Some(30);
        })
    };
    let a = text_of(&complete(&local, with_seed(7)).await.0);
    let b = text_of(&complete(&local, with_seed(7)).await.0);
    assert_eq!(a, b, "the same seed must give the same text");
    let mut others = vec![];
    for seed in [8, 9, 10] {
        others.push(text_of(&complete(&local, with_seed(seed)).await.0));
    }
    assert!(others.iter().any(|o| *o != a), "other seeds all gave {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_tokens_are_the_rendered_template_counted_by_the_tokenizer() {
    let local = local(|_| {});
    let req = request("What is 2024 + 17?", |_| {});
    let rendered = local.codec().render_chat(&req.messages);
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2024 + 17?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = local.codec().encode(&rendered).unwrap();
    // ChatML markers are single control tokens, and digits are split one by one (SmolLM2's
    // pre-tokenizer), so "2024" is four tokens.
    assert_eq!(ids[0], local.codec().encode("<|im_start|>").unwrap()[0]);
    assert_eq!(local.codec().encode("<|im_start|>").unwrap().len(), 1);
    assert_eq!(local.codec().encode("2024").unwrap().len(), 4);
    let (c, _) = complete(&local, req.clone()).await;
    assert_eq!(c.usage.unwrap().prompt_tokens, ids.len() as u64);

    // A system message replaces the default one.
    let mut with_system = req;
    with_system
        .messages
        .insert(0, Message::text("system", "Be brief."));
    let rendered = local.codec().render_chat(&with_system.messages);
    assert!(rendered.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"));
    assert!(!rendered.contains("SmolLM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_openai_shaped_and_matches_the_whole_answer() {
    let local = local(|_| {});
    let req = request("What is the capital of France? Answer in one word.", |_| {});
    let (whole, _) = complete(&local, req.clone()).await;
    let (events, summary) = stream(&local, req).await;

    let (first, content, _) = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(!content, "the role chunk is not content");
    let n = events.len();
    let (finish, _, finish_usage_only) = &events[n - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        whole.choices[0].finish_reason.clone().unwrap()
    );
    assert!(!finish_usage_only);
    let (usage, _, usage_only) = &events[n - 1];
    assert!(usage_only);
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    let whole_usage = whole.usage.clone().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], whole_usage.prompt_tokens);
    assert_eq!(
        usage["usage"]["completion_tokens"],
        whole_usage.completion_tokens
    );

    let pieces: Vec<&(serde_json::Value, bool, bool)> = events[1..n - 2].iter().collect();
    assert!(pieces.len() > 1, "content comes token by token");
    assert!(pieces.iter().all(|(_, content, _)| *content));
    let text: String = pieces
        .iter()
        .map(|(e, _, _)| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, text_of(&whole));
    assert_eq!(summary.output_text, text);
    let u = summary.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens),
        (whole_usage.prompt_tokens, whole_usage.completion_tokens)
    );
    assert!(summary.energy.is_some());
    assert!(events.iter().all(|(e, _, _)| e["id"] == events[0].0["id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_and_max_tokens_end_the_answer() {
    let local = local(|_| {});
    let (full, _) = complete(
        &local,
        request("What is the capital of France? Answer in one word.", |_| {}),
    )
    .await;
    let full = text_of(&full);
    let at = full.find("Paris").expect("the greedy answer names Paris");
    let (cut, _) = complete(
        &local,
        request("What is the capital of France? Answer in one word.", |r| {
            r.stop = Some(Stop::One("Paris".into()))
        }),
    )
    .await;
    assert_eq!(text_of(&cut), full[..at]);
    assert_eq!(cut.choices[0].finish_reason.as_deref(), Some("stop"));

    let (short, _) = complete(
        &local,
        request("Tell me a long story about a dragon.", |r| {
            r.max_tokens = Some(5)
        }),
    )
    .await;
    assert_eq!(short.usage.unwrap().completion_tokens, 5);
    assert_eq!(short.choices[0].finish_reason.as_deref(), Some("length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_generation() {
    let local = local(|_| {});
    let long = |r: &mut switchyard_api::openai::ChatRequest| {
        r.max_tokens = Some(300);
        r.stream = Some(true);
    };
    // The same request run to the end generates far more than the cancelled one may.
    let (full, _) = complete(
        &local,
        request("Tell me a long story about a dragon.", |r| {
            r.max_tokens = Some(300)
        }),
    )
    .await;
    let full_tokens = full.usage.unwrap().completion_tokens;
    assert!(
        full_tokens >= 100,
        "uncancelled run made only {full_tokens} tokens"
    );
    let before = local.stats().tokens_generated;

    let ChatOutput::Stream(mut s) = local
        .chat(call(request("Tell me a long story about a dragon.", long)))
        .await
        .unwrap()
    else {
        panic!("stream expected")
    };
    loop {
        match s.next().await.unwrap().unwrap() {
            StreamItem::Data { content: true, .. } => break,
            StreamItem::Data { .. } => continue,
            StreamItem::End(_) => panic!("ended before any content"),
        }
    }
    drop(s);
    // Wait for the worker to notice; bounded so a bug fails rather than hangs.
    for _ in 0..600 {
        if local.stats().active == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stats = local.stats();
    assert_eq!(stats.active, 0, "the generation thread is still busy");
    assert_eq!(stats.requests_cancelled, 1);
    let made = stats.tokens_generated - before;
    assert!(
        made < 20,
        "cancelled generation went on for {made} tokens (uncancelled: {full_tokens})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_complete() {
    let local = local(|c| c.max_concurrency = 2);
    let questions = [
        "What is the capital of France? Answer in one word.",
        "Name a color.",
        "What is 1 + 1?",
        "Say hello.",
    ];
    let mut tasks = vec![];
    for q in questions {
        let local = local.clone();
        tasks.push(tokio::spawn(async move {
            let req = request(q, |r| r.max_tokens = Some(20));
            let alone = local.prompt_tokens(&req).unwrap().len() as u64;
            let (c, _) = complete(&local, req).await;
            (c, alone)
        }));
    }
    for t in tasks {
        let (c, prompt_tokens) = t.await.unwrap();
        let u = c.usage.clone().unwrap();
        assert_eq!(u.prompt_tokens, prompt_tokens);
        assert!(u.completion_tokens >= 1);
        assert!(!text_of(&c).is_empty());
    }
    // A worker counts its request finished just after sending the last event, so the client can
    // see the answer a moment before the counters settle: wait for them (bounded).
    let mut stats = local.stats();
    for _ in 0..200 {
        if stats.active == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stats = local.stats();
    }
    assert_eq!(
        (stats.requests_finished, stats.active, stats.queued),
        (4, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_and_name_the_field_or_limit() {
    let local = local(|c| c.context_length = Some(64));
    let err = |r| {
        let local = local.clone();
        async move { local.chat(call(r)).await.unwrap_err() }
    };
    let e = err(request(&"word ".repeat(80), |_| {})).await;
    assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
    assert!(
        e.message.contains("maximum context length is 64 tokens"),
        "{}",
        e.message
    );
    assert!(std::str::from_utf8(e.body.as_ref().unwrap())
        .unwrap()
        .contains("context_length_exceeded"));
    // Prompt fits but prompt + max_tokens does not.
    let e = err(request("Hi", |r| r.max_tokens = Some(60))).await;
    assert!(e.message.contains("context length"), "{}", e.message);

    for (field, f) in [
        (
            "temperature",
            Box::new(|r: &mut switchyard_api::openai::ChatRequest| r.temperature = Some(2.5))
                as Box<dyn Fn(&mut _)>,
        ),
        (
            "top_p",
            Box::new(|r: &mut switchyard_api::openai::ChatRequest| r.top_p = Some(1.5)),
        ),
        (
            "n",
            Box::new(|r: &mut switchyard_api::openai::ChatRequest| r.n = Some(2)),
        ),
        (
            "max_tokens",
            Box::new(|r: &mut switchyard_api::openai::ChatRequest| r.max_tokens = Some(0)),
        ),
    ] {
        let e = err(request("Hi", |r| f(r))).await;
        assert_eq!(e.kind, ProviderErrorKind::InvalidRequest, "{field}");
        assert!(e.message.contains(field), "{field}: {}", e.message);
        let body: serde_json::Value = serde_json::from_slice(e.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["error"]["param"], field);
    }
    assert_eq!(
        local.stats().requests_finished,
        0,
        "nothing reached the engine"
    );
}

#[test]
fn a_missing_model_file_is_a_clear_build_error() {
    let cfg = switchyard_local::LocalConfig::from_path("/nonexistent/model.gguf");
    let e = switchyard_local::Local::build("local", &cfg).err().unwrap();
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}
