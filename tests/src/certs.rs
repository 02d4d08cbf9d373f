//! Certificates made for one test run: a private CA, and server and client certificates it
//! signs, written as PEM files the server and the clients read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A private certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate, as a PEM file.
    pub cert_file: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    /// The certificate chain (leaf only).
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
}

impl TestCa {
    /// A fresh CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("lockserver test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let cert_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("writing the CA");
        TestCa { cert, key, cert_file }
    }

    /// A server certificate for `localhost` and 127.0.0.1, written as `dir/<name>.pem` and
    /// `dir/<name>-key.pem`.
    pub fn server(&self, dir: &Path, name: &str) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server parameters");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, dir, name)
    }

    /// A client certificate (for mutual TLS), written like [`TestCa::server`]'s.
    pub fn client(&self, dir: &Path, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, dir, name)
    }

    fn issue(&self, mut params: CertificateParams, dir: &Path, name: &str) -> Issued {
        params.distinguished_name.push(DnType::OrganizationName, "lockserver tests");
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        let issued = Issued {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("writing a key");
        issued
    }
}
