//! The PROXY protocol parser and writers against the spec's examples, malformed input
//! and round trips (proptest).

use super::*;
use proptest::prelude::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn done(header: Proxied, len: usize) -> Result<Parsed, Error> {
    Ok(Parsed::Done { header, len })
}

fn addrs(src: &str, dst: &str) -> Proxied {
    Proxied::Addrs {
        src: sa(src),
        dst: sa(dst),
    }
}

fn v1(src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_v1(&mut out, sa(src), sa(dst));
    out
}

fn v2(src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_v2(&mut out, sa(src), sa(dst));
    out
}

/// A v2 header with the given command, family and payload (length taken from it).
fn v2_raw(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn v1_err(line: &str) -> Error {
    parse(line.as_bytes()).unwrap_err()
}

fn assert_every_prefix_partial(header: &[u8]) {
    for n in 0..header.len() {
        assert_eq!(
            parse(&header[..n]),
            Ok(Parsed::Partial),
            "prefix of {n} bytes"
        );
    }
}

// --- v1 ---

#[test]
fn v1_ipv4_is_written_as_tcp4_and_parses_back() {
    let h = v1("192.0.2.1:56324", "198.51.100.7:443");
    assert_eq!(h, b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    let want = addrs("192.0.2.1:56324", "198.51.100.7:443");
    assert_eq!(parse(&h), done(want, h.len()));
}

#[test]
fn v1_ipv6_is_written_as_tcp6_and_parses_back() {
    let h = v1("[2001:db8::1]:1", "[::1]:65535");
    assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    let want = addrs("[2001:db8::1]:1", "[::1]:65535");
    assert_eq!(parse(&h), done(want, h.len()));
}

#[test]
fn v1_mixed_families_map_the_ipv4_address_to_ipv6() {
    let h = v1("192.0.2.1:80", "[2001:db8::2]:0");
    assert_eq!(h, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 80 0\r\n");
    let want = addrs("[::ffff:192.0.2.1]:80", "[2001:db8::2]:0");
    assert_eq!(parse(&h), done(want, h.len()));
    let h = v1("[2001:db8::2]:1", "10.0.0.1:2");
    let want = addrs("[2001:db8::2]:1", "[::ffff:10.0.0.1]:2");
    assert_eq!(parse(&h), done(want, h.len()));
}

#[test]
fn v1_spec_worst_cases_parse() {
    let tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    let want = addrs("255.255.255.255:65535", "255.255.255.255:65535");
    assert_eq!(parse(tcp4.as_bytes()), done(want, 56));
    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
    assert_eq!(tcp6.len(), 104);
    let want = addrs(&format!("[{full}]:65535"), &format!("[{full}]:65535"));
    assert_eq!(parse(tcp6.as_bytes()), done(want, 104));
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), done(Proxied::Local, 15));
    let unknown = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
    assert_eq!(unknown.len(), 107);
    assert_eq!(parse(unknown.as_bytes()), done(Proxied::Local, 107));
}

#[test]
fn v1_unknown_ignores_what_follows_up_to_crlf() {
    let h = b"PROXY UNKNOWN whatever \x01\xff\r anything\r\nGET /";
    assert_eq!(parse(h), done(Proxied::Local, h.len() - 5));
    assert_eq!(v1_err("PROXY UNKNOWNX\r\n"), V1_PROTOCOL);
    assert_eq!(parse(b"PROXY UNKNOWNX"), Err(V1_PROTOCOL));
}

#[test]
fn v1_every_prefix_is_partial() {
    assert_every_prefix_partial(&v1("192.0.2.1:56324", "198.51.100.7:443"));
    assert_every_prefix_partial(&v1("[2001:db8::1]:1", "[::1]:65535"));
    assert_every_prefix_partial(b"PROXY UNKNOWN\r\n");
    assert_every_prefix_partial(b"PROXY UNKNOWN \x01\xff\r\r\n");
}

#[test]
fn v1_data_after_the_header_is_not_consumed() {
    let mut input = v1("192.0.2.1:1", "192.0.2.2:2");
    let len = input.len();
    input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let want = addrs("192.0.2.1:1", "192.0.2.2:2");
    assert_eq!(parse(&input), done(want, len));
}

#[test]
fn v1_bad_spaces_are_refused() {
    for line in [
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        assert!(parse(line.as_bytes()).is_err(), "{line:?}");
    }
}

#[test]
fn v1_ports_are_plain_decimal_without_leading_zeros() {
    for port in [
        "01", "00", "080", "65536", "99999", "+1", "-1", "1a", "123456", "",
    ] {
        let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 2\r\n");
        assert!(parse(line.as_bytes()).is_err(), "{port:?}");
    }
    let line = "PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n";
    assert_eq!(
        parse(line.as_bytes()),
        done(addrs("1.2.3.4:0", "5.6.7.8:65535"), line.len())
    );
}

#[test]
fn v1_addresses_must_match_the_protocol() {
    for line in [
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP6 ::1 2001:db8:::1 1 2\r\n",
        "PROXY TCP6 [::1] ::1 1 2\r\n",
        "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    ] {
        assert!(parse(line.as_bytes()).is_err(), "{line:?}");
    }
}

#[test]
fn v1_unknown_protocols_fail_at_the_first_wrong_byte() {
    assert_eq!(parse(b"PROXY X"), Err(V1_PROTOCOL));
    assert_eq!(parse(b"PROXY TCP5"), Err(V1_PROTOCOL));
    assert_eq!(
        parse(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        Err(V1_PROTOCOL)
    );
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4 GET"), Err(V1_BAD_BYTE));
}

#[test]
fn v1_line_must_end_with_crlf_within_107_bytes() {
    assert_eq!(v1_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), V1_BARE_LF);
    assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n").is_err());
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(106, b'x');
    assert_eq!(parse(&long), Ok(Parsed::Partial));
    long.push(b'x');
    assert_eq!(parse(&long), Err(V1_NO_CRLF));
    long.truncate(105);
    long.extend_from_slice(b"\r\n");
    assert_eq!(parse(&long), done(Proxied::Local, 107));
    long.insert(20, b'x');
    assert_eq!(parse(&long), Err(V1_NO_CRLF));
}

#[test]
fn v1_overlong_tcp_line_is_refused() {
    let line = format!("PROXY TCP6 {} ::1 1 2\r\n", "0:".repeat(48) + "1");
    assert!(line.len() > 107);
    assert_eq!(parse(line.as_bytes()), Err(V1_NO_CRLF));
}

// --- v2 ---

#[test]
fn v2_ipv4_matches_the_spec_layout_and_parses_back() {
    let h = v2("192.0.2.1:56324", "198.51.100.7:443");
    let mut want = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A".to_vec();
    want.extend_from_slice(b"\x21\x11\x00\x0c");
    want.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x01, 0xbb]);
    assert_eq!(h, want);
    let want = addrs("192.0.2.1:56324", "198.51.100.7:443");
    assert_eq!(parse(&h), done(want, 28));
}

