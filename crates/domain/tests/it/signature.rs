//! Error signatures: what normalisation replaces, which failures share a signature and
//! which do not, the id's stability and parsing, and (by property) that normalisation is
//! idempotent, bounded and never panics.

use failed_tasks_domain::signature::MAX_NORMALISED_BYTES;
use failed_tasks_domain::{
    normalise_message, ErrorCategory, ErrorPattern, ErrorSignature, FailedTask,
};
use proptest::prelude::*;

use ErrorCategory::*;

/// Every row: `message` normalises to `want`.
fn check_normalised(rows: &[(&str, &str)]) {
    for &(message, want) in rows {
        assert_eq!(normalise_message(message), want, "normalise({message:?})");
        assert_eq!(
            normalise_message(want),
            want,
            "normalise({want:?}) is not a fixed point"
        );
    }
}

#[test]
fn normalisation_table() {
    check_normalised(&[
        // The source's messages.
        (
            "向量嵌入服务超时，请求超过30秒未响应",
            "向量嵌入服务超时，请求超过<n>秒未响应",
        ),
        ("没有权限访问指定代码库", "没有权限访问指定代码库"),
        (
            "存储空间不足，无法完成清理操作",
            "存储空间不足，无法完成清理操作",
        ),
        // Numbers, decimals, addresses, ids inside words.
        ("retry 3 of 5", "retry <n> of <n>"),
        ("took 1.25 units", "took <n> units"),
        ("connect 10.0.0.12:6379 refused", "connect <n>:<n> refused"),
        (
            "task_001 failed for client123",
            "task_<n> failed for client<n>",
        ),
        ("v1.2.3", "v<n>"),
        // Durations.
        ("timed out after 30s", "timed out after <dur>"),
        ("deadline 1.5ms exceeded", "deadline <dur> exceeded"),
        ("waited 2m30s", "waited <dur>"),
        ("waited 5min, then 10mb", "waited <dur>, then <n>mb"),
        // Hex ids and UUIDs.
        ("object 3fa85f64 missing", "object <id> missing"),
        ("commit a1b2c3d4e5f6 bad", "commit <id> bad"),
        ("flags 0x1F set", "flags <id> set"),
        ("deadbeef", "deadbeef"),
        (
            "req 3fa85f64-5717-4562-b3fc-2c963f66afa6 lost",
            "req <id> lost",
        ),
        ("id=3FA85F64-5717-4562-B3FC-2C963F66AFA6", "id=<id>"),
        // Paths.
        (
            "open /projects/myapp/src/main.rs: no such file",
            "open <path>: no such file",
        ),
        ("cannot read /tmp/x.", "cannot read <path>."),
        ("--path=/var/lib/data", "--path=<path>"),
        ("see ./build/out and ~/cache", "see <path> and <path>"),
        (r"C:\Users\dev\repo\a.go not found", "<path> not found"),
        (r"\\server\share\x", "<path>"),
        ("src/lib/mod.rs", "<path>"),
        (
            "无法打开/projects/myapp，权限不足",
            "无法打开<path>，权限不足",
        ),
        ("read/write error", "read/write error"),
        ("a / b", "a / b"),
        // URLs and e-mail addresses.
        (
            "POST https://api.example.com/v1/embed?x=1 failed",
            "POST <url> failed",
        ),
        ("redis://10.0.0.1:6379/0, retrying", "<url>, retrying"),
        ("notify ops@example.com now", "notify <email> now"),
        // Quoted values, ASCII and CJK, but not apostrophes.
        ("table 'users_2024' missing", "table <str> missing"),
        (r#"key "a b c" expired"#, "key <str> expired"),
        ("field `x` bad", "field <str> bad"),
        ("文件「配置.yaml」损坏", "文件<str>损坏"),
        ("字段“名称”无效", "字段<str>无效"),
        ("can't parse O'Brien's file", "can't parse O'Brien's file"),
        ("unmatched \"quote", "unmatched \"quote"),
        ("''", "<str>"),
        // Whitespace.
        ("  a \t\n b  ", "a b"),
        ("全角\u{3000}空格", "全角 空格"),
        ("", ""),
    ]);
}

#[test]
fn long_messages_are_cut_at_a_character_boundary() {
    let long = "错".repeat(1000); // 3000 bytes
    let n = normalise_message(&long);
    assert!(n.len() <= MAX_NORMALISED_BYTES);
    assert!(n.ends_with('…'));
    assert_eq!(normalise_message(&n), n);
    // Differences past the cut do not count.
    let a = format!("{long} tail one");
    let b = format!("{long} tail two");
    assert_eq!(
        ErrorSignature::of(SystemError, "X", &a),
        ErrorSignature::of(SystemError, "X", &b)
    );
}

/// Each group of messages shares one signature (same category and code).
#[test]
fn messages_differing_only_in_varying_parts_share_a_signature() {
    let groups: &[&[&str]] = &[
        &[
            "向量嵌入服务超时，请求超过30秒未响应",
            "向量嵌入服务超时，请求超过60秒未响应",
        ],
        &[
            "failed to embed file /projects/a/src/x.rs after 3 attempts",
            "failed to embed file /projects/b/lib/y.go after 12 attempts",
        ],
        &[
            "request 3fa85f64-5717-4562-b3fc-2c963f66afa6 timed out after 30s",
            "request 7c9e6679-7425-40de-944b-e07fc1f90ae7 timed out after 1m30s",
        ],
        &[
            "column 'name' is too long",
            "column 'description' is too long",
        ],
        &["blob a3f9c2e1 corrupt", "blob 0b1c2d3e4f5a6b7c corrupt"],
        &[
            "GET https://a.example/x failed",
            "GET http://b.example:8080/y?z=1 failed",
        ],
        &["  spaced   out\tmessage ", "spaced out message"],
    ];
    for group in groups {
        let first = ErrorSignature::of(ServiceTimeout, "TIMEOUT_ERROR", group[0]);
        for m in &group[1..] {
            assert_eq!(
                ErrorSignature::of(ServiceTimeout, "TIMEOUT_ERROR", m),
                first,
                "{:?} and {m:?}",
                group[0]
            );
        }
    }
}

#[test]
fn different_categories_codes_or_wording_do_not_share_a_signature() {
    let base = ErrorSignature::of(ServiceTimeout, "TIMEOUT_ERROR", "timed out after 30s");
    let others = [
        ErrorSignature::of(SystemError, "TIMEOUT_ERROR", "timed out after 30s"),
        ErrorSignature::of(ServiceTimeout, "DEADLINE_EXCEEDED", "timed out after 30s"),
        ErrorSignature::of(ServiceTimeout, "timeout_error", "timed out after 30s"),
        ErrorSignature::of(
            ServiceTimeout,
            "TIMEOUT_ERROR",
            "connect timed out after 30s",
        ),
        ErrorSignature::of(ServiceTimeout, "TIMEOUT_ERROR", ""),
        // The separator keeps code and message apart.
        ErrorSignature::of(ServiceTimeout, "TIMEOUT_ERROR timed", "out after 30s"),
    ];
    for (i, other) in others.iter().enumerate() {
        assert_ne!(other, &base, "case {i}");
    }
}

#[test]
fn ids_are_stable_across_runs_and_platforms() {
    // Pinned values: a change here changes every stored group key.
    let p = ErrorPattern::of(
        ServiceTimeout,
        "TIMEOUT_ERROR",
        "向量嵌入服务超时，请求超过30秒未响应",
    );
    assert_eq!(
        p.normalised_message(),
        "向量嵌入服务超时，请求超过<n>秒未响应"
    );
    assert_eq!(p.category(), ServiceTimeout);
    assert_eq!(p.error_code(), "TIMEOUT_ERROR");
    assert_eq!(p.signature().as_str().len(), 16);
    assert_eq!(
        p.signature().as_str(),
        fnv1a_hex("service_timeout\u{1f}TIMEOUT_ERROR\u{1f}向量嵌入服务超时，请求超过<n>秒未响应")
    );
    // FNV-1a of the empty input is the offset basis: the hash is the reference one.
    assert_eq!(fnv1a_hex(""), "cbf29ce484222325");
    assert_eq!(fnv1a_hex("a"), "af63dc4c8601ec8c");
}

/// A reference FNV-1a 64 written independently of the crate's.
fn fnv1a_hex(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

#[test]
fn seed_tasks_have_distinct_signatures() {
    let seed = FailedTask::seed_examples();
    let sigs: Vec<ErrorSignature> = seed.iter().map(ErrorSignature::of_task).collect();
    assert_ne!(sigs[0], sigs[1]);
    assert_ne!(sigs[1], sigs[2]);
    assert_ne!(sigs[0], sigs[2]);
    assert_eq!(ErrorPattern::of_task(&seed[0]).into_signature(), sigs[0]);
}

#[test]
fn parse_accepts_exactly_what_as_str_produces() {
    let sig = ErrorSignature::of(DataError, "PARSE_ERROR", "bad line 7");
    assert_eq!(ErrorSignature::parse(sig.as_str()).unwrap(), sig);
    assert_eq!(sig.as_str().parse::<ErrorSignature>().unwrap(), sig);
    assert_eq!(sig.to_string(), sig.as_str());
    for bad in [
        "",
        "0123456789abcde",
        "0123456789abcdef0",
        "0123456789ABCDEF",
        "0123456789abcdeg",
        " 0123456789abcdef",
        "０123456789abcdef",
    ] {
        let e = ErrorSignature::parse(bad).unwrap_err();
        assert_eq!(e.field, "signature", "{bad:?}");
    }
}

/// Message-like text: words, numbers, paths, quotes, CJK, odd punctuation.
fn messagey() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z]{1,8}",
        "[0-9]{1,6}",
        "[0-9a-f]{4,12}",
        "/[a-z0-9/._-]{0,20}",
        "[ \t\n]{1,3}",
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("`".to_owned()),
        Just("「".to_owned()),
        Just("」".to_owned()),
        Just("“".to_owned()),
        Just("”".to_owned()),
        Just("…".to_owned()),
        Just("<n>".to_owned()),
        Just("://".to_owned()),
        "[.,:;!?()@=_<>\\\\~-]{1,3}",
        "[超时请求秒未响应，。]{1,4}",
        "[0-9]{1,3}(ms|s|m|h|秒)",
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn normalisation_is_idempotent_on_arbitrary_text(s in any::<String>()) {
        let once = normalise_message(&s);
        prop_assert_eq!(normalise_message(&once), once.clone());
        prop_assert!(once.len() <= MAX_NORMALISED_BYTES);
    }

    #[test]
    fn normalisation_is_idempotent_on_message_like_text(s in messagey()) {
        let once = normalise_message(&s);
        prop_assert_eq!(normalise_message(&once), once.clone());
        prop_assert!(once.len() <= MAX_NORMALISED_BYTES);
        prop_assert!(!once.chars().any(|c| c.is_ascii_digit()), "digits left in {:?}", once);
    }

    #[test]
    fn signatures_always_parse(code in "[A-Z_]{1,20}", s in any::<String>()) {
        let sig = ErrorSignature::of(SystemError, &code, &s);
        prop_assert_eq!(ErrorSignature::parse(sig.as_str()).unwrap(), sig);
    }
}

proptest! {
    // Generating long inputs is the slow part (in debug builds): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn long_message_like_text_is_cut_idempotently(parts in proptest::collection::vec(messagey(), 8..16)) {
        let s = parts.concat();
        let once = normalise_message(&s);
        prop_assert_eq!(normalise_message(&once), once.clone());
        prop_assert!(once.len() <= MAX_NORMALISED_BYTES);
    }
}
