//! Fuzzes the request path's pure parsing: the request-line limit, the incremental head
//! reader, the head parser, the
//! framing analysis (a CONNECT's too), path normalisation and the upstream head writer,
//! on whole input and split in two (the split must agree with the whole: never a
//! different request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_http::head::{self, HostHeader};

/// What a parse concludes, comparable across splits.
fn outcome(buf: &[u8]) -> Option<Result<(usize, String), u16>> {
    let mut hb = head::header_buf();
    match head::parse_request(buf, &mut hb) {
        Ok(None) => None,
        Err(e) => Some(Err(e.status)),
        // A CONNECT is analysed on its own path, as the proxy does.
        Ok(Some(req)) if req.method == "CONNECT" => Some(
            head::analyze_connect(&req)
                .map(|authority| (req.len, authority.to_owned()))
                .map_err(|e| e.status),
        ),
        Ok(Some(req)) => Some(match head::analyze_request(&req) {
            Err(e) => Err(e.status),
            Ok(info) => {
                let path = match head::normalize_path(info.path) {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e.status)),
                };
                let mut out = Vec::new();
                head::write_upstream_head(
                    &mut out,
                    &req,
                    &info,
                    &path,
                    Some(std::net::IpAddr::from([127, 0, 0, 1])),
                    HostHeader::Pass,
                );
                head::finish_upstream_head(&mut out, info.framing.close);
                // The head written upstream must itself parse, with the same framing. It may
                // carry up to MAX_HEADERS fields plus the ones strait adds (X-Forwarded-*),
                // so it is re-parsed with room for more.
                let mut hb2 = [const { std::mem::MaybeUninit::uninit() }; 2 * head::MAX_HEADERS];
                let again = head::parse_request(&out, &mut hb2)
                    .expect("the upstream head parses")
                    .expect("the upstream head is complete");
                let info2 = head::analyze_request(&again).expect("the upstream head is valid");
                assert_eq!(info2.framing.body, info.framing.body);
                Ok((req.len, format!("{:?}", info.framing.body)))
            }
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = head::check_request_line(data, 8192);
    // The incremental reader, as a connection drives it: never a panic, and a head it
    // calls whole is one the parser finishes (or refuses).
    let limits = head::HeadLimits::new(8192, 32 * 1024, 100);
    let mut owned = data.to_vec();
    if let Ok(true) = head::HeadReader::default().poll(&mut owned, &limits) {
        let mut hb = head::header_buf();
        let _ = head::reader::parse_complete(&owned, &mut hb, &limits);
    }
    let whole = outcome(data);
    if let Some(Ok((len, _))) = &whole {
        // A complete head: every prefix of it is incomplete or already an error.
        let cut = data.len().min(*len) / 2;
        if let Some(Ok(_)) = outcome(&data[..cut]) {
            panic!("a prefix of {cut} bytes parsed as a complete request");
        }
    }
});
