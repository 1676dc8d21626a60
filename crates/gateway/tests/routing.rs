//! Workload classes and target choice through the whole gateway: rules, header and key
//! defaults, the semantic classifier, per-class candidates and policies, replica balancing,
//! fallback, and the self-hosted-only policy for sensitive requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use serde_json::{json, Value};
use switchyard_gateway::{Config, Running};
use switchyard_testkit::openai::{Answer, MockOpenAi, Reply};

struct Gw {
    gw: Running,
    base: String,
    ledger: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(body: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.sqlite");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[ledger]\npath = {:?}\nflush_interval_ms = 20\n[defaults]\nretry = {{ retries = 0 }}\n{body}",
        ledger.display().to_string()
    );
    let cfg = Config::from_toml(&text).unwrap();
    cfg.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = switchyard_gateway::start_on(cfg, listener).await.unwrap();
    let base = format!("http://{}", gw.addr);
    Gw {
        gw,
        base,
        ledger,
        _dir: dir,
    }
}

impl Gw {
    async fn chat(&self, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }

    async fn target_of(&self, body: Value, headers: &[(&str, &str)]) -> String {
        let r = self.chat(body, headers).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        r.headers()["x-switchyard-target"]
            .to_str()
            .unwrap()
            .to_string()
    }

    /// The `/metrics` text.
    async fn metrics(&self) -> String {
        let r = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    async fn classes(self) -> Vec<Option<String>> {
        self.gw.shutdown().await.unwrap();
        let conn = rusqlite::Connection::open(&self.ledger).unwrap();
        let mut st = conn
            .prepare("SELECT class FROM requests ORDER BY started_at_ms, id")
            .unwrap();
        st.query_map([], |r| r.get::<_, Option<String>>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
}

fn msg(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn providers(url: &str) -> String {
    format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{url}\"\n\
         [providers.cloud]\nkind = \"openai\"\nbase_url = \"{url}\"\n"
    )
}

/// MiniLM's directory; fails, never skips, when the model is missing.
fn require_minilm() -> std::path::PathBuf {
    let dir = switchyard_classify::default_model_dir();
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM is missing at {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// Labelled examples for the semantic step's `coding` and `summarization` classes.
const CODING_AND_SUMMARIES: &str = r#"[classes.semantic.examples]
coding = ["Write a Rust function that parses a date", "Fix this Python stack trace: KeyError in dict lookup",
          "Implement binary search in Java", "Why does my JavaScript promise never resolve?"]
summarization = ["Summarize this article in three bullet points", "Give me a short summary of the meeting notes",
                 "TL;DR of the following report", "Condense this email thread into two sentences"]
"#;

const CLASSES: &str = r#"
[classes]
names = ["extraction", "coding", "sensitive", "general"]
default = "general"
[[classes.rules]]
name = "pii"
class = "sensitive"
regex = "\\b\\d{3}-\\d{2}-\\d{4}\\b"
[[classes.rules]]
name = "json-out"
class = "extraction"
response_format = ["json_object", "json_schema"]
[[classes.rules]]
name = "tools"
class = "coding"
tools = true
[[classes.rules]]
name = "invoice-words"
class = "extraction"
keywords = ["invoice", "extract"]
[policies]
self_hosted_only = ["sensitive"]
"#;

#[tokio::test]
async fn rules_header_and_key_default_pick_the_class_and_its_targets() {
    std::env::set_var("SWITCHYARD_TEST_ROUTING_KEY", "sk-routing");
    std::env::set_var("SWITCHYARD_TEST_ROUTING_CODER", "sk-coder");
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        "{CLASSES}\n[[keys]]\nname = \"k\"\nkey_env = \"SWITCHYARD_TEST_ROUTING_KEY\"\n\
         [[keys]]\nname = \"coder\"\nkey_env = \"SWITCHYARD_TEST_ROUTING_CODER\"\ndefault_class = \"coding\"\n{}\
         [[routes]]\nname = \"auto\"\ntargets = [{{ provider = \"cloud\", model = \"strong\", self_hosted = false }}]\n\
         [routes.classes.extraction]\ntargets = [{{ provider = \"local\", model = \"small\" }}]\n\
         [routes.classes.coding]\ntargets = [{{ provider = \"cloud\", model = \"coder\", self_hosted = false }}]\n\
         [routes.classes.sensitive]\ntargets = [{{ provider = \"local\", model = \"private\" }}]\n",
        providers(&up.base_url())
    ))
    .await;
    let auth = [("authorization", "Bearer sk-routing")];
    // Keywords.
    assert_eq!(
        gw.target_of(msg("auto", "Extract the total from this invoice"), &auth)
            .await,
        "local/small"
    );
    // response_format.
    let mut json_req = msg("auto", "list the names");
    json_req["response_format"] = json!({"type": "json_object"});
    assert_eq!(gw.target_of(json_req, &auth).await, "local/small");
    // A key's default class decides before the rules.
    let coder = [("authorization", "Bearer sk-coder")];
    assert_eq!(
        gw.target_of(msg("auto", "extract the invoice"), &coder)
            .await,
        "cloud/coder",
        "key default"
    );
    // An explicit header wins over everything.
    assert_eq!(
        gw.target_of(
            msg("auto", "Extract the invoice"),
            &[auth[0], ("x-switchyard-class", "sensitive")]
        )
        .await,
        "local/private"
    );
    // An unknown class in the header is a 400 naming it.
    let r = gw
        .chat(
            msg("auto", "x"),
            &[auth[0], ("x-switchyard-class", "astrology")],
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("astrology"),
        "{v}"
    );
    let classes = gw.classes().await;
    assert_eq!(
        classes,
        [
            Some("extraction"),
            Some("extraction"),
            Some("coding"),
            Some("sensitive"),
            None
        ]
        .map(|c| c.map(str::to_string))
    );
}

#[tokio::test]
async fn regex_and_tools_rules_and_the_default_class() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        "{CLASSES}\n{}\
         [[routes]]\nname = \"auto\"\ntargets = [{{ provider = \"local\", model = \"general\" }}]\n\
         [routes.classes.coding]\ntargets = [{{ provider = \"local\", model = \"coder\" }}]\n\
         [routes.classes.sensitive]\ntargets = [{{ provider = \"local\", model = \"private\" }}]\n",
        providers(&up.base_url())
    ))
    .await;
    assert_eq!(
        gw.target_of(msg("auto", "my SSN is 123-45-6789"), &[])
            .await,
        "local/private"
    );
    let mut tools = msg("auto", "what's the weather");
    tools["tools"] =
        json!([{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]);
    assert_eq!(gw.target_of(tools, &[]).await, "local/coder");
    assert_eq!(
        gw.target_of(msg("auto", "tell me a joke"), &[]).await,
        "local/general"
    );
    let classes = gw.classes().await;
    assert_eq!(
        classes[2].as_deref(),
        Some("general"),
        "no rule matched: the default class"
    );
}

#[tokio::test]
async fn a_sensitive_request_never_leaves_self_hosted_targets_even_on_fallback() {
    let (mock, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        "{CLASSES}\n{}\
         [[routes]]\nname = \"auto\"\n\
         targets = [{{ provider = \"local\", model = \"err-503\" }}, {{ provider = \"cloud\", model = \"external\", self_hosted = false }}]\n\
         [[routes]]\nname = \"cloud-only\"\ntargets = [{{ provider = \"cloud\", model = \"external\", self_hosted = false }}]\n",
        providers(&up.base_url())
    ))
    .await;
    // Ordinary requests fall back to the external target.
    assert_eq!(
        gw.target_of(msg("auto", "hello"), &[]).await,
        "cloud/external"
    );
    // A sensitive one may only try the self-hosted target; it fails rather than leak.
    let r = gw.chat(msg("auto", "SSN 123-45-6789"), &[]).await;
    assert_eq!(r.status(), 503);
    // A route with no self-hosted target refuses sensitive requests outright.
    let r = gw.chat(msg("cloud-only", "SSN 123-45-6789"), &[]).await;
    assert_eq!(r.status(), 403);
    let external_saw: Vec<String> = mock
        .received()
        .iter()
        .filter(|b| b["model"] == "external")
        .map(|b| b["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        external_saw,
        ["hello"],
        "the sensitive prompt never reached the external target"
    );
    gw.classes().await;
}

#[tokio::test]
async fn cheapest_meeting_the_quality_floor_with_fallback() {
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let price = |i: f64, o: f64| {
        format!("price = {{ input_per_mtok = {i}, output_per_mtok = {o}, source = \"test\", as_of = \"2026-11-22\" }}")
    };
    let gw = start(&format!(
        "{}\
         [[routes]]\nname = \"cheap\"\npolicy = \"cheapest\"\nquality_floor = 0.7\n\
         targets = [{{ provider = \"cloud\", model = \"premium\", quality = 0.95 }}, {{ provider = \"cloud\", model = \"toy\", quality = 0.3 }}, {{ provider = \"cloud\", model = \"mid\", quality = 0.8 }}]\n\
         [[routes]]\nname = \"cheap-down\"\npolicy = \"cheapest\"\n\
         targets = [{{ provider = \"cloud\", model = \"premium\" }}, {{ provider = \"cloud\", model = \"err-500\" }}]\n\
         [targets.\"cloud/premium\"]\n{}\n[targets.\"cloud/toy\"]\n{}\n[targets.\"cloud/mid\"]\n{}\n[targets.\"cloud/err-500\"]\n{}\n",
        providers(&up.base_url()),
        price(5.0, 15.0),
        price(0.01, 0.01),
        price(0.2, 0.8),
        price(0.1, 0.1),
    ))
    .await;
    assert_eq!(
        gw.target_of(msg("cheap", "x"), &[]).await,
        "cloud/mid",
        "toy is below the floor"
    );
    // The cheapest target is down: the next cheapest serves.
    let r = gw.chat(msg("cheap-down", "x"), &[]).await;
    assert_eq!(r.headers()["x-switchyard-target"], "cloud/premium");
    assert_eq!(r.headers()["x-switchyard-attempts"], "2");
    gw.classes().await;
}

#[tokio::test]
async fn replicas_are_balanced_and_a_rate_limited_one_is_avoided() {
    let (m1, up1) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let (m2, up2) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        "[providers.r1]\nkind = \"openai\"\nbase_url = \"{}\"\n[providers.r2]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [[routes]]\nname = \"llama\"\nbalance = {{ policy = \"round_robin\" }}\n\
         targets = [{{ provider = \"r1\", model = \"llama\" }}, {{ provider = \"r2\", model = \"llama\" }}]\n",
        up1.base_url(),
        up2.base_url()
    ))
    .await;
    for _ in 0..10 {
        gw.target_of(msg("llama", "x"), &[]).await;
    }
    let (a, b) = (m1.received().len(), m2.received().len());
    assert_eq!((a, b), (5, 5), "round robin spreads evenly");
    // r1 now answers 429 with Retry-After: 30 s; one request finds out, the rest go to r2.
    m1.set_default(Reply::Error {
        status: 429,
        message: "slow down".into(),
        code: None,
        retry_after: Some("30".into()),
    });
    for _ in 0..6 {
        assert_eq!(gw.target_of(msg("llama", "x"), &[]).await, "r2/llama");
    }
    assert_eq!(
        m1.received().len(),
        a + 1,
        "only one request hit the rate-limited replica"
    );
    gw.classes().await;
}

