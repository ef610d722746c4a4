//! Test certificates: a private CA and a server certificate for 127.0.0.1, made with the
//! openssl command-line tool.

use std::path::Path;
use std::process::Command;

use crate::run;

/// Makes a test CA (`dir/ca.crt`) and a server certificate for 127.0.0.1 signed by it, with
/// the openssl command-line tool.
pub fn make_tls_certs(dir: &Path, cert: &Path, key: &Path) {
    let ca = dir.join("ca.crt");
    let cakey = dir.join("ca.key");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=leader-election test CA", "-keyout"])
        .arg(&cakey)
        .arg("-out")
        .arg(&ca));
    let csr = dir.join("server.csr");
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&cakey)
        .args(["-CAcreateserial", "-out"])
        .arg(cert)
        .arg("-extfile")
        .arg(&ext));
    run(Command::new("chmod").arg("600").arg(key));
}
