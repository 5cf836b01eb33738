//! The retry policy: the decision table (authorization never retried, the maximum's
//! boundary, data errors, permanent codes), the backoff (growth, cap, jitter bounds) and
//! the validation of every setting.

use std::collections::BTreeMap;
use std::time::Duration;

use failed_tasks_domain::retry::{
    GiveUpReason, JitterRng, RetryConfig, RetryDecision, RetryPolicy, MAX_DELAY_LIMIT,
};
use failed_tasks_domain::{ErrorCategory, FailedTask};

use ErrorCategory::*;
use GiveUpReason::*;
use RetryDecision::*;

const NO_JITTER: f64 = 0.5;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One row: the policy decides `want` for (category, code, retry count, jitter sample).
fn check(policy: &RetryPolicy, rows: &[(ErrorCategory, &str, u32, f64, RetryDecision)]) {
    for &(category, code, retry_count, jitter, want) in rows {
        assert_eq!(
            policy.decide(category, code, retry_count, jitter),
            want,
            "decide({category}, {code:?}, retry_count {retry_count}, jitter {jitter})"
        );
    }
}

#[test]
fn default_policy_decision_table() {
    #[rustfmt::skip]
    let rows = [
        // Authorization: never retried, even before any retry was made.
        (Authorization,     "PERMISSION_DENIED", 0,        NO_JITTER, GiveUp(NotRetryable(Authorization))),
        (Authorization,     "TIMEOUT_ERROR",     0,        0.0,       GiveUp(NotRetryable(Authorization))),
        (Authorization,     "UNAUTHENTICATED",   2,        NO_JITTER, GiveUp(NotRetryable(Authorization))),
        // Data errors are permanent by default.
        (DataError,         "FILE_CORRUPTED",    0,        NO_JITTER, GiveUp(NotRetryable(DataError))),
        // Retryable categories: 30 s, 1 min, 2 min, … 16 min, then 30 min (the cap) until the
        // maximum of 8 retries: 91.5 minutes in all, at least 73 with jitter.
        (ServiceTimeout,    "TIMEOUT_ERROR",     0,        NO_JITTER, RetryAfter(secs(30))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     1,        NO_JITTER, RetryAfter(secs(60))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     2,        NO_JITTER, RetryAfter(secs(120))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     5,        NO_JITTER, RetryAfter(secs(960))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     6,        NO_JITTER, RetryAfter(secs(1800))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     7,        NO_JITTER, RetryAfter(secs(1800))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     8,        NO_JITTER, GiveUp(MaxRetriesReached { max: 8 })),
        (ServiceTimeout,    "TIMEOUT_ERROR",     9,        NO_JITTER, GiveUp(MaxRetriesReached { max: 8 })),
        (ServiceTimeout,    "TIMEOUT_ERROR",     u32::MAX, NO_JITTER, GiveUp(MaxRetriesReached { max: 8 })),
        (ResourceExhausted, "STORAGE_ERROR",     1,        NO_JITTER, RetryAfter(secs(60))),
        (ResourceExhausted, "STORAGE_ERROR",     8,        NO_JITTER, GiveUp(MaxRetriesReached { max: 8 })),
        (SystemError,       "INTERNAL",          2,        NO_JITTER, RetryAfter(secs(120))),
        (SystemError,       "INTERNAL",          8,        NO_JITTER, GiveUp(MaxRetriesReached { max: 8 })),
        // Jitter moves the delay by at most ±20 %.
        (ServiceTimeout,    "TIMEOUT_ERROR",     2,        0.0,       RetryAfter(secs(96))),
        (ServiceTimeout,    "TIMEOUT_ERROR",     2,        0.75,      RetryAfter(secs(132))),
    ];
    check(&RetryPolicy::default(), &rows);
}

