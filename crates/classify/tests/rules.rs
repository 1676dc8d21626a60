//! Rules and precedence: no model needed.
// Test helpers outside #[test] fns: a failed unwrap should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use switchyard_api::openai::{ChatRequest, FunctionDef, Message, Tool};
use switchyard_classify::{ClassesConfig, ClassifiedBy, Classifier, ClassifyError, RuleConfig};

fn req(text: &str) -> ChatRequest {
    ChatRequest {
        model: "fast".into(),
        messages: vec![Message::text("user", text)],
        ..Default::default()
    }
}

fn rule(name: &str, class: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        class: class.into(),
        ..Default::default()
    }
}

fn config(rules: Vec<RuleConfig>) -> ClassesConfig {
    ClassesConfig {
        names: ["a", "b", "c", "chat"].map(String::from).to_vec(),
        default: Some("chat".into()),
        rules,
        semantic: None,
    }
}

fn class_of(c: &Classifier, r: &ChatRequest) -> (Option<String>, ClassifiedBy) {
    let out = c.classify(r, None, None).unwrap();
    (out.class, out.by)
}

fn by_rule(name: &str) -> ClassifiedBy {
    ClassifiedBy::Rule { name: name.into() }
}

#[test]
fn prompt_length_bounds_use_chars_over_four() {
    let c = Classifier::build(&config(vec![
        RuleConfig {
            min_tokens: Some(100),
            ..rule("long", "a")
        },
        RuleConfig {
            max_tokens: Some(2),
            ..rule("tiny", "b")
        },
    ]))
    .unwrap();
    // 400 characters (plus the newline prompt_text adds) ≈ 101 tokens.
    assert_eq!(
        class_of(&c, &req(&"x".repeat(400))),
        (Some("a".into()), by_rule("long"))
    );
    // 7 characters + newline = 2 tokens.
    assert_eq!(
        class_of(&c, &req("1234567")),
        (Some("b".into()), by_rule("tiny"))
    );
    assert_eq!(
        class_of(&c, &req(&"x".repeat(100))).1,
        ClassifiedBy::Default
    );
}

#[test]
fn tools_present_or_absent() {
    let c = Classifier::build(&config(vec![RuleConfig {
        tools: Some(true),
        ..rule("agent", "a")
    }]))
    .unwrap();
    let mut r = req("book a flight");
    assert_eq!(class_of(&c, &r).1, ClassifiedBy::Default);
    r.tools = Some(vec![Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: "book".into(),
            description: None,
            parameters: None,
            strict: None,
        },
    }]);
    assert_eq!(class_of(&c, &r), (Some("a".into()), by_rule("agent")));
    // An empty tools list declares no tools.
    r.tools = Some(vec![]);
    assert_eq!(class_of(&c, &r).1, ClassifiedBy::Default);
}

#[test]
fn response_format_types() {
    let c = Classifier::build(&config(vec![RuleConfig {
        response_format: Some(vec!["json_schema".into(), "json_object".into()]),
        ..rule("json", "a")
    }]))
    .unwrap();
    let mut r = req("list the names");
    r.response_format =
        Some(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}));
    assert_eq!(class_of(&c, &r).0.as_deref(), Some("a"));
    r.response_format = Some(json!({"type": "json_object"}));
    assert_eq!(class_of(&c, &r).0.as_deref(), Some("a"));
    r.response_format = Some(json!({"type": "text"}));
    assert_eq!(class_of(&c, &r).1, ClassifiedBy::Default);
    r.response_format = None;
    assert_eq!(class_of(&c, &r).1, ClassifiedBy::Default);
}

#[test]
fn regex_over_all_message_text() {
    let c = Classifier::build(&config(vec![RuleConfig {
        regex: Some(r"\b\d{3}-\d{2}-\d{4}\b".into()),
        ..rule("ssn", "a")
    }]))
    .unwrap();
    let mut r = req("check this");
    r.messages
        .insert(0, Message::text("system", "record: 123-45-6789"));
    assert_eq!(class_of(&c, &r), (Some("a".into()), by_rule("ssn")));
    assert_eq!(
        class_of(&c, &req("call 123-456-789")).1,
        ClassifiedBy::Default
    );
}

