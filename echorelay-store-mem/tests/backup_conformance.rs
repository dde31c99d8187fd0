//! The in-memory backup target runs the whole backup target suite: one
//! test per check, each on a fresh target.

echorelay_testkit::backup_target_tests!(async { echorelay_store_mem::MemBackupTarget::new() });
