//! TLS termination with rustls, for an origin behind a CDN in "Full
//! (Strict)" mode or one facing clients directly: [`config_from_pem`]
//! makes the rustls configuration, and [`server::serve`](crate::server::serve)
//! (or its wrapper [`serve_tls`]) accepts TCP, completes the handshake
//! within a timeout, and serves each connection with the router, marking
//! its requests as TLS ([`TlsConnection`](crate::client::TlsConnection))
//! and giving them the peer's address.

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::{ServeOptions, ServerLimits, serve};

/// Why a TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain or key file could not be read or parsed.
    #[error("cannot read the {what} PEM file")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// A server configuration (TLS 1.2 and 1.3, rustls' safe defaults, ALPN
/// `http/1.1`) from a PEM certificate chain and a PEM private key.
///
/// # Errors
/// [`TlsError`] for an unreadable file or a key that does not match.
pub fn config_from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem {
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::Pem {
        what: "private key",
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until the future is dropped, with
/// the default [`ServerLimits`]: a thin
/// wrapper of [`server::serve`](crate::server::serve), which serves plain
/// HTTP too and takes limits and a shutdown future. A failed handshake
/// closes that connection only; a failed accept is retried.
///
/// # Errors
/// None in practice: the default limits are valid, and accept errors are
/// logged and retried, never returned.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    config: Arc<ServerConfig>,
) -> std::io::Result<()> {
    let options = ServeOptions {
        tls: Some(config),
        limits: ServerLimits::default(),
    };
    serve(listener, app, options, std::future::pending())
        .await
        .map_err(std::io::Error::other)
}