#[test]
fn keywords_are_case_insensitive_and_literal() {
    let c = Classifier::build(&config(vec![RuleConfig {
        keywords: Some(vec!["Summarize".into(), "c++".into()]),
        ..rule("kw", "b")
    }]))
    .unwrap();
    assert_eq!(
        class_of(&c, &req("please SUMMARIZE this")).0.as_deref(),
        Some("b")
    );
    // `+` is literal, not a regex quantifier.
    assert_eq!(class_of(&c, &req("a C++ question")).0.as_deref(), Some("b"));
    assert_eq!(class_of(&c, &req("a cc question")).1, ClassifiedBy::Default);
}

#[test]
fn model_alias() {
    let c = Classifier::build(&config(vec![RuleConfig {
        models: Some(vec!["coder".into()]),
        ..rule("coder-alias", "c")
    }]))
    .unwrap();
    let mut r = req("hello");
    assert_eq!(class_of(&c, &r).1, ClassifiedBy::Default);
    r.model = "coder".into();
    assert_eq!(class_of(&c, &r), (Some("c".into()), by_rule("coder-alias")));
}

#[test]
fn all_conditions_of_a_rule_must_hold_and_the_first_rule_wins() {
    let c = Classifier::build(&config(vec![
        RuleConfig {
            keywords: Some(vec!["invoice".into()]),
            models: Some(vec!["coder".into()]),
            ..rule("both", "a")
        },
        RuleConfig {
            keywords: Some(vec!["invoice".into()]),
            ..rule("kw-only", "b")
        },
        RuleConfig {
            keywords: Some(vec!["invoice".into()]),
            ..rule("later", "c")
        },
    ]))
    .unwrap();
    assert_eq!(
        class_of(&c, &req("an invoice")),
        (Some("b".into()), by_rule("kw-only"))
    );
    let mut r = req("an invoice");
    r.model = "coder".into();
    assert_eq!(class_of(&c, &r), (Some("a".into()), by_rule("both")));
}

#[test]
fn precedence_header_then_key_default_then_rules_then_default() {
    let c = Classifier::build(&config(vec![RuleConfig {
        keywords: Some(vec!["invoice".into()]),
        ..rule("kw", "a")
    }]))
    .unwrap();
    let r = req("an invoice");
    let h = c.classify(&r, Some("b"), Some("c")).unwrap();
    assert_eq!(
        (h.class.as_deref(), h.by),
        (Some("b"), ClassifiedBy::Header)
    );
    let k = c.classify(&r, None, Some("c")).unwrap();
    assert_eq!(
        (k.class.as_deref(), k.by),
        (Some("c"), ClassifiedBy::KeyDefault)
    );
    let ru = c.classify(&r, None, None).unwrap();
    assert_eq!((ru.class.as_deref(), ru.by), (Some("a"), by_rule("kw")));
    let d = c.classify(&req("hello"), None, None).unwrap();
    assert_eq!(
        (d.class.as_deref(), d.by),
        (Some("chat"), ClassifiedBy::Default)
    );
}

#[test]
fn no_default_leaves_the_request_unclassified() {
    let mut cfg = config(vec![]);
    cfg.default = None;
    let c = Classifier::build(&cfg).unwrap();
    let out = c.classify(&req("hello"), None, None).unwrap();
    assert_eq!((out.class, out.by), (None, ClassifiedBy::Default));
}

#[test]
fn unknown_header_or_key_class_is_an_error_naming_it() {
    let c = Classifier::build(&config(vec![])).unwrap();
    let e = c.classify(&req("x"), Some("nope"), None).unwrap_err();
    assert!(matches!(&e, ClassifyError::UnknownHeaderClass { name, .. } if name == "nope"));
    let msg = e.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains("x-switchyard-class"),
        "{msg}"
    );
    // The header is checked even when a valid key default exists.
    assert!(c.classify(&req("x"), Some("nope"), Some("a")).is_err());
    let e = c.classify(&req("x"), None, Some("gone")).unwrap_err();
    assert!(e.to_string().contains("\"gone\""), "{e}");
}

