//! Fuzzes the `X-Forwarded-For` parser (`parse_forwarded_for`): the input
//! is the header's lines, separated by `\n` (a header value cannot hold
//! one), read behind proxies in 10.0.0.0/8 and 2001:db8::/32. It must
//! never panic, and what it answers must agree with each entry read on
//! its own:
//!
//! * an accepted client is an entry, every entry right of it is a trusted
//!   address, and it is trusted itself only if every entry is;
//! * `Malformed` only if some entry alone is not an address;
//! * the lines joined into one line with commas answer the same.
#![no_main]

use std::net::IpAddr;

use echorelay_http::client::{UnknownClient, parse_forwarded_for};
use libfuzzer_sys::fuzz_target;

fn trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] == 10,
        IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0x0db8],
    }
}

/// One entry on its own: its address, or `None` if it is not one.
fn alone(entry: &str) -> Option<IpAddr> {
    parse_forwarded_for(&[entry], |_| false).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let got = parse_forwarded_for(&lines, trusted);
    let entries: Vec<&str> = lines.iter().flat_map(|l| l.split(',')).collect();
    match got {
        Ok(ip) => {
            assert_eq!(ip, ip.to_canonical(), "not canonical");
            let (k, _) = entries
                .iter()
                .enumerate()
                .rev()
                .find(|(_, e)| alone(e).is_none_or(|a| !trusted(a)))
                .unwrap_or((0, &""));
            assert_eq!(alone(entries[k]), Some(ip), "not the rightmost untrusted entry");
            if trusted(ip) {
                assert!(
                    entries.iter().all(|e| alone(e).is_some_and(trusted)),
                    "a trusted client while an entry is not trusted"
                );
            }
        }
        Err(UnknownClient::Malformed) => {
            assert!(entries.iter().any(|e| alone(e).is_none()), "no entry is malformed");
        }
        Err(UnknownClient::Missing) => assert!(lines.is_empty(), "Missing with lines"),
        Err(e) => panic!("a parser of text answered {e:?}"),
    }
    let joined = lines.join(",");
    if !lines.is_empty() {
        assert_eq!(parse_forwarded_for(&[joined.as_str()], trusted), got, "lines vs commas");
    }
});