#[test]
fn v2_ipv6_matches_the_spec_layout_and_parses_back() {
    let h = v2("[2001:db8::1]:1", "[::1]:65535");
    assert_eq!(h.len(), 52);
    assert_eq!(
        &h[..12],
        b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
    );
    assert_eq!(&h[12..16], b"\x21\x21\x00\x24");
    assert_eq!(&h[16..18], b"\x20\x01");
    assert_eq!(&h[48..], b"\x00\x01\xff\xff");
    let want = addrs("[2001:db8::1]:1", "[::1]:65535");
    assert_eq!(parse(&h), done(want, 52));
}

#[test]
fn v2_mixed_families_map_the_ipv4_address_to_ipv6() {
    let h = v2("192.0.2.1:80", "[2001:db8::2]:443");
    assert_eq!(h[13], TCP6);
    let want = addrs("[::ffff:192.0.2.1]:80", "[2001:db8::2]:443");
    assert_eq!(parse(&h), done(want, 52));
}

#[test]
fn v2_local_is_written_as_the_spec_says_and_means_the_real_peer() {
    let mut h = Vec::new();
    write_v2_local(&mut h);
    let want = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x20\x00\x00\x00";
    assert_eq!(h, want);
    assert_eq!(parse(&h), done(Proxied::Local, 16));
}

