//! The process's one verifying TLS setup, shared by the CoinGecko client and the database
//! connections that verify the chain and the host name: OpenSSL's loading of the system's CA
//! bundle was most of a cold start, and each `native_tls::TlsConnector` built loads it again.

use std::sync::OnceLock;

/// The Amazon RDS global CA bundle (all regions), as AWS publishes it at
/// https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem. Built in because
/// Amazon Linux's system store lacks these roots; refresh it when AWS rotates its CAs.
const RDS_ROOTS: &[u8] = include_bytes!("store/rds-global-bundle.pem");

/// A TLS setup that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("setting up TLS: {0}")]
pub struct TlsError(pub String);

/// Trusts the system's roots and the built-in RDS roots; verifies the chain and the host name.
/// Built on first use; the clones share OpenSSL's context, and with it the loaded roots.
pub fn verifying() -> Result<native_tls::TlsConnector, TlsError> {
    static SHARED: OnceLock<native_tls::TlsConnector> = OnceLock::new();
    if let Some(connector) = SHARED.get() {
        return Ok(connector.clone());
    }
    let mut builder = native_tls::TlsConnector::builder();
    for root in rds_roots()? {
        builder.add_root_certificate(root);
    }
    let connector = builder.build().map_err(|e| TlsError(e.to_string()))?;
    Ok(SHARED.get_or_init(|| connector).clone())
}

/// The certificates of the built-in RDS bundle.
pub fn rds_roots() -> Result<Vec<native_tls::Certificate>, TlsError> {
    roots("the built-in RDS bundle", RDS_ROOTS)
}

/// Every certificate of a PEM bundle; `source` names it in errors.
pub fn roots(source: &str, bundle: &[u8]) -> Result<Vec<native_tls::Certificate>, TlsError> {
    let certificates =
        pem::parse_many(bundle).map_err(|e| TlsError(format!("{source}: not PEM ({e})")))?;
    if certificates.is_empty() {
        return Err(TlsError(format!("{source}: no certificate in the file")));
    }
    certificates
        .iter()
        .map(|certificate| {
            native_tls::Certificate::from_der(certificate.contents())
                .map_err(|e| TlsError(format!("{source}: {e}")))
        })
        .collect()
}
