//! Fuzzes the response head parser and framing analysis, and the client head writer:
//! never a panic, and an accepted response's rewritten head parses again with the same
//! status and valid framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_http::head::{self, ClientFraming};
use strait_http::BodyKind;

fuzz_target!(|data: &[u8]| {
    let mut hb = head::header_buf();
    let Ok(Some(resp)) = head::parse_response(data, &mut hb) else {
        return;
    };
    let Ok(framing) = head::analyze_response(&resp) else {
        return;
    };
    let client = match framing.body {
        BodyKind::None => ClientFraming::None,
        BodyKind::Length(n) => ClientFraming::Length(n),
        BodyKind::Chunked | BodyKind::Close => ClientFraming::Chunked,
    };
    let mut out = Vec::new();
    head::write_client_head(&mut out, &resp, &framing, client, true, 1);
    // The rewritten head may add framing and Connection fields: a response at the parser's
    // field limit cannot be parsed back with the same limit (found by this target).
    if resp.headers.len() + 2 > head::MAX_HEADERS {
        return;
    }
    let mut hb2 = head::header_buf();
    let again = head::parse_response(&out, &mut hb2)
        .expect("the client head parses")
        .expect("the client head is complete");
    assert_eq!(again.status, resp.status);
    head::analyze_response(&again).expect("the client head is valid");
});
