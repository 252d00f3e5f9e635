//! Certificates for the tests' TLS peers, made with the openssl command
//! line as an operator would: a private CA, and certificates it signs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An EC P-256 key, without a passphrase.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let made = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line is needed to make test certificates");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A private CA in `dir` (`ca.pem`, `ca-key.pem`), valid for two days.
pub struct TestCa {
    dir: PathBuf,
}

/// What a certificate is for.
pub enum Usage {
    /// A server of `localhost` and 127.0.0.1.
    Server,
    /// A client.
    Client,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> Self {
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &NEW_KEY[..],
                &["-days", "2", "-subj", &subject],
                &["-keyout", "ca-key.pem", "-out", "ca.pem"],
            ]
            .concat(),
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The CA's certificate (PEM).
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate the CA signed for `usage`, as `<file>.pem` and
    /// `<file>-key.pem`; returns both paths.
    pub fn issue(&self, file: &str, common_name: &str, usage: Usage) -> (PathBuf, PathBuf) {
        let (key, csr, ext, pem) = (
            format!("{file}-key.pem"),
            format!("{file}.csr"),
            format!("{file}.ext"),
            format!("{file}.pem"),
        );
        let subject = format!("/CN={common_name}");
        openssl(
            &self.dir,
            &[
                &["req"][..],
                &NEW_KEY[..],
                &["-subj", &subject, "-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        let extensions = match usage {
            Usage::Server => {
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            }
            Usage::Client => "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        };
        std::fs::write(self.dir.join(&ext), extensions).unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
        (self.dir.join(pem), self.dir.join(key))
    }
}
