//! `upstreams.<name>.tls` of an `https://` upstream: the CAs its certificate must chain to and
//! the name it must carry, read once per load (a reload re-reads the CA file).

use std::sync::Arc;

use http::uri::Authority;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_saphyr::Location;

use super::Diagnostics;
use crate::config::file::UpstreamTlsFile;
use crate::pipeline::upstream::connect::UpstreamTls;

/// `path` is the diagnostics path of the settings (`upstreams.<name>.tls`).
pub fn compile(
    file: Option<&UpstreamTlsFile>,
    authority: &Authority,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<UpstreamTls> {
    let roots = match file.and_then(|f| f.ca.as_ref()) {
        Some(ca) => Arc::new(roots_from(&ca.0, at, path, d)?),
        None => crate::trust::system_roots(),
    };
    // The url's host, without an IPv6 literal's brackets; an IP is checked against the
    // certificate's IP addresses.
    let name = match file.and_then(|f| f.server_name.as_ref()) {
        Some(n) => n.0.clone(),
        None => authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let server_name = match ServerName::try_from(name.clone()) {
        Ok(n) => n,
        Err(_) => {
            d.error(
                Some(at),
                format!("{path}.server_name"),
                format!("{name:?} is not a DNS name or an IP address"),
            );
            return None;
        }
    };
    Some(UpstreamTls::new(
        crate::trust::client_config(roots),
        server_name,
    ))
}

fn roots_from(ca: &str, at: &Location, path: &str, d: &mut Diagnostics) -> Option<RootCertStore> {
    let file = crate::config::interpolate::resolve_path(ca);
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(&file).and_then(|it| it.collect());
    let certs = match certs {
        Ok(c) => c,
        Err(e) => {
            d.error(
                Some(at),
                format!("{path}.ca"),
                format!("cannot read {}: {e}", file.display()),
            );
            return None;
        }
    };
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        d.error(
            Some(at),
            format!("{path}.ca"),
            format!("{} holds no usable CA certificate", file.display()),
        );
        return None;
    }
    Some(roots)
}
