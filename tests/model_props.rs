//! Properties of `weft::model`: label sets built from wire pairs, their hashes, and the
//! series-selector parser.

use proptest::prelude::*;
use weft::model::{
    hash_raw, parse_selector, sort_and_drop_empty, Interner, LabelLimits, Labels, MatchOp,
    NameValidationScheme,
};

/// A label name: usually valid, sometimes a UTF-8 name only the `utf8` scheme takes
/// (dots, spaces, quotes, non-ASCII), sometimes `__name__`, sometimes arbitrary bytes.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,4}".prop_map(String::into_bytes),
        2 => "[a-z0-9_. :\"'`\\\n\t{}=,é東😀-]{1,5}".prop_map(String::into_bytes),
        2 => Just(b"__name__".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

/// A label value: usually valid UTF-8 with characters that need escaping, sometimes
/// empty, sometimes arbitrary bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z_:0-9\"\\\\\n\t é😀{}=,'`]{0,6}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ]
}

/// Raw pairs as they might come off the wire, with a metric name added most of the time so
/// that many inputs are accepted.
fn raw_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    (
        proptest::collection::vec((name(), value()), 0..6),
        proptest::option::weighted(
            0.8,
            prop_oneof![
                3 => "[a-zA-Z_:][a-zA-Z0-9_:]{0,6}",
                1 => "[a-z0-9_. :\"\\\n{}é東😀-]{1,6}",
            ],
        ),
    )
        .prop_map(|(mut pairs, metric)| {
            if let Some(m) = metric {
                pairs.push((b"__name__".to_vec(), m.into_bytes()));
            }
            pairs
        })
}

fn borrow(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect()
}

fn build(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Labels, weft::model::LabelError> {
    build_with(pairs, NameValidationScheme::Utf8)
}

fn build_with(
    pairs: &[(Vec<u8>, Vec<u8>)],
    scheme: NameValidationScheme,
) -> Result<Labels, weft::model::LabelError> {
    let mut raw = borrow(pairs);
    let limits = LabelLimits {
        name_validation: scheme,
        ..LabelLimits::default()
    };
    Labels::from_raw_pairs(&mut raw, &limits, &mut Interner::default())
}

fn is_legacy_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_legacy_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn from_raw_pairs_never_panics_on_arbitrary_bytes(
        pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..8)),
            0..8,
        )
    ) {
        let _ = build(&pairs);
    }

    #[test]
    fn accepted_sets_are_sorted_unique_non_empty_and_hash_like_their_wire_pairs(
        pairs in raw_pairs()
    ) {
        if let Ok(labels) = build(&pairs) {
            let names: Vec<&str> = labels.iter().map(|l| &*l.name).collect();
            prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "not sorted/unique: {names:?}");
            prop_assert!(labels.iter().all(|l| !l.value.is_empty()));
            prop_assert!(!labels.is_empty());
            let mut wire = borrow(&pairs);
            sort_and_drop_empty(&mut wire);
            prop_assert_eq!(hash_raw(&wire), labels.hash_key());
            prop_assert!(labels.eq_raw(&wire));
        }
    }

    #[test]
    fn unsorted_input_builds_the_same_labels_as_sorted_input(
        pairs in raw_pairs(),
        seed in any::<u64>(),
    ) {
        let mut sorted = pairs.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        // A cheap deterministic shuffle: rotate, then reverse a prefix.
        let mut shuffled = pairs;
        if !shuffled.is_empty() {
            let k = (seed as usize) % shuffled.len();
            shuffled.rotate_left(k);
            let j = ((seed >> 32) as usize) % (shuffled.len() + 1);
            shuffled[..j].reverse();
        }
        let a = build(&sorted);
        let b = build(&shuffled);
        prop_assert_eq!(a.is_ok(), b.is_ok());
        if let (Ok(a), Ok(b)) = (a, b) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn eq_raw_agrees_with_equality(a in raw_pairs(), b in raw_pairs(), same in any::<bool>()) {
        let b = if same { a.clone() } else { b };
        if let (Ok(la), Ok(lb)) = (build(&a), build(&b)) {
            let mut wire = borrow(&b);
            sort_and_drop_empty(&mut wire);
            prop_assert_eq!(la.eq_raw(&wire), la == lb);
            if la == lb {
                prop_assert_eq!(la.hash_key(), lb.hash_key());
            }
        }
    }

    #[test]
    fn selector_parser_never_panics_on_arbitrary_strings(s in any::<String>()) {
        let _ = parse_selector(&s);
    }

    #[test]
    fn selector_parser_never_panics_on_selector_like_strings(
        s in "[a-z_:{}=!~,\"'`\\\\ \n#xuU0-9.*+|()é]{0,30}"
    ) {
        let _ = parse_selector(&s);
    }

    #[test]
    fn display_parses_back_to_a_selector_for_exactly_that_set(pairs in raw_pairs()) {
        if let Ok(labels) = build(&pairs) {
            let text = labels.to_string();
            let matchers = parse_selector(&text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(matchers.len(), labels.len(), "{}", text);
            for m in &matchers {
                prop_assert_eq!(m.op, MatchOp::Eq);
                prop_assert_eq!(labels.get(&m.name), Some(m.value.as_str()), "{}", text);
                prop_assert!(m.matches(labels.get(&m.name).unwrap_or("")));
            }
        }
    }

    #[test]
    fn legacy_accepts_a_subset_of_utf8_and_only_legacy_names(pairs in raw_pairs()) {
        let legacy = build_with(&pairs, NameValidationScheme::Legacy);
        let utf8 = build(&pairs);
        if let Ok(l) = &legacy {
            prop_assert_eq!(Some(l), utf8.as_ref().ok());
            for label in l.iter() {
                prop_assert!(is_legacy_label_name(&label.name), "{:?}", label.name);
            }
            prop_assert!(is_legacy_metric_name(l.metric_name().unwrap_or("")));
        }
        if let Ok(u) = &utf8 {
            let names_legacy = u.iter().all(|l| is_legacy_label_name(&l.name))
                && is_legacy_metric_name(u.metric_name().unwrap_or(""));
            prop_assert_eq!(legacy.is_ok(), names_legacy, "{}", u);
        }
    }
}
