//! The in-memory queue runs the whole queue suite: one test per check,
//! each on a fresh queue.

echorelay_testkit::queue_tests!(async { echorelay_store_mem::MemQueue::new() });
