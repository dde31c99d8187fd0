//! Fuzzes the logical snapshot reader (`backup::snapshot::parse`,
//! docs/FORMATS.md §5.6): it must never panic; anything it accepts writes
//! back (`to_bytes`) to a snapshot that parses to the same data.
#![no_main]

use echorelay_core::backup::snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = snapshot::parse(data, &[]) {
        let again = snapshot::to_bytes(&parsed, "fuzz", chrono::DateTime::UNIX_EPOCH);
        assert_eq!(snapshot::parse(&again, &[]).ok(), Some(parsed));
    }
});
