//! Fuzzes the queue's lease token parser: it must never panic, and any
//! text it accepts must display as exactly that text (the form is
//! canonical: lowercase hex, no leading zero) and parse again to the same
//! token.
#![no_main]

use echorelay_core::queue::{LeaseToken, MAX_ATTEMPTS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = s.parse::<LeaseToken>() {
        assert_eq!(token.to_string(), s, "an accepted token re-displays differently");
        assert!((1..=MAX_ATTEMPTS).contains(&token.attempt()));
        assert_eq!(s.parse::<LeaseToken>(), Ok(token));
        assert!(s.contains(&token.job().to_string()["job_".len()..]));
    }
});
