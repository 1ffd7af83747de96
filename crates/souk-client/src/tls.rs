//! TLS for servers reached by `https://` or `wss://`.
//!
//! A client trusts what its machine trusts: the system's certificate store, or the file
//! `SSL_CERT_FILE` names, which is where a self-hosted deployment's own CA goes. The
//! public web's roots are trusted besides, so a machine without a certificate store still
//! reaches a server with a public certificate.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

/// The TLS settings every connection of this process uses, read once.
pub fn config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!("reading the machine's CA certificates: {error}");
            }
            roots.add_parsable_certificates(native.certs);
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // Named rather than left to rustls: the server links two crypto providers,
            // and rustls refuses to pick one by itself.
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}