#[test]
fn v2_local_skips_whatever_it_carries() {
    let h = v2_raw(0x20, 0x11, &[1, 2, 3]);
    assert_eq!(parse(&h), done(Proxied::Local, 19));
    let h = v2_raw(0x20, 0xff, &[0; 40]);
    assert_eq!(parse(&h), done(Proxied::Local, 56));
}

#[test]
fn v2_every_prefix_is_partial() {
    assert_every_prefix_partial(&v2("192.0.2.1:56324", "198.51.100.7:443"));
    assert_every_prefix_partial(&v2("[2001:db8::1]:1", "[::1]:65535"));
    assert_every_prefix_partial(&v2_raw(0x21, 0x11, &[7; 40]));
    let mut local = Vec::new();
    write_v2_local(&mut local);
    assert_every_prefix_partial(&local);
}

#[test]
fn v2_data_after_the_header_is_not_consumed() {
    let mut input = v2("192.0.2.1:1", "192.0.2.2:2");
    input.extend_from_slice(b"\x16\x03\x01 TLS hello");
    let want = addrs("192.0.2.1:1", "192.0.2.2:2");
    assert_eq!(parse(&input), done(want, 28));
}

#[test]
fn v2_tlvs_after_the_addresses_are_skipped() {
    let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 80, 1, 0];
    // PP2_TYPE_AUTHORITY "a.example", then PP2_TYPE_NOOP with 3 bytes.
    payload.extend_from_slice(b"\x02\x00\x09a.example\x04\x00\x03\x00\x00\x00");
    let mut input = v2_raw(0x21, 0x11, &payload);
    let len = input.len();
    input.extend_from_slice(b"GET");
    assert_eq!(
        parse(&input),
        done(addrs("10.0.0.1:80", "10.0.0.2:256"), len)
    );
}

#[test]
fn v2_wrong_version_is_refused() {
    for ver_cmd in [0x01, 0x11, 0x31, 0xf1] {
        let h = v2_raw(ver_cmd, 0x11, &[0; 12]);
        assert_eq!(parse(&h), Err(V2_VERSION), "{ver_cmd:#x}");
        assert_eq!(parse(&h[..13]), Err(V2_VERSION), "{ver_cmd:#x}");
    }
}

#[test]
fn v2_unknown_command_is_refused() {
    for ver_cmd in [0x22, 0x2f] {
        let h = v2_raw(ver_cmd, 0x11, &[0; 12]);
        assert_eq!(parse(&h), Err(V2_COMMAND), "{ver_cmd:#x}");
    }
}

#[test]
fn v2_families_we_do_not_carry_mean_the_real_peer() {
    for family in [0x00, 0x12, 0x22, 0x31, 0x32] {
        let h = v2_raw(0x21, family, &[0; 216]);
        assert_eq!(parse(&h), done(Proxied::Local, 232), "{family:#x}");
    }
    assert_eq!(parse(&v2_raw(0x21, 0x00, &[])), done(Proxied::Local, 16));
}

#[test]
fn v2_unknown_families_are_refused() {
    for family in [0x01, 0x10, 0x13, 0x20, 0x30, 0x41, 0xff] {
        let h = v2_raw(0x21, family, &[0; 36]);
        assert_eq!(parse(&h), Err(V2_FAMILY), "{family:#x}");
        assert_eq!(parse(&h[..14]), Err(V2_FAMILY), "{family:#x}");
    }
}