/// Needs all-MiniLM-L6-v2 (`scripts/fetch-models.sh`); fails, never skips, when it is missing.
#[tokio::test]
async fn the_semantic_classifier_routes_by_meaning() {
    require_minilm();
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        r#"
[classes]
names = ["coding", "summarization", "general"]
default = "general"
[classes.semantic]
min_similarity = 0.2
{CODING_AND_SUMMARIES}{}
[[routes]]
name = "auto"
targets = [{{ provider = "local", model = "general" }}]
[routes.classes.coding]
targets = [{{ provider = "local", model = "coder" }}]
[routes.classes.summarization]
targets = [{{ provider = "local", model = "summarizer" }}]
"#,
        providers(&up.base_url())
    ))
    .await;
    assert_eq!(
        gw.target_of(
            msg(
                "auto",
                "Write a C++ program that sorts a vector of integers"
            ),
            &[]
        )
        .await,
        "local/coder"
    );
    assert_eq!(
        gw.target_of(
            msg(
                "auto",
                "Please summarize the key points of this quarterly report briefly"
            ),
            &[]
        )
        .await,
        "local/summarizer"
    );
    // The semantic step's load is on /metrics: nothing running or waiting now, none busy.
    let metrics = gw.metrics().await;
    for line in [
        "switchyard_minilm_forwards_running 0\n",
        "switchyard_minilm_waiting 0\n",
        "switchyard_minilm_busy_total 0\n",
        "switchyard_minilm_beside_queued 0\n",
        // Counts that depend on timing: only their presence.
        "switchyard_minilm_helped_tiles_total ",
        "switchyard_minilm_taken_back_tiles_total ",
    ] {
        assert!(
            metrics.contains(line),
            "{line:?} missing from /metrics:\n{metrics}"
        );
    }
    let classes = gw.classes().await;
    assert_eq!(
        classes,
        [
            Some("coding".to_string()),
            Some("summarization".to_string())
        ]
    );
}

