//! Reading a request head as it arrives, without doing the reading: the caller appends
//! what its socket gave to a buffer and asks [`HeadReader::poll`] whether a whole head is
//! there yet. Each partial head is parsed for its errors, so that garbage, a request line
//! over its limit or too many header fields are refused before the head ends, and a head
//! that outgrows its limit is refused without waiting for its blank line.
//!
//! The workers (monoio, owned buffers), the admin server and the echo backend (blocking
//! std sockets) all read heads with it, so the three agree on where a head ends and what
//! is refused on the way.
//!
//! Runs on: whichever thread reads the connection. No IO, no allocation.

use super::{header_buf, parse_request, Request, MAX_HEADERS};
use crate::head::parse::{check_request_line, serve_minor_as_1_1};
use crate::HeadError;

/// What a request head is held to while it arrives (and once it is whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line (its CRLF excluded); longer → 414.
    pub max_line: usize,
    /// Largest head (request line, fields and blank line); larger → 431.
    pub max_head: usize,
    /// Most header fields (at most [`MAX_HEADERS`]); more → 431.
    pub max_headers: usize,
}

impl HeadLimits {
    /// `max_headers` is capped at [`MAX_HEADERS`], what one parse has room for.
    pub fn new(max_line: usize, max_head: usize, max_headers: usize) -> HeadLimits {
        HeadLimits {
            max_line,
            max_head,
            max_headers: max_headers.min(MAX_HEADERS),
        }
    }
}

/// Where the search for a head's end stands in the bytes read so far. One per head: a
/// fresh (default) reader for each request.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadReader {
    /// Bytes of the buffer already searched for the blank line.
    scanned: usize,
}

impl HeadReader {
    /// Called with the whole buffer (the head starts at its first byte) each time bytes
    /// were appended to it. `Ok(true)`: a whole head is there (parse it with
    /// [`parse_complete`]); `Ok(false)`: read more; `Err`: refuse the request with that
    /// status and close.
    ///
    /// An `HTTP/1.x` request line with a minor version other than 0 and 1 is rewritten in
    /// `buf` to `HTTP/1.1` ([`serve_minor_as_1_1`]) before it is parsed.
    #[inline]
    pub fn poll(&mut self, buf: &mut [u8], limits: &HeadLimits) -> Result<bool, HeadError> {
        let complete = head_complete(buf, self.scanned);
        serve_minor_as_1_1(buf);
        if complete {
            return Ok(true);
        }
        self.scanned = buf.len();
        // Incomplete: parse anyway so that garbage is refused before the head ends.
        check_request_line(buf, limits.max_line)?;
        let mut hb = header_buf();
        parse_request(buf, &mut hb[..limits.max_headers])?;
        if buf.len() >= limits.max_head {
            return Err(HeadError::new(431, "request head too large"));
        }
        Ok(false)
    }
}

/// Parses the whole head at the start of `buf` (after [`HeadReader::poll`] said it is
/// there) into `headers`, held to `limits`.
#[inline]
pub fn parse_complete<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut super::HeaderBuf<'b>,
    limits: &HeadLimits,
) -> Result<Request<'h, 'b>, HeadError> {
    check_request_line(buf, limits.max_line)?;
    match parse_request(buf, &mut headers[..limits.max_headers])? {
        // A head that arrived whole in one read is held to the same limit.
        Some(req) if req.len > limits.max_head => {
            Err(HeadError::new(431, "request head too large"))
        }
        Some(req) => Ok(req),
        None => Err(HeadError::new(400, "malformed head")),
    }
}

