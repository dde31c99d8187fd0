//! The optional verification cache (being written).
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::PgError;

/// Key cache settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyCacheConfig {}

/// The key cache.
#[derive(Debug)]
pub struct KeyCache {}

impl KeyCache {
    pub(crate) async fn start(
        _pool: PgPool,
        _connect: PgConnectOptions,
        _config: KeyCacheConfig,
    ) -> Result<Arc<KeyCache>, PgError> {
        Ok(Arc::new(KeyCache {}))
    }
}
