//! Fuzzes the API key parser: it must never panic, must accept only keys of
//! the documented shape, and anything it accepts must re-parse identically.
#![no_main]

use echorelay_core::keys::{KEY_LEN, PlaintextKey, parse_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = parse_key(s) {
        assert_eq!(s.len(), KEY_LEN);
        assert!(s.starts_with(env.prefix()));
        assert!(s[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let k = PlaintextKey::parse(s).expect("accepted key must re-parse");
        assert_eq!(k.environment(), env);
        assert!(!format!("{k:?}").contains(&s[8..40]), "Debug leaked the key");
    }
});
