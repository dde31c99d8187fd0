//! The `forwarded_for` fuzz target's seeds (fuzz/corpus/forwarded_for,
//! made by scripts/fuzz_seeds.py, which checks them against its own
//! reading of the format) reach the parser's accept path and each way it
//! refuses, read as the target reads them (lines split at `\n`, proxies in
//! 10.0.0.0/8 and 2001:db8::/32). A seed set that stops doing so fails
//! here, not silently in a fuzz run.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;

use echorelay_http::client::{UnknownClient, parse_forwarded_for};

fn trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] == 10,
        IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0x0db8],
    }
}

#[test]
fn forwarded_for_seeds_reach_accept_and_every_refusal() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/forwarded_for");
    let (mut accepted, mut trusted_only, mut malformed, mut missing) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let lines: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').collect()
        };
        match parse_forwarded_for(&lines, trusted) {
            Ok(ip) if name.starts_with("seed-client-") => {
                assert!(!trusted(ip), "{name}: {ip}");
                accepted += 1;
            }
            Ok(ip) if name.starts_with("seed-all-trusted") => {
                assert!(trusted(ip), "{name}: {ip}");
                trusted_only += 1;
            }
            Err(UnknownClient::Malformed) if name.starts_with("seed-bad-") => malformed += 1,
            Err(UnknownClient::Missing) if name.starts_with("seed-missing-") => missing += 1,
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(accepted >= 10, "only {accepted} accepted seeds");
    assert!(trusted_only >= 2 && malformed >= 10 && missing >= 1);
}
