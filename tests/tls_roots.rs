//! The executable trusts the system's certificate store as well as the
//! roots built into it. In an E2B sandbox, `model_key: inject` is applied by
//! an egress proxy that opens the model's HTTPS with a certificate of the
//! platform's own CA, which the sandbox's store holds (and `SSL_CERT_FILE`
//! can name): a loop that trusted only its built-in roots could not reach
//! the model there. Here a model served over HTTPS, with a certificate of a
//! CA made for the test, is reached only when `SSL_CERT_FILE` names that CA.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::*;
use crate::fake_model::{FakeModel, REPLY};

const KEY_ENV: &str = "TLS_ROOTS_MODEL_KEY";
const MODEL_KEY: &str = "sk-ant-tls-roots-7c1d";

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate it signed for `localhost`
/// (`leaf.pem`, key `leaf.key`), in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=agentform test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &request);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// HTTPS in front of `plain` (`host:port`) with `dir`'s leaf certificate;
/// the port, and the runtime that serves it.
fn https_front(dir: &Path, plain: String) -> (u16, tokio::runtime::Runtime) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let port = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, plain) = (acceptor.clone(), plain.clone());
                tokio::spawn(async move {
                    // A refused handshake is what the untrusting case expects.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&plain).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                });
            }
        });
        port
    });
    (port, runtime)
}

fn manifest(port: u16) -> String {
    format!(
        "version: 1
name: tls-roots
providers:
  local:
    models:
      claude-fake:
        backend: anthropic
        base_url: https://localhost:{port}
        api_key_env: {KEY_ENV}
environments:
  box:
    config: {{ type: cloud }}
agents:
  greeter:
    model: claude-fake
    system: You greet.
sessions:
  chat:
    agent: greeter
    environment: box
    steps:
      - send: Say hello, please.
        timeout: 60s
        expect:
          - contains: fake model
"
    )
}

#[test]
fn a_model_behind_a_ca_of_the_system_store_is_reached() {
    let certificates = tempfile::tempdir().unwrap();
    make_certificates(certificates.path());
    let model = FakeModel::start(MODEL_KEY);
    let plain = model.url.trim_start_matches("http://").to_string();
    let (port, _front) = https_front(certificates.path(), plain);
    let t = Test::new().env(KEY_ENV, MODEL_KEY);
    t.write("agentform.yaml", &manifest(port));
    t.run(&["apply", "--auto-approve"]).success();

    // The built-in roots alone do not know the test's CA.
    let untrusting = t
        .command(&["run"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&untrusting.stdout).into_owned()
        + &String::from_utf8_lossy(&untrusting.stderr)
        + &transcripts(&t);
    assert_eq!(untrusting.status.code(), Some(1), "{refused}");
    assert!(refused.contains("certificate"), "{refused}");
    assert!(model.answered().is_empty(), "{:?}", model.answered());

    // With the CA in the store the model answers.
    let ca = certificates.path().join("ca.pem");
    let trusting = t
        .command(&["run"])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&trusting.stdout).into_owned()
        + &String::from_utf8_lossy(&trusting.stderr);
    assert_eq!(trusting.status.code(), Some(0), "{said}");
    assert_eq!(model.answered(), [true]);
    assert!(transcripts(&t).contains(REPLY), "{}", transcripts(&t));
}
