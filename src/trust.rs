//! The certificates keyway trusts when it is the TLS client: identity providers, JWKS and
//! `https://` upstreams without a `tls.ca` of their own verify against the system's CA store,
//! read once (`SSL_CERT_FILE` / `SSL_CERT_DIR` point elsewhere).

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

/// The system's CA certificates. Ones that cannot be read are skipped (and logged); with none at
/// all, every verification fails naming why.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "a CA certificate of the system store could not be read");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(ignored, "CA certificates of the system store were not usable");
            }
            if added == 0 {
                tracing::warn!(
                    "no CA certificate found (install ca-certificates, or set SSL_CERT_FILE): https:// providers, JWKS and upstreams cannot be verified"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// A client configuration that verifies servers against `roots` (ring is the one provider built
/// in, so it is the default).
pub fn client_config(roots: Arc<RootCertStore>) -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}
