//! The in-memory backend runs the whole conformance suite: one test per
//! check, each on a fresh store.

echorelay_testkit::conformance_tests!(async { echorelay_store_mem::MemStore::new() });