#[test]
fn configured_policy_decision_table() {
    let p = RetryPolicy::new(RetryConfig {
        max_retries: 5,
        base_delay: Duration::from_millis(500),
        multiplier: 3.0,
        max_delay: secs(10),
        jitter: 0.0,
        category_max_retries: BTreeMap::from([
            (ResourceExhausted, 1),
            (DataError, 2),
            (SystemError, 0),
            (Authorization, 0),
        ]),
        permanent_error_codes: vec!["UNSUPPORTED_LANGUAGE".into()],
    })
    .unwrap();
    let ms = Duration::from_millis;
    #[rustfmt::skip]
    let rows = [
        (Authorization,     "PERMISSION_DENIED",    0, NO_JITTER, GiveUp(NotRetryable(Authorization))),
        // A permanent code wins over the category, compared ignoring ASCII case.
        (ServiceTimeout,    "UNSUPPORTED_LANGUAGE", 0, NO_JITTER, GiveUp(PermanentErrorCode)),
        (ServiceTimeout,    "unsupported_language", 0, NO_JITTER, GiveUp(PermanentErrorCode)),
        // Overrides: 0 switches a category off, others replace the maximum.
        (SystemError,       "INTERNAL",             0, NO_JITTER, GiveUp(NotRetryable(SystemError))),
        (ResourceExhausted, "STORAGE_ERROR",        0, NO_JITTER, RetryAfter(ms(500))),
        (ResourceExhausted, "STORAGE_ERROR",        1, NO_JITTER, GiveUp(MaxRetriesReached { max: 1 })),
        (DataError,         "PARSE_ERROR",          1, NO_JITTER, RetryAfter(ms(1500))),
        (DataError,         "PARSE_ERROR",          2, NO_JITTER, GiveUp(MaxRetriesReached { max: 2 })),
        // 0.5 s × 3ⁿ: 0.5, 1.5, 4.5, then capped at 10 s; jitter is off, samples do not matter.
        (ServiceTimeout,    "TIMEOUT_ERROR",        0, 0.0,       RetryAfter(ms(500))),
        (ServiceTimeout,    "TIMEOUT_ERROR",        2, 0.99,      RetryAfter(ms(4500))),
        (ServiceTimeout,    "TIMEOUT_ERROR",        3, NO_JITTER, RetryAfter(secs(10))),
        (ServiceTimeout,    "TIMEOUT_ERROR",        4, NO_JITTER, RetryAfter(secs(10))),
        (ServiceTimeout,    "TIMEOUT_ERROR",        5, NO_JITTER, GiveUp(MaxRetriesReached { max: 5 })),
    ];
    check(&p, &rows);
    assert_eq!(p.max_retries_for(Authorization), 0);
    assert_eq!(p.max_retries_for(ServiceTimeout), 5);
    assert_eq!(p.max_retries_for(DataError), 2);
}

#[test]
fn max_retries_zero_gives_up_on_the_first_failure() {
    let p = RetryPolicy::new(RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    })
    .unwrap();
    for category in [ServiceTimeout, ResourceExhausted, SystemError] {
        assert_eq!(
            p.decide(category, "X", 0, NO_JITTER),
            GiveUp(MaxRetriesReached { max: 0 })
        );
    }
}

#[test]
fn authorization_is_never_retried_whatever_the_config() {
    let generous = RetryPolicy::new(RetryConfig {
        max_retries: 100,
        category_max_retries: BTreeMap::new(),
        ..RetryConfig::default()
    })
    .unwrap();
    for retry_count in [0, 1, 50, 99] {
        for code in ["PERMISSION_DENIED", "TIMEOUT_ERROR", "ANYTHING"] {
            assert_eq!(
                generous.decide(Authorization, code, retry_count, NO_JITTER),
                GiveUp(NotRetryable(Authorization))
            );
        }
    }
}

#[test]
fn delays_grow_until_the_cap_and_never_pass_it() {
    let p = RetryPolicy::default();
    let cap = p.config().max_delay;
    for u in [0.0, 0.25, 0.5, 0.999_999] {
        let plateau = p.backoff(63, u);
        let mut last = Duration::ZERO;
        for n in 0..64 {
            let d = p.backoff(n, u);
            assert!(d <= cap, "backoff({n}, {u}) = {d:?} is over the cap");
            assert!(d >= last, "backoff({n}, {u}) = {d:?} shrank from {last:?}");
            if n <= 5 {
                // Strictly growing until the nominal delay reaches the cap (30 s × 2⁶ > 30 min).
                assert!(d > last, "backoff({n}, {u}) = {d:?} did not grow");
            } else {
                // Then flat: the cap, moved down by jitter when u < 0.5.
                assert_eq!(d, plateau, "backoff({n}, {u})");
            }
            last = d;
        }
        assert!(plateau >= cap.mul_f64(0.8) && plateau <= cap, "{plateau:?}");
    }
    // Very large retry counts stay at the cap rather than overflow.
    assert_eq!(p.backoff(u32::MAX, NO_JITTER), cap);
}

#[test]
fn jitter_stays_within_its_fraction() {
    let p = RetryPolicy::default(); // ±20 %
    let mut rng = JitterRng::new(7);
    for n in 0..8 {
        let nominal = p.backoff(n, NO_JITTER).as_secs_f64();
        for _ in 0..1000 {
            let d = p.backoff(n, rng.next_unit()).as_secs_f64();
            assert!(
                d >= nominal * 0.8 - 1e-9 && d < nominal * 1.2 + 1e-9,
                "backoff({n}) = {d} outside ±20 % of {nominal}"
            );
        }
    }
    // At the cap jitter only shortens.
    for u in [0.0, 0.5, 0.99] {
        let d = p.backoff(40, u);
        assert!(d <= secs(1800) && d >= secs(1440), "{d:?}");
    }
    // Samples outside [0, 1) are clamped; NaN means no jitter.
    assert_eq!(p.backoff(0, f64::NAN), secs(30));
    assert_eq!(p.backoff(0, -3.0), secs(24));
    assert_eq!(p.backoff(0, 7.0), secs(36));
}

