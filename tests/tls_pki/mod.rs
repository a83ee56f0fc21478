//! Certificates for the TLS tests, made with rcgen: a CA with its own name and leaves signed
//! by it, authority key identifier set, so strict X.509 checkers (OpenSSL, Python 3.13)
//! accept them.
#![allow(dead_code)] // each test file uses the part it needs

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use socketserver::tls;

/// The files of one test's PKI, in a temp dir: `ca.pem` (the CA clients trust),
/// `server.pem`/`server.key` (CN `first`, for `localhost` and 127.0.0.1),
/// `second.pem`/`second.key` (CN `second`, same names, same CA: for reloads),
/// `client.pem`/`client.key` (a client certificate from the CA), and an unrelated CA
/// `other_ca.pem` with its own client `other_client.pem`/`.key`.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "socketserver tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf signed by `ca`: (certificate PEM, key PEM).
fn new_leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("tls").tempdir().unwrap();
        let pki = Pki { dir };
        let ca = new_ca("socketserver test CA");
        let other = new_ca("some other CA");
        pki.write("ca.pem", &ca.pem());
        pki.write("other_ca.pem", &other.pem());
        let files = [
            ("server", &ca, "first", ExtendedKeyUsagePurpose::ServerAuth),
            ("second", &ca, "second", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", &ca, "client", ExtendedKeyUsagePurpose::ClientAuth),
            (
                "other_client",
                &other,
                "intruder",
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ];
        for (name, issuer, cn, usage) in files {
            let (cert, key) = new_leaf(issuer, cn, usage);
            pki.write(&format!("{name}.pem"), &cert);
            pki.write(&format!("{name}.key"), &key);
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    pub fn copy(&self, from: &str, to: &str) {
        std::fs::copy(self.path(from), self.path(to)).unwrap();
    }

    /// A server config presenting `server.pem` (optionally requiring client certificates
    /// from the CA file `client_ca`), and its resolver, for reloads.
    pub fn config(
        &self,
        client_ca: Option<&str>,
    ) -> (tls::rustls::ServerConfig, Arc<tls::ReloadableCert>) {
        let cert =
            tls::ReloadableCert::from_pem_files(self.path("server.pem"), self.path("server.key"))
                .unwrap();
        let ca = client_ca.map(|c| self.path(c));
        let config = tls::server_config(cert.clone(), ca.as_deref()).unwrap();
        (config, cert)
    }
}
