//! Property tests: the listing order is a total order consistent with equality, cursors
//! round-trip, and validation accepts exactly what the contract allows.

use failed_tasks_domain::{Cursor, PageLimits, PageSize, SortKey, TaskId, Timestamp};
use proptest::prelude::*;

fn arb_key() -> impl Strategy<Value = SortKey> {
    (0i64..=Timestamp::MAX_MILLIS, "[a-z0-9_:./-]{1,40}").prop_map(|(ms, id)| {
        SortKey::new(
            Timestamp::from_unix_millis(ms).unwrap(),
            TaskId::parse(id).unwrap(),
        )
    })
}

proptest! {
    #[test]
    fn order_is_total_and_antisymmetric(a in arb_key(), b in arb_key(), c in arb_key()) {
        use std::cmp::Ordering::*;
        // Exactly one of <, =, > and equality agrees with Eq.
        prop_assert_eq!(a.cmp(&b) == Equal, a == b);
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        // Transitive.
        if a <= b && b <= c { prop_assert!(a <= c); }
    }

    #[test]
    fn newer_always_sorts_first(a in arb_key(), b in arb_key()) {
        if a.fail_time() > b.fail_time() { prop_assert!(a < b); }
        if a.fail_time() == b.fail_time() && a.task_id().as_str().as_bytes() > b.task_id().as_str().as_bytes() {
            prop_assert!(a < b);
        }
    }

    #[test]
    fn sorted_lists_are_newest_first(mut keys in proptest::collection::vec(arb_key(), 0..50)) {
        keys.sort();
        for w in keys.windows(2) {
            prop_assert!(w[0].fail_time() >= w[1].fail_time());
        }
    }

    #[test]
    fn cursor_round_trips(k in arb_key()) {
        let c = Cursor::after(k);
        prop_assert_eq!(Cursor::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn arbitrary_text_never_panics_as_a_cursor(s in ".{0,200}") {
        let _ = Cursor::decode(&s);
    }

    #[test]
    fn task_id_validation(s in "\\PC{0,300}") {
        let ok = !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        prop_assert_eq!(TaskId::parse(s.clone()).is_ok(), ok);
    }

    #[test]
    fn task_ids_with_control_chars_are_rejected(prefix in "[a-z]{0,10}", c in 0u8..0x20, suffix in "[a-z]{0,10}") {
        let id = format!("{prefix}{}{suffix}", c as char);
        prop_assert!(TaskId::parse(id).is_err());
    }

    #[test]
    fn page_size_accepts_exactly_one_to_max(n in 0u32..3000, max in 1u32..2000) {
        let limits = PageLimits::new(1, max).unwrap();
        prop_assert_eq!(PageSize::new(n, limits).is_ok(), n >= 1 && n <= max);
        prop_assert_eq!(PageSize::parse(&n.to_string(), limits).is_ok(), n >= 1 && n <= max);
    }
}
