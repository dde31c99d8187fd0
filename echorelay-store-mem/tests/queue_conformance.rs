//! The in-memory queue runs the whole queue suite: one test per check,
//! each on a fresh queue.

echorelay_testkit::queue_tests!(async { echorelay_store_mem::MemQueue::new() });

/// The same suite through `Arc<dyn Queue>`, as the facade holds its queue
/// (`EchoRelay::queue`): every method of `impl Queue for Arc<T>` forwards,
/// and a forward that answered for itself fails here.
mod behind_an_arc {
    echorelay_testkit::queue_tests!(async {
        std::sync::Arc::new(echorelay_store_mem::MemQueue::new())
            as std::sync::Arc<dyn echorelay_core::queue::Queue>
    });
}
