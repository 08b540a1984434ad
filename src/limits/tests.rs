use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

const EXAMPLE: &str = "\
# Per-tenant limits.
overrides:
  tenant-a:
    max_series_per_tenant: 500000
    retention: 30d
    creation_grace_period: 10m
    max_label_names_per_series: 40
  tenant-b:
    retention: 0
";

#[test]
fn the_documented_example_parses_and_unset_keys_fall_back_to_the_flags() {
    let o = Overrides::from_text(EXAMPLE).unwrap();
    let a = o.tenant(&tenant("tenant-a"));
    assert_eq!(a.max_series_per_tenant, Some(500_000));
    assert_eq!(a.max_label_names_per_series, Some(40));
    assert_eq!(a.max_label_value_length, None);
    assert_eq!(a.creation_grace_period, Some(Duration::from_secs(600)));
    let day = Duration::from_secs(86_400);
    assert_eq!(o.retention(&tenant("tenant-a"), None), Some(30 * day));
    // tenant-b keeps for ever whatever the flag says; tenant-c takes the flag.
    assert_eq!(o.retention(&tenant("tenant-b"), Some(day)), None);
    assert_eq!(o.retention(&tenant("tenant-c"), Some(day)), Some(day));
    assert_eq!(o.retention(&tenant("tenant-c"), None), None);
    assert_eq!(
        o.creation_grace_period(&tenant("tenant-c"), Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    assert_eq!(o.tenants(), vec!["tenant-a", "tenant-b"]);
}

#[test]
fn empty_and_comment_only_files_set_nothing() {
    for text in [
        "",
        "\n\n",
        "# nothing yet\n",
        "overrides:\n",
        "overrides: {}\n",
    ] {
        let o = Overrides::from_text(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(o.tenants().is_empty(), "{text:?}");
    }
}

#[test]
fn an_unknown_key_is_an_error_that_names_it_and_its_line() {
    let text = "overrides:\n  a:\n    max_series_per_tenant: 5\n    max_seris: 7\n";
    let e = Overrides::from_text(text).unwrap_err().to_string();
    assert!(e.contains("max_seris"), "{e}");
    assert!(e.contains("line 4"), "{e}");
    let e = Overrides::from_text("overides:\n  a: {}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("overides") && e.contains("line 1"), "{e}");
}

#[test]
fn bad_values_and_bad_tenant_ids_are_errors() {
    let cases = [
        ("overrides:\n  a:\n    retention: 30\n", "no unit"),
        ("overrides:\n  a:\n    retention: 30x\n", "unknown unit"),
        (
            "overrides:\n  a:\n    max_series_per_tenant: -1\n",
            "max_series",
        ),
        (
            "overrides:\n  a:\n    max_series_per_tenant: lots\n",
            "max_series",
        ),
        (
            "overrides:\n  \"a/b\":\n    retention: 1d\n",
            "invalid tenant id",
        ),
        ("overrides: [1, 2]\n", "overrides"),
        ("- just\n- a list\n", ""),
    ];
    for (text, want) in cases {
        let e = Overrides::from_text(text)
            .err()
            .unwrap_or_else(|| panic!("{text:?} must be refused"))
            .to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn a_reload_applies_a_changed_file_and_keeps_the_last_good_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrides.yaml");
    std::fs::write(&path, "overrides:\n  a:\n    max_series_per_tenant: 5\n").unwrap();
    let o = Overrides::load(&path).unwrap();
    let a = tenant("a");
    assert_eq!(o.tenant(&a).max_series_per_tenant, Some(5));
    assert!(!o.reload().unwrap(), "unchanged");

    std::fs::write(&path, "overrides:\n  a:\n    max_series_per_tenant: 7\n").unwrap();
    assert!(o.reload().unwrap());
    assert_eq!(o.tenant(&a).max_series_per_tenant, Some(7));

    std::fs::write(&path, "overrides:\n  a:\n    max_series_per_tenant: [\n").unwrap();
    assert!(matches!(o.reload(), Err(OverridesError::Parse(_))));
    assert_eq!(
        o.tenant(&a).max_series_per_tenant,
        Some(7),
        "last good kept"
    );

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(o.reload(), Err(OverridesError::Read { .. })));
    assert_eq!(
        o.tenant(&a).max_series_per_tenant,
        Some(7),
        "last good kept"
    );
}

#[test]
fn a_bad_file_at_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrides.yaml");
    std::fs::write(&path, "overrides:\n  a:\n    nope: 1\n").unwrap();
    assert!(Overrides::load(&path).is_err());
    assert!(Overrides::load(&dir.path().join("missing.yaml")).is_err());
}

#[test]
fn a_file_over_the_size_bound_is_refused_without_being_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrides.yaml");
    // Valid YAML (a comment), one byte over the bound.
    let mut text = vec![b'#'; MAX_FILE_BYTES as usize + 1];
    text[MAX_FILE_BYTES as usize] = b'\n';
    std::fs::write(&path, &text).unwrap();
    let e = Overrides::load(&path).unwrap_err();
    assert!(matches!(e, OverridesError::TooLarge { .. }), "{e}");
    text.pop();
    text.push(b'#');
    text.truncate(MAX_FILE_BYTES as usize);
    std::fs::write(&path, &text).unwrap();
    assert!(Overrides::load(&path).is_ok(), "at the bound is fine");
}

#[tokio::test(start_paused = true)]
async fn the_reloader_counts_failures_and_stamps_successes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overrides.yaml");
    std::fs::write(&path, "overrides:\n  a:\n    max_series_per_tenant: 5\n").unwrap();
    let o = Arc::new(Overrides::load(&path).unwrap());
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(
        o.clone()
            .run_reloader(Duration::from_secs(10), metrics.clone()),
    );
    // Let the reloader start and stamp its first success.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(metrics.limits.overrides_last_reload_success.get() > 0);

    std::fs::write(&path, "overrides:\n  a:\n    bad_key: 5\n").unwrap();
    // spawn_blocking runs on a real thread: advance time, then wait for it in real time.
    // Up to about 10 s of real time, for a loaded machine.
    for _ in 0..2000 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if metrics.limits.overrides_reload_failures.get() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(metrics.limits.overrides_reload_failures.get() >= 1);
    assert_eq!(o.tenant(&tenant("a")).max_series_per_tenant, Some(5));
    task.abort();
}

proptest! {
    /// The overrides file is operator input that may be truncated, mistyped or generated:
    /// whatever it holds, parsing returns, and never panics.
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    /// The same for text built from YAML's own punctuation and the real keys, which gets
    /// much deeper into the parser than random bytes.
    #[test]
    fn yaml_like_text_never_panics_the_parser(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("overrides:".to_string()),
                Just("\n".to_string()),
                Just("  ".to_string()),
                Just("- ".to_string()),
                Just(": ".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just("&a ".to_string()),
                Just("*a".to_string()),
                Just("!!str ".to_string()),
                Just("'".to_string()),
                Just("\"".to_string()),
                Just("retention".to_string()),
                Just("max_series_per_tenant".to_string()),
                Just("creation_grace_period".to_string()),
                Just("10m".to_string()),
                Just("99999999999999999999999".to_string()),
                "[a-z0-9.-]{1,8}",
            ],
            0..64,
        )
    ) {
        let text = parts.concat();
        let _ = parse(text.as_bytes());
    }
}

#[test]
fn name_validation_scheme_parses_and_refuses_unknown_schemes() {
    use crate::model::NameValidationScheme;
    let o = Overrides::from_text(
        "overrides:\n  a:\n    name_validation_scheme: legacy\n  b:\n    name_validation_scheme: utf8\n",
    )
    .unwrap();
    assert_eq!(
        o.tenant(&tenant("a")).name_validation_scheme,
        Some(NameValidationScheme::Legacy)
    );
    assert_eq!(
        o.tenant(&tenant("b")).name_validation_scheme,
        Some(NameValidationScheme::Utf8)
    );
    assert_eq!(o.tenant(&tenant("c")).name_validation_scheme, None);
    let e = Overrides::from_text("overrides:\n  a:\n    name_validation_scheme: UTF-8\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("UTF-8") && e.contains("line 3"), "{e}");
}