/// Where the class cannot change a request's targets it only labels the record, so MiniLM runs
/// beside the upstream call (on its idle-priority lane, not through the gate): with the gate's
/// one forward held, such a request is answered and its record still gets its class, while a
/// request whose class picks its target waits at the gate. Needs MiniLM, as above.
#[tokio::test]
async fn a_class_that_cannot_change_the_target_is_found_beside_the_upstream_call() {
    require_minilm();
    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        r#"
[classes]
names = ["coding", "summarization", "general"]
default = "general"
[classes.semantic]
min_similarity = 0.2
cache_entries = 0
max_concurrent = 1
max_wait_ms = 600000
{CODING_AND_SUMMARIES}{}
[[routes]]
name = "labelled"
targets = [{{ provider = "local", model = "general" }}]
[[routes]]
name = "auto"
targets = [{{ provider = "local", model = "general" }}]
[routes.classes.coding]
targets = [{{ provider = "local", model = "coder" }}]
"#,
        providers(&up.base_url())
    ))
    .await;
    let gate = gw.gw.gateway.minilm.clone().expect("a MiniLM gate");
    let held = gate.enter().await.expect("the one forward");
    let coding = "Write a C++ program that sorts a vector of integers";
    // Answered while no forward can run (the limit only catches a request stuck behind it).
    let labelled = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gw.target_of(msg("labelled", coding), &[]),
    )
    .await
    .expect("a request whose class cannot change its target waited for MiniLM");
    assert_eq!(labelled, "local/general");
    // A stream too: answered to its last event while the forward is held.
    let mut body = msg("labelled", coding);
    body["stream"] = json!(true);
    let streamed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let r = gw.chat(body, &[]).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    })
    .await
    .expect("a stream whose class cannot change its target waited for MiniLM");
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");
    let gw = std::sync::Arc::new(gw);
    let routed = tokio::spawn({
        let gw = gw.clone();
        async move { gw.target_of(msg("auto", coding), &[]).await }
    });
    // Its class picks its target, so it waits at the gate for the forward we hold.
    for _ in 0..6000 {
        if gate.load().waiting == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        gate.load().waiting,
        1,
        "the routed request waits for the forward"
    );
    assert!(!routed.is_finished());
    drop(held);
    assert_eq!(routed.await.unwrap(), "local/coder");
    let gw = std::sync::Arc::into_inner(gw).expect("one owner left");
    // Every record carries the semantic class.
    assert_eq!(gw.classes().await, vec![Some("coding".to_string()); 3]);
}

