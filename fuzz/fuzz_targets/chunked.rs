//! Fuzzes the chunked decoder: never a panic, and feeding the input in two pieces gives
//! the same outcome (error or not, bytes consumed, data) as feeding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_http::chunked::ChunkedDecoder;

fn decode(pieces: &[&[u8]], limit: u64) -> Result<(usize, bool, Vec<u8>), ()> {
    let mut d = ChunkedDecoder::with_limit(limit);
    let (mut consumed, mut data) = (0, Vec::new());
    for piece in pieces {
        let p = d
            .feed(piece, |r| data.extend_from_slice(&piece[r]))
            .map_err(|_| ())?;
        consumed += p.consumed;
        if p.done {
            return Ok((consumed, true, data));
        }
    }
    Ok((consumed, false, data))
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let limit = u64::from(split % 4) * 64;
    let at = usize::from(split).min(data.len());
    let whole = decode(&[data], limit);
    let split = decode(&[&data[..at], &data[at..]], limit);
    assert_eq!(whole, split);
    if let Ok((consumed, _, body)) = whole {
        assert!(consumed <= data.len());
        assert!(body.len() <= consumed);
    }
});