#[tokio::test]
async fn async_wrapper_gives_the_same_answers() {
    let c = std::sync::Arc::new(
        Classifier::build(&config(vec![RuleConfig {
            keywords: Some(vec!["invoice".into()]),
            ..rule("kw", "a")
        }]))
        .unwrap(),
    );
    let r = req("an invoice");
    assert_eq!(
        c.classify_async(&r, None, None).await.unwrap(),
        c.classify(&r, None, None).unwrap()
    );
    assert!(c.classify_async(&r, Some("zzz"), None).await.is_err());
}

#[test]
fn validation_names_the_key_at_fault() {
    let check = |cfg: ClassesConfig, key: &str| {
        let e = cfg.validate().unwrap_err();
        assert!(e.contains(key), "expected {key} in: {e}");
        // build validates too.
        assert!(Classifier::build(&cfg).is_err());
    };
    let mut c = config(vec![]);
    c.default = Some("zzz".into());
    check(c, "classes.default");
    check(config(vec![rule("empty", "a")]), "classes.rules[0]");
    check(
        config(vec![RuleConfig {
            keywords: Some(vec!["x".into()]),
            ..rule("r", "zzz")
        }]),
        "classes.rules[0].class",
    );
    check(
        config(vec![
            RuleConfig {
                tools: Some(true),
                ..rule("r", "a")
            },
            RuleConfig {
                regex: Some("(unclosed".into()),
                ..rule("bad", "a")
            },
        ]),
        "classes.rules[1].regex",
    );
    check(
        config(vec![RuleConfig {
            response_format: Some(vec!["xml".into()]),
            ..rule("r", "a")
        }]),
        "classes.rules[0].response_format[0]",
    );
    check(
        config(vec![RuleConfig {
            min_tokens: Some(10),
            max_tokens: Some(5),
            ..rule("r", "a")
        }]),
        "classes.rules[0].min_tokens",
    );
    let mut c = config(vec![]);
    c.names.push("a".into());
    check(c, "classes.names[4]");
    let mut c = config(vec![]);
    let mut s = switchyard_classify::SemanticConfig::default();
    s.examples.insert("zzz".into(), vec!["hello".into()]);
    c.semantic = Some(s);
    check(c, "classes.semantic.examples.zzz");
    // The semantic step's gate: a forward at least, a defined busy class, and one only with a
    // wait limit (without one requests wait and the busy class would never apply).
    let semantic = |edit: fn(&mut switchyard_classify::SemanticConfig)| {
        let mut c = config(vec![]);
        let mut s = switchyard_classify::SemanticConfig::default();
        s.examples.insert("a".into(), vec!["hello".into()]);
        edit(&mut s);
        c.semantic = Some(s);
        c
    };
    check(
        semantic(|s| s.max_concurrent = Some(0)),
        "classes.semantic.max_concurrent",
    );
    check(
        semantic(|s| {
            s.max_wait_ms = Some(5);
            s.busy_class = Some("zzz".into());
        }),
        "classes.semantic.busy_class",
    );
    check(
        semantic(|s| s.busy_class = Some("a".into())),
        "classes.semantic.busy_class",
    );
    let mut ok = semantic(|s| {
        s.max_concurrent = Some(1);
        s.max_wait_ms = Some(5);
        s.busy_class = Some("a".into());
    });
    ok.validate().unwrap();
    ok.semantic.as_mut().unwrap().busy_class = None;
    ok.validate().unwrap();
}

#[test]
fn parses_from_toml_and_rejects_unknown_keys() {
    let cfg: ClassesConfig = toml::from_str(
        r#"
        names = ["a", "chat"]
        default = "chat"
        [[rules]]
        name = "r"
        class = "a"
        tools = true
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert!(toml::from_str::<ClassesConfig>("names = [\"a\"]\nbogus = 1").is_err());
}