/// A class found by MiniLM alone still keeps a sensitive prompt on self-hosted targets: a
/// route with an external target classifies before it picks (and here refuses), and only a
/// route whose targets are all self-hosted classifies beside the call. Needs MiniLM, as above.
#[tokio::test]
async fn a_semantically_sensitive_prompt_is_classified_before_an_external_target_is_picked() {
    require_minilm();
    let (mock, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        r#"
[classes]
names = ["sensitive", "general"]
default = "general"
[classes.semantic]
min_similarity = 0.2
[classes.semantic.examples]
sensitive = ["My social security number and date of birth are below", "Here is the patient's medical diagnosis and prescription",
             "This is my bank account number and login password", "Confidential: employee salaries and home addresses"]
general = ["What is the capital of France?", "Write a haiku about autumn", "Explain how rainbows form",
           "Recommend a good science fiction book"]
[policies]
self_hosted_only = ["sensitive"]
{}
[[routes]]
name = "cloud-only"
targets = [{{ provider = "cloud", model = "external", self_hosted = false }}]
[[routes]]
name = "local-only"
targets = [{{ provider = "local", model = "general" }}]
"#,
        providers(&up.base_url())
    ))
    .await;
    let secret = "Attached are my bank account number, my password and my social security number";
    let r = gw.chat(msg("cloud-only", secret), &[]).await;
    assert_eq!(r.status(), 403, "{:?}", r.text().await);
    assert_eq!(
        gw.target_of(msg("local-only", secret), &[]).await,
        "local/general"
    );
    assert!(
        mock.received().iter().all(|b| b["model"] != "external"),
        "the sensitive prompt never reached the external target"
    );
    assert_eq!(
        gw.classes().await,
        [Some("sensitive".to_string()), Some("sensitive".to_string())]
    );
}

