//! `QueueService` keeps the settings it was built with (the facade and
//! the relay read them back to size their own queue services).

use std::sync::Arc;
use std::time::Duration;

use echorelay_core::clock::SystemClock;
use echorelay_core::queue::{QueueConfig, QueueService};
use echorelay_store_mem::MemQueue;

#[test]
fn the_service_keeps_the_config_it_was_given() {
    let config = QueueConfig {
        max_payload: 1024,
        default_max_attempts: 3,
        poll: Duration::from_millis(250),
        ..QueueConfig::default()
    };
    let s = QueueService::with_config(MemQueue::new(), Arc::new(SystemClock), config).unwrap();
    assert_eq!(*s.config(), config);
    let d = QueueService::new(MemQueue::new(), Arc::new(SystemClock));
    assert_eq!(*d.config(), QueueConfig::default());
}