/// True when `buf` holds a whole head: a blank line (CRLF CRLF, or bare LFs, which the
/// parser refuses later with a 400) after the first line. `from`: bytes already scanned.
/// Leading empty lines before the request line are skipped, as RFC 9112 §2.2 allows.
fn head_complete(buf: &[u8], from: usize) -> bool {
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let mut i = from.saturating_sub(3).max(lead);
    while let Some(pos) = buf[i..].iter().position(|b| *b == b'\n') {
        let j = i + pos;
        match (buf.get(j + 1), buf.get(j + 2)) {
            (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => return true,
            _ => i = j + 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunked::ChunkedDecoder;
    use crate::head::analyze_request;
    use crate::BodyKind;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 8 * 1024,
        max_head: 32 * 1024,
        max_headers: 100,
    };

    /// What a parse says about a request: method, target, minor, header fields, head
    /// length, body framing.
    type Parsed = (String, String, u8, Vec<(String, Vec<u8>)>, usize, BodyKind);

    fn parse_whole(buf: &[u8]) -> Option<Parsed> {
        let mut hb = header_buf();
        let req = parse_request(buf, &mut hb).ok()??;
        let info = analyze_request(&req).ok()?;
        let headers = req
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        Some((
            req.method.to_owned(),
            req.target.to_owned(),
            req.minor,
            headers,
            req.len,
            info.framing.body,
        ))
    }

    /// A valid request: head fields, then a body framed by Content-Length or chunked.
    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
        let path = "(/[a-zA-Z0-9._~%-]{0,12}){1,4}(\\?[a-z0-9=&]{0,16})?";
        let field = ("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,40}");
        let body = prop::collection::vec(any::<u8>(), 0..200);
        let chunked = any::<bool>();
        let chunk = 1..50usize;
        (
            method,
            path,
            prop::collection::vec(field, 0..8),
            body,
            chunked,
            chunk,
            any::<bool>(),
        )
            .prop_map(|(method, path, fields, body, chunked, chunk, lead)| {
                let mut r = Vec::new();
                if lead {
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(
                    format!("{method} {path} HTTP/1.1\r\nHost: h.test\r\n").as_bytes(),
                );
                for (name, value) in fields {
                    r.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                }
                if chunked {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(chunk) {
                        r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        r.extend_from_slice(piece);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                } else {
                    r.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    r.extend_from_slice(&body);
                }
                r
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Reads the request in the pieces given by `cuts`, as a connection does:
        /// incomplete heads pass the reader's checks, the head is complete exactly when
        /// its blank line arrived, and it parses as the whole does; a chunked body split
        /// the same way decodes to the same data.
        #[test]
        fn any_split_of_a_valid_request_parses_as_the_whole(
            raw in valid_request(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = parse_whole(&raw).expect("a valid request parses");
            let head_len = whole.4;
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(raw.len() + 1)).collect();
            cuts.push(raw.len());
            cuts.sort_unstable();
            let mut reader = HeadReader::default();
            let mut buf = Vec::new();
            let mut parsed = None;
            let mut prev = 0;
            for &cut in &cuts {
                buf.extend_from_slice(&raw[prev..cut]);
                prev = cut;
                if buf.is_empty() {
                    continue;
                }
                if reader.poll(&mut buf, &LIMITS) == Ok(true) {
                    prop_assert!(buf.len() >= head_len);
                    let mut hb = header_buf();
                    prop_assert!(parse_complete(&buf, &mut hb, &LIMITS).is_ok());
                    parsed = parse_whole(&buf);
                    break;
                }
                prop_assert!(buf.len() < head_len, "head end missed at {}", buf.len());
            }
            prop_assert_eq!(parsed.as_ref(), Some(&whole));
            if whole.5 == BodyKind::Chunked {
                let body = &raw[head_len..];
                let mut whole_data = Vec::new();
                let p = ChunkedDecoder::new().feed(body, |r| whole_data.extend_from_slice(&body[r])).unwrap();
                prop_assert!(p.done);
                let mut d = ChunkedDecoder::new();
                let mut data = Vec::new();
                let mut start = 0;
                for &cut in cuts.iter().filter(|c| **c > head_len) {
                    let piece = &body[start..cut - head_len];
                    d.feed(piece, |r| data.extend_from_slice(&piece[r])).unwrap();
                    start = cut - head_len;
                }
                prop_assert!(d.is_done());
                prop_assert_eq!(data, whole_data);
            }
        }
    }

    #[test]
    fn a_head_is_complete_at_its_blank_line_however_it_was_read() {
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let end = head.len() - 4;
        for cut in 0..=head.len() {
            // Scanning resumes where the last (incomplete) read ended.
            for from in (0..=cut).filter(|f| !head_complete(&head[..*f], 0)) {
                assert_eq!(
                    head_complete(&head[..cut], from),
                    cut >= end,
                    "cut {cut} from {from}"
                );
            }
        }
        assert!(head_complete(b"GET / HTTP/1.1\nHost: a\n\n", 0));
        assert!(
            !head_complete(b"\r\n\r\n", 0),
            "leading empty lines are not a head"
        );
    }

    #[test]
    fn limits_are_enforced_before_the_head_ends() {
        let limits = HeadLimits::new(20, 64, 2);
        let refuse = |bytes: &[u8]| {
            HeadReader::default()
                .poll(&mut bytes.to_vec(), &limits)
                .map_err(|e| e.status)
        };
        assert_eq!(refuse(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa"), Err(414));
        assert_eq!(
            refuse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n"),
            Err(431)
        );
        assert_eq!(
            refuse(&[b"GET / HTTP/1.1\r\nA: ".as_slice(), &[b'x'; 60]].concat()),
            Err(431)
        );
        assert_eq!(refuse(b"GET / HTTP/1.1\r\nBad Header\r\n"), Err(400));
        assert_eq!(refuse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(false));
        assert_eq!(refuse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(true));
        // A whole head over the limit, read at once.
        let big = [
            b"GET / HTTP/1.1\r\nA: ".as_slice(),
            &[b'x'; 60],
            b"\r\n\r\n",
        ]
        .concat();
        assert_eq!(refuse(&big), Ok(true));
        let mut hb = header_buf();
        assert_eq!(
            parse_complete(&big, &mut hb, &limits).unwrap_err().status,
            431
        );
    }
}
