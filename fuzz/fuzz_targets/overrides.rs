//! Feeds arbitrary bytes to the `--limits.overrides-file` parser: it may refuse them, never
//! panic, and every tenant it accepts must be a valid tenant id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::model::TenantId;

fuzz_target!(|data: &[u8]| {
    if let Ok(tenants) = weft::limits::parse(data) {
        for id in tenants.keys() {
            assert!(TenantId::parse(id).is_ok(), "accepted tenant id {id:?}");
        }
    }
});
