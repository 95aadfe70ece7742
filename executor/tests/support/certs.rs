//! Test certificates (rcgen): a CA and leaves signed by it, written as PEM files. Shared by the
//! executor's and the driver's tests (`#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd};

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The three files a binary takes: --tls-cert, --tls-key, --tls-ca.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn args(&self) -> Vec<String> {
        let s = |p: &Path| p.to_str().unwrap().to_string();
        vec!["--tls-cert".into(), s(&self.cert), "--tls-key".into(), s(&self.key), "--tls-ca".into(), s(&self.ca)]
    }

    pub fn security(&self, server_name: Option<&str>) -> canopy_runtime::security::Security {
        canopy_runtime::security::Security {
            tls: Some(canopy_runtime::security::TlsFiles {
                cert: self.cert.clone(),
                key: self.key.clone(),
                ca: self.ca.clone(),
                server_name: server_name.map(str::to_string),
            }),
            ..Default::default()
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf for `names` (DNS names or IPs) usable as server and client, written under `dir`
    /// as `<stem>.crt`/`<stem>.key`, with this CA as `<stem>-ca.crt`.
    pub fn leaf(&self, dir: &Path, stem: &str, names: &[&str], expired: bool) -> TlsFiles {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: dir.join(format!("{stem}-ca.crt")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, self.issuer.pem()).unwrap();
        files
    }
}
