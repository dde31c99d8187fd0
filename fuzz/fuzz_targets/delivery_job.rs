//! Fuzzes the delivery job reader (`relay::DeliveryJob::decode`, the
//! payload of docs/FORMATS.md Part 7, read back from a queue backend):
//! it must never panic; anything it accepts encodes back to exactly the
//! input's header and body and decodes to the same job.
#![no_main]

use echorelay_core::relay::DeliveryJob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(job) = DeliveryJob::decode(data) {
        let again = job.encode();
        assert_eq!(DeliveryJob::decode(&again).ok(), Some(job.clone()));
        assert!(data.ends_with(&job.body));
    }
});
