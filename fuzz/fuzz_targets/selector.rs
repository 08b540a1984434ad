//! Feeds arbitrary text to the series-selector parser and arbitrary pairs to
//! `Labels::from_raw_pairs`; neither may panic, and what they accept must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::model::{
    hash_raw, parse_selector, sort_and_drop_empty, Interner, LabelLimits, Labels,
    NameValidationScheme,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_selector(s);
    }

    // Split the input into pairs: fields separated by 0x00, alternating name and value.
    let fields: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let mut pairs: Vec<(&[u8], &[u8])> = fields
        .chunks(2)
        .map(|c| (c[0], c.get(1).copied().unwrap_or(b"")))
        .collect();
    let mut wire = pairs.clone();
    // `legacy` accepts a subset of what `utf8` (the default) accepts, and builds the same set.
    let legacy_limits = LabelLimits {
        name_validation: NameValidationScheme::Legacy,
        ..LabelLimits::default()
    };
    let legacy =
        Labels::from_raw_pairs(&mut pairs.clone(), &legacy_limits, &mut Interner::default());
    let limits = LabelLimits::default();
    let mut interner = Interner::default();
    let utf8 = Labels::from_raw_pairs(&mut pairs, &limits, &mut interner);
    if let Ok(l) = &legacy {
        assert_eq!(
            Some(l),
            utf8.as_ref().ok(),
            "legacy accepted what utf8 refused"
        );
    }
    match utf8 {
        Ok(labels) => {
            sort_and_drop_empty(&mut wire);
            assert_eq!(hash_raw(&wire), labels.hash_key());
            assert!(labels.eq_raw(&wire));
            // Display must parse back to exactly this set.
            let matchers = parse_selector(&labels.to_string()).expect("Display parses back");
            assert_eq!(matchers.len(), labels.len());
            for m in &matchers {
                assert_eq!(labels.get(&m.name), Some(m.value.as_str()));
            }
        }
        Err(_) => assert!(interner.is_empty(), "a refused set interned strings"),
    }
});
