//! TLS set-up shared by every transport (tonic, kube, reqwest): one rustls
//! crypto provider, ring, installed once per process.

/// Installs ring as the process-wide rustls provider; safe to call repeatedly.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
