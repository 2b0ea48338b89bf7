//! Chunked transfer-coding: an incremental, strict decoder.
//!
//! The decoder walks chunk framing without copying: [`ChunkedDecoder::feed`] reports how
//! many input bytes belong to the message and which ranges of them are chunk data. The
//! proxy forwards framing unchanged to an HTTP/1.1 peer (pass-through) or only the data
//! ranges to an HTTP/1.0 peer (de-chunking). Runs on: a worker. Never allocates.
//!
//! Strictness: hex sizes that fit 64 bits, in at most 64 digits with leading zeros (no
//! whitespace after them), `;`-extensions
//! skipped but bounded and free of control bytes, CRLF required (a bare LF or CR is an
//! error), trailers accepted, bounded and free of control bytes (NUL, bare CR or LF). A
//! decoder made [`ChunkedDecoder::with_limit`] refuses a body whose chunk sizes add up
//! past the limit (413) before reading that chunk's data.

use std::ops::Range;

/// Most hex digits of a chunk size, leading zeros included.
const MAX_SIZE_DIGITS: u8 = 64;
/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked body that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedError(pub &'static str);

/// The reason given when the chunk data passes the decoder's limit.
const TOO_LARGE: &str = "chunked body larger than the limit";

impl ChunkedError {
    /// The status a request with this body gets: 413 past the limit, else 400.
    pub fn status(&self) -> u16 {
        if self.0 == TOO_LARGE {
            413
        } else {
            400
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` seen so far.
    Size {
        digits: u8,
    },
    /// Inside `;ext` after the size, until CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line, until CR.
    Trailer,
    /// Expecting LF after a trailer line's CR.
    TrailerLf,
    /// Expecting LF of the final empty line.
    EndLf,
    Done,
}

/// Where a [`ChunkedDecoder::feed`] call got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes that belong to the body (all of the input unless `done`).
    pub consumed: usize,
    /// The terminating chunk and trailers are complete.
    pub done: bool,
    /// Where in the input the trailer section (trailer fields and the final CRLF) began,
    /// when it began in this call: the byte after the last chunk's `0\r\n`.
    pub trailers_at: Option<usize>,
}

/// Incremental decoder state for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read.
    size: u64,
    /// Bytes of the current extension or trailer line.
    line: usize,
    /// Bytes of the trailer section so far.
    trailers: usize,
    /// Chunk data announced so far (sizes of the chunks begun).
    total: u64,
    /// Most chunk data accepted; 0 = no limit.
    limit: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::with_limit(0)
    }

    /// A decoder that refuses a body announcing more than `limit` data bytes in all
    /// (0 = no limit), as soon as the size line of the chunk that passes it is read.
    pub fn with_limit(limit: u64) -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            total: 0,
            limit,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the decoder is inside the trailer section (after the last chunk).
    pub fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart | State::Trailer | State::TrailerLf | State::EndLf
        )
    }

    /// Advances over `input`, calling `data` with each range of chunk data in it.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkedError> {
        let mut i = 0;
        let mut trailers_at = None;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match hex(b) {
                    Some(v) => {
                        // Leading zeros are valid `1*HEXDIG` (`0005`); the value must fit
                        // 64 bits and the digits, zeros included, stay bounded.
                        if digits >= MAX_SIZE_DIGITS || self.size > u64::MAX >> 4 {
                            return Err(ChunkedError("chunk size too long"));
                        }
                        self.size = (self.size << 4) | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(ChunkedError("chunk size missing")),
                    None => {
                        self.line = 0;
                        match b {
                            b'\r' => self.state = State::SizeLf,
                            b';' => self.state = State::Ext,
                            _ => return Err(ChunkedError("invalid byte after chunk size")),
                        }
                    }
                },
                State::Ext => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkedError("chunk extension too long"));
                    }
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkedError("bare LF in chunk extension")),
                        0..=8 | 10..=31 | 127 => {
                            return Err(ChunkedError("control byte in chunk extension"))
                        }
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError("chunk size line not ended by CRLF"));
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                        trailers_at = Some(i + 1);
                    } else {
                        self.total = self.total.saturating_add(self.size);
                        if self.limit > 0 && self.total > self.limit {
                            return Err(ChunkedError(TOO_LARGE));
                        }
                        self.state = State::Data(self.size);
                    }
                    self.size = 0;
                }
                State::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(i..i + take);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    i += take;
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkedError("chunk data not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError("chunk data not followed by CRLF"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' => return Err(ChunkedError("bare LF in trailers")),
                    b' ' | b'\t' => return Err(ChunkedError("obsolete line folding in trailers")),
                    _ => {
                        self.line = 1;
                        self.state = State::Trailer;
                        self.count_trailer()?;
                    }
                },
                State::Trailer => {
                    self.line += 1;
                    self.count_trailer()?;
                    if self.line > MAX_LINE {
                        return Err(ChunkedError("trailer line too long"));
                    }
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        0..=8 | 10..=31 | 127 => {
                            return Err(ChunkedError("invalid byte in trailer"))
                        }
                        _ => {}
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkedError("trailer line not ended by CRLF"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkedError("chunked body not ended by CRLF"));
                    }
                    self.state = State::Done;
                    return Ok(Progress {
                        consumed: i + 1,
                        done: true,
                        trailers_at,
                    });
                }
                State::Done => {
                    return Ok(Progress {
                        consumed: i,
                        done: true,
                        trailers_at,
                    })
                }
            }
            i += 1;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
            trailers_at,
        })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkedError("trailers too large"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut total = 0;
        for part in [&input[..split], &input[split..]] {
            let p = d.feed(part, |r| out.extend_from_slice(&part[r]))?;
            total += p.consumed;
            if p.done {
                return Ok((out, total));
            }
        }
        Err(ChunkedError("incomplete"))
    }

    #[test]
    fn decodes_at_every_split_point() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld,world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..=body.len() {
            let (data, consumed) = decode_split(body, split).unwrap();
            assert_eq!(data, b"hello world,world", "split {split}");
            assert_eq!(consumed, body.len() - 4, "split {split}");
        }
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"0\r\n folded\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
        ] {
            let mut d = ChunkedDecoder::new();
            assert!(
                d.feed(bad, |_| {}).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_body_past_the_limit_is_refused_at_the_size_line() {
        let mut d = ChunkedDecoder::with_limit(8);
        d.feed(b"5\r\nhello\r\n3\r\nabc\r\n", |_| {}).unwrap();
        let e = d.feed(b"1\r\n", |_| {}).unwrap_err();
        assert_eq!(e.status(), 413);
        let mut d = ChunkedDecoder::with_limit(8);
        let p = d.feed(b"8\r\n12345678\r\n0\r\n\r\n", |_| {}).unwrap();
        assert!(p.done);
        let mut d = ChunkedDecoder::with_limit(8);
        let e = d.feed(b"ffffffffffffffff\r\n", |_| {}).unwrap_err();
        assert_eq!(e.status(), 413);
        assert_eq!(ChunkedError("chunk size missing").status(), 400);
    }

    #[test]
    fn the_trailer_section_is_located() {
        let body = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let p = d.feed(body, |_| {}).unwrap();
        assert_eq!(p.trailers_at, Some(13));
        assert_eq!(&body[13..], b"X-T: 1\r\n\r\n");
        assert!(p.done);
        // Split inside the trailers: the second call is in them from its start.
        let mut d = ChunkedDecoder::new();
        let p = d.feed(&body[..18], |_| {}).unwrap();
        assert_eq!(p.trailers_at, Some(13));
        assert!(d.in_trailers());
        let p = d.feed(&body[18..], |_| {}).unwrap();
        assert_eq!((p.trailers_at, p.done), (None, true));
    }

    #[test]
    fn max_size_is_accepted_without_overflow() {
        let mut d = ChunkedDecoder::new();
        let p = d.feed(b"ffffffffffffffff\r\nab", |_| {}).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 20,
                done: false,
                trailers_at: None,
            }
        );
    }
}
