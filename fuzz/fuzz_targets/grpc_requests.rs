//! What a `cortex.Ingester` gRPC client sends: request messages (decoded with prost) whose
//! matchers weft turns into a series selector for its HTTP handlers
//! (`api::grpc::selector`). None may panic, and a selector weft builds must read back
//! (`model::parse_selector`) to exactly the matchers it came from, or fail only for what the
//! matchers are (a bad regex, every matcher matching the empty string), never for syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft::api::grpc::selector;
use weft::model::{parse_selector, SelectorError};
use weft::proto::cortex::{
    LabelMatchers, LabelNamesRequest, LabelValuesRequest, MetricsForLabelMatchersRequest,
    QueryRequest,
};

fuzz_target!(|data: &[u8]| {
    let _ = QueryRequest::decode(data);
    let _ = LabelNamesRequest::decode(data);
    let _ = LabelValuesRequest::decode(data);
    let _ = MetricsForLabelMatchersRequest::decode(data);
    let Ok(m) = LabelMatchers::decode(data) else {
        return;
    };
    let Ok(sel) = selector(&m) else {
        return;
    };
    match parse_selector(&sel) {
        Ok(back) => {
            assert_eq!(back.len(), m.matchers.len(), "{sel}");
            for (b, w) in back.iter().zip(&m.matchers) {
                assert_eq!(b.name, w.name, "{sel}");
                assert_eq!(b.value, w.value, "{sel}");
            }
        }
        Err(SelectorError::Syntax { .. }) => panic!("weft built a selector it cannot read: {sel}"),
        Err(_) => {}
    }
});