/// The `learned` policy with a router fitted here on a tiny outcome table (MiniLM needed, as
/// above): held-out hard prompts go to the strong model, easy ones to the cheap one.
#[tokio::test]
async fn the_learned_policy_sends_hard_prompts_to_the_strong_model() {
    let dir = require_minilm();
    let hard = [
        "Prove that there are infinitely many prime numbers.",
        "Compute the eigenvalues of the matrix [[2,1,0],[1,3,1],[0,1,4]].",
        "Evaluate the contour integral of 1/(z^2+1) around the circle |z|=2.",
        "Derive the Euler-Lagrange equation from the principle of least action.",
        "Show that every finite group of prime order is cyclic.",
        "Solve the differential equation y'' + 4y = sin(2x).",
    ];
    let easy = [
        "What color is the sky on a clear day?",
        "Say hello to my friend.",
        "What is two plus two?",
        "Name a fruit that is yellow.",
        "What day comes after Monday?",
        "Is water wet?",
    ];
    let items: Vec<switchyard_learn::Outcome> = hard
        .iter()
        .map(|p| (p, false))
        .chain(easy.iter().map(|p| (p, true)))
        .map(|(p, weak)| switchyard_learn::Outcome {
            subject: "t".into(),
            prompt: p.to_string(),
            weak,
            strong: true,
        })
        .collect();
    let embedder =
        switchyard_classify::Embedder::load(&dir, switchyard_classify::DEFAULT_MAX_TOKENS).unwrap();
    let embeddings: Vec<Vec<f32>> = items
        .iter()
        .map(|o| embedder.embed(&o.prompt).unwrap())
        .collect();
    let opts = switchyard_learn::TrainOptions {
        strong_share: 0.5,
        l2: 0.01,
        ..Default::default()
    };
    // Six hard and six easy prompts: half the training prompts go strong at this threshold.
    let mut router = switchyard_learn::fit(&items, &embeddings, &opts).unwrap();
    // Fitted on separable data, the training median sits among the hard prompts' scores; put
    // the threshold between the groups (held-out hard ≈ 0.5, easy ≈ 0.07 with this data).
    router.threshold = 0.3;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("router.json");
    router.save(&path).unwrap();

    let (_m, up) = MockOpenAi::start(Reply::Answer(Answer::default()))
        .await
        .unwrap();
    let gw = start(&format!(
        "{}[[routes]]\nname = \"auto\"\npolicy = \"learned\"\nlearned = {{ model = {:?} }}\n\
         targets = [{{ provider = \"cloud\", model = \"strong\", quality = 0.9 }}, {{ provider = \"local\", model = \"weak\", quality = 0.6 }}]\n\
         [targets.\"cloud/strong\"]\nprice = {{ input_per_mtok = 10.0, output_per_mtok = 30.0, source = \"test\", as_of = \"2026-11-22\" }}\n\
         [targets.\"local/weak\"]\nprice = {{ input_per_mtok = 0.1, output_per_mtok = 0.2, source = \"test\", as_of = \"2026-11-22\" }}\n",
        providers(&up.base_url()),
        path.display().to_string()
    ))
    .await;
    assert_eq!(
        gw.target_of(
            msg("auto", "Prove that the square root of two is irrational."),
            &[]
        )
        .await,
        "cloud/strong"
    );
    assert_eq!(
        gw.target_of(msg("auto", "What color is grass?"), &[]).await,
        "local/weak"
    );
    // Its forwards pass the gateway's MiniLM bound (no [classes] here: the defaults).
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchyard_minilm_forwards_running 0\n")
            && metrics.contains("switchyard_minilm_busy_total 0\n"),
        "MiniLM's load missing from /metrics:\n{metrics}"
    );
    gw.classes().await;
}