#[test]
fn jitter_rng_is_deterministic_and_in_range() {
    let a: Vec<f64> = {
        let mut r = JitterRng::new(42);
        (0..100).map(|_| r.next_unit()).collect()
    };
    let b: Vec<f64> = {
        let mut r = JitterRng::new(42);
        (0..100).map(|_| r.next_unit()).collect()
    };
    assert_eq!(a, b);
    assert!(a.iter().all(|u| (0.0..1.0).contains(u)));
    let mut r = JitterRng::new(43);
    assert_ne!(a[0], r.next_unit());
    // Spread out, not stuck.
    let mean = a.iter().sum::<f64>() / a.len() as f64;
    assert!((0.35..0.65).contains(&mean), "mean {mean}");
}

#[test]
fn invalid_settings_are_rejected_naming_the_setting() {
    let d = RetryConfig::default;
    let by_category = |c, n| BTreeMap::from([(c, n)]);
    #[rustfmt::skip]
    let cases: Vec<(RetryConfig, &str)> = vec![
        (RetryConfig { max_retries: 101, ..d() },                                 "max_retries"),
        (RetryConfig { base_delay: Duration::ZERO, ..d() },                       "base_delay"),
        (RetryConfig { base_delay: secs(1801), ..d() },                           "base_delay"),
        (RetryConfig { max_delay: Duration::ZERO, ..d() },                        "max_delay"),
        (RetryConfig { max_delay: MAX_DELAY_LIMIT + secs(1), ..d() },             "max_delay"),
        (RetryConfig { multiplier: 0.5, ..d() },                                  "multiplier"),
        (RetryConfig { multiplier: 17.0, ..d() },                                 "multiplier"),
        (RetryConfig { multiplier: f64::NAN, ..d() },                             "multiplier"),
        (RetryConfig { multiplier: f64::INFINITY, ..d() },                        "multiplier"),
        (RetryConfig { jitter: -0.1, ..d() },                                     "jitter"),
        (RetryConfig { jitter: 1.5, ..d() },                                      "jitter"),
        (RetryConfig { jitter: f64::NAN, ..d() },                                 "jitter"),
        (RetryConfig { category_max_retries: by_category(Authorization, 1), ..d() }, "category_max_retries.authorization"),
        (RetryConfig { category_max_retries: by_category(SystemError, 1000), ..d() }, "category_max_retries.system_error"),
        (RetryConfig { permanent_error_codes: vec![String::new()], ..d() },       "permanent_error_codes"),
        (RetryConfig { permanent_error_codes: vec!["A\nB".into()], ..d() },       "permanent_error_codes"),
    ];
    for (config, field) in cases {
        let err = RetryPolicy::new(config.clone()).expect_err(&format!("{config:?} was accepted"));
        assert_eq!(err.field, field, "{err}");
        assert!(!err.reason.ends_with('.'), "{err}");
    }
}

#[test]
fn valid_edges_are_accepted_and_default_matches_default_config() {
    let d = RetryConfig::default;
    for config in [
        RetryConfig {
            max_retries: 100,
            ..d()
        },
        RetryConfig {
            max_retries: 0,
            ..d()
        },
        RetryConfig {
            base_delay: secs(1800),
            ..d()
        },
        RetryConfig {
            max_delay: MAX_DELAY_LIMIT,
            ..d()
        },
        RetryConfig {
            multiplier: 1.0,
            ..d()
        },
        RetryConfig {
            multiplier: 16.0,
            ..d()
        },
        RetryConfig { jitter: 0.0, ..d() },
        RetryConfig { jitter: 1.0, ..d() },
    ] {
        RetryPolicy::new(config.clone()).unwrap_or_else(|e| panic!("{config:?}: {e}"));
    }
    assert_eq!(RetryPolicy::new(d()).unwrap(), RetryPolicy::default());
}

#[test]
fn seed_tasks_final_failure_flags() {
    // task_001: timeout after 3 retries -> retried in 4 min (8 are allowed); task_002:
    // permission -> final; task_003: storage after 1 retry -> retried in 1 min.
    let p = RetryPolicy::default();
    let seed = FailedTask::seed_examples();
    let flags: Vec<bool> = seed.iter().map(|t| p.is_final_failure(t)).collect();
    assert_eq!(flags, [false, true, false]);
    assert_eq!(p.decide_for(&seed[0], NO_JITTER), RetryAfter(secs(240)));
    assert_eq!(
        p.decide_for(&seed[1], NO_JITTER),
        GiveUp(NotRetryable(Authorization))
    );
    assert_eq!(p.decide_for(&seed[2], NO_JITTER), RetryAfter(secs(60)));
    assert_eq!(p.decide_for(&seed[2], NO_JITTER).delay(), Some(secs(60)));
}

#[test]
fn give_up_reasons_have_stable_names() {
    assert_eq!(NotRetryable(Authorization).as_str(), "not_retryable");
    assert_eq!(PermanentErrorCode.as_str(), "permanent_error_code");
    assert_eq!(MaxRetriesReached { max: 3 }.as_str(), "max_retries_reached");
    assert_eq!(
        MaxRetriesReached { max: 3 }.to_string(),
        "the maximum of 3 retries was reached"
    );
    assert_eq!(
        NotRetryable(Authorization).to_string(),
        "authorization failures are not retried"
    );
}