#[test]
fn v2_length_too_short_for_the_addresses_is_refused() {
    assert_eq!(parse(&v2_raw(0x21, 0x11, &[0; 11])), Err(V2_TOO_SHORT));
    assert_eq!(parse(&v2_raw(0x21, 0x21, &[0; 35])), Err(V2_TOO_SHORT));
    assert_eq!(
        parse(&v2_raw(0x21, 0x21, &[0; 12])[..16]),
        Err(V2_TOO_SHORT)
    );
}

#[test]
fn v2_length_is_capped() {
    let at_cap = v2_raw(0x21, 0x11, &[0; V2_MAX_PAYLOAD]);
    assert_eq!(at_cap.len(), MAX_LEN);
    assert!(matches!(
        parse(&at_cap),
        Ok(Parsed::Done { len: MAX_LEN, .. })
    ));
    let over = v2_raw(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]);
    assert_eq!(parse(&over), Err(V2_TOO_LONG));
    assert_eq!(parse(&over[..16]), Err(V2_TOO_LONG));
    let local_over = v2_raw(0x20, 0x00, &[0; 0xffff]);
    assert_eq!(parse(&local_over[..16]), Err(V2_TOO_LONG));
}

// --- detection ---

#[test]
fn anything_else_is_refused_at_the_first_wrong_byte() {
    assert_eq!(parse(b""), Ok(Parsed::Partial));
    assert_eq!(parse(b"G"), Err(NOT_PROXY));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(NOT_PROXY));
    assert_eq!(parse(b"\x16\x03\x01"), Err(NOT_PROXY));
    assert_eq!(parse(b"PROX"), Ok(Parsed::Partial));
    assert_eq!(parse(b"PROXX"), Err(NOT_PROXY));
    assert_eq!(parse(b"PROXY"), Ok(Parsed::Partial));
    assert_eq!(parse(b"proxy "), Err(NOT_PROXY));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQU"), Ok(Parsed::Partial));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQX"), Err(NOT_PROXY));
    assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Partial));
    assert_eq!(parse(b"\r\n\r\nGET"), Err(NOT_PROXY));
}

#[test]
fn error_displays_its_reason() {
    assert_eq!(NOT_PROXY.to_string(), "not a PROXY protocol header");
}

fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

/// What parsing a written header gives back: mixed families come back as IPv6.
fn expected(src: SocketAddr, dst: SocketAddr) -> Proxied {
    let (src, dst) = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => (src, dst),
        _ => (
            SocketAddr::new(IpAddr::V6(to_ipv6(src.ip())), src.port()),
            SocketAddr::new(IpAddr::V6(to_ipv6(dst.ip())), dst.port()),
        ),
    };
    Proxied::Addrs { src, dst }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn written_headers_parse_back(src in any_socket_addr(), dst in any_socket_addr()) {
        let want = expected(src, dst);
        let mut h = Vec::new();
        write_v1(&mut h, src, dst);
        prop_assert!(h.len() <= V1_MAX_LEN);
        prop_assert_eq!(parse(&h), done(want, h.len()));
        h.clear();
        write_v2(&mut h, src, dst);
        prop_assert_eq!(parse(&h), done(want, h.len()));
    }

    #[test]
    fn arbitrary_input_never_panics_and_len_is_within_input(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(any::<u8>(), 0..120)
                .prop_map(|tail| [V1_PREFIX, &tail].concat()),
            proptest::collection::vec(any::<u8>(), 0..600)
                .prop_map(|tail| [&V2_SIGNATURE[..], &tail].concat()),
        ]
    ) {
        if let Ok(Parsed::Done { len, .. }) = parse(&input) {
            prop_assert!(len <= input.len() && len <= MAX_LEN);
        }
    }
}
