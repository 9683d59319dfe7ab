//! HTTPS on the listener (SPEC §14), against the binary: the seed request
//! over TLS is stored; plain HTTP and TLS 1.1 get no answer; metrics on a
//! plain address of their own; SIGHUP serves
//! a new certificate to new connections while an open keep-alive
//! connection goes on, and a bad new pair keeps the old one; a bad file
//! stops start-up with a sentence naming it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::helpers::{PASSWORD, certs, database_with_channel, free_port, spawn_serve, wait_until};

/// A CA and two server certificates for 127.0.0.1 it signed (`a`, `b`),
/// made with the openssl command in a directory of their own.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = std::env::temp_dir().join(format!("koostatus-https-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        certs::make_ca(&dir, "ca");
        for name in ["a", "b"] {
            let subject = format!("/CN=server {name}");
            certs::make_signed(&dir, name, &subject, "ca", "subjectAltName=IP:127.0.0.1");
        }
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The served pair: `cert.pem` and `key.pem`, copied from `name`.
    fn serve(&self, name: &str) {
        std::fs::copy(self.path(&format!("{name}.pem")), self.path("cert.pem")).unwrap();
        std::fs::copy(self.path(&format!("{name}.key")), self.path("key.pem")).unwrap();
    }

    fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.path(&format!("{name}.pem")))
            .unwrap()
            .to_vec()
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap())
            .unwrap();
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(certs: &Certificates, port: u16) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into());
    certs.connector().connect(name, tcp).await.unwrap()
}

fn peer_certificate(stream: &Tls) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One request on a keep-alive connection; the status code.
async fn request(stream: &mut Tls, method: &str, path: &str, headers: &str, body: &str) -> u16 {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            if answer.len() >= end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

const SEED: &str = r#"{ "sender": "86173xxxx4526", "user_number": "86187xxxx5632", "message_id": "044852ee407b40ec88ea65adb73ff5c27", "status": "read" }"#;

fn seed_headers() -> String {
    format!("content-type: application/json; charset=utf-8\r\nauthorization: {PASSWORD}\r\n")
}

fn tls_env(certs: &Certificates) -> [(String, String); 3] {
    [
        (
            "KOOSTATUS_TLS__CERT_FILE".into(),
            certs.path("cert.pem").display().to_string(),
        ),
        (
            "KOOSTATUS_TLS__KEY_FILE".into(),
            certs.path("key.pem").display().to_string(),
        ),
        ("KOOSTATUS_LOG__FILTER".into(), "info".into()),
    ]
}

async fn wait_tls_ready(certs: &Certificates, port: u16) {
    wait_until("the HTTPS listener", Duration::from_secs(20), || async {
        let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
            return false;
        };
        let name = ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into());
        let Ok(mut tls) = certs.connector().connect(name, tcp).await else {
            return false;
        };
        request(&mut tls, "GET", "/readyz", "", "").await == 200
    })
    .await;
}

#[tokio::test]
async fn the_seed_request_over_https_is_stored_and_plain_http_or_tls_1_1_get_no_answer() {
    let certs = Certificates::make();
    certs.serve("a");
    let db = database_with_channel("ch", PASSWORD).await;
    let port = free_port();
    let metrics_listen = format!("127.0.0.1:{}", free_port());
    let env = tls_env(&certs);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("KOOSTATUS_METRICS__LISTEN", &metrics_listen));
    let _server = spawn_serve(&db.url(), port, &env, Stdio::null());
    wait_tls_ready(&certs, port).await;

    // Prometheus scrapes plain HTTP on metrics.listen, which serves the
    // operations routes only.
    let client = reqwest::Client::new();
    let scrape = client
        .get(format!("http://{metrics_listen}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape
            .text()
            .await
            .unwrap()
            .contains("koostatus_database_up 1")
    );
    let api = client
        .get(format!("http://{metrics_listen}/api/v1/channels"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);

    let mut tls = connect(&certs, port).await;
    let path = "/social/on/whatsapp/koomessage/report/ch";
    assert_eq!(
        request(&mut tls, "POST", path, &seed_headers(), SEED).await,
        200
    );
    let pool = db.pool().await;
    let status: String = sqlx::query_scalar(
        "select status::text from messages where message_id = '044852ee407b40ec88ea65adb73ff5c27'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "read");

    // Plain HTTP on the TLS port: closed, never an HTTP answer (no 5xx).
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}").as_bytes(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 5"),
        "{got:?}"
    );

    // A client that offers TLS 1.1 only (openssl, its own floor lowered so
    // that it can offer it) gets no session; TLS 1.2 does.
    let s_client = |version: &str| {
        let mut child = Command::new("openssl")
            .args(["s_client", version, "-cipher", "DEFAULT@SECLEVEL=0"])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", certs.path("ca.pem").to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tls12 = s_client("-tls1_2");
    assert!(
        tls12.contains("Server certificate") && !tls12.contains("Cipher is (NONE)"),
        "TLS 1.2 got no session: {tls12}"
    );
    let tls11 = s_client("-tls1_1");
    assert!(
        tls11.contains("Cipher is (NONE)") && !tls11.contains("Server certificate"),
        "TLS 1.1 got a session: {tls11}"
    );
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_a_bad_pair_keeps_the_old() {
    let certs = Certificates::make();
    certs.serve("a");
    let db = database_with_channel("ch", PASSWORD).await;
    let port = free_port();
    let env = tls_env(&certs);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = certs.path("serve.log");
    let server = spawn_serve(&db.url(), port, &env, std::fs::File::create(&log).unwrap());
    let pid = server.0.as_ref().unwrap().id().to_string();
    wait_tls_ready(&certs, port).await;
    let hangup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };

    let mut open = connect(&certs, port).await;
    assert_eq!(peer_certificate(&open), certs.der("a"));
    assert_eq!(request(&mut open, "GET", "/healthz", "", "").await, 200);

    certs.serve("b");
    hangup();
    wait_until("the new certificate", Duration::from_secs(10), || async {
        peer_certificate(&connect(&certs, port).await) == certs.der("b")
    })
    .await;
    // The connection opened before goes on, with what it negotiated.
    assert_eq!(request(&mut open, "GET", "/healthz", "", "").await, 200);
    assert_eq!(peer_certificate(&open), certs.der("a"));

    // A key that does not load: the previous pair stays, and the log says why.
    std::fs::write(certs.path("key.pem"), "not a key\n").unwrap();
    hangup();
    wait_until(
        "the refusal in the log",
        Duration::from_secs(10),
        || async {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("kept the previous TLS certificate and key")
        },
    )
    .await;
    let mut fresh = connect(&certs, port).await;
    assert_eq!(peer_certificate(&fresh), certs.der("b"));
    assert_eq!(
        request(
            &mut fresh,
            "POST",
            "/social/on/whatsapp/koomessage/report/ch",
            &seed_headers(),
            SEED
        )
        .await,
        200
    );
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("key.pem"),
        "the log names the file"
    );
}

#[tokio::test]
async fn a_certificate_file_that_does_not_load_stops_start_up_with_a_sentence() {
    let certs = Certificates::make();
    let db = database_with_channel("ch", PASSWORD).await;
    std::fs::write(certs.path("cert.pem"), "not a certificate\n").unwrap();
    std::fs::copy(certs.path("a.key"), certs.path("key.pem")).unwrap();
    let env = tls_env(&certs);
    let out = Command::new(env!("CARGO_BIN_EXE_koostatus"))
        .args([
            "--database-url",
            &db.url(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cert.pem") && stderr.contains("tls.cert_file"),
        "{stderr}"
    );
    // Only one of the two: a sentence before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_koostatus"))
        .args([
            "--database-url",
            &db.url(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("KOOSTATUS_TLS__CERT_FILE", certs.path("a.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("go together"), "{stderr}");
}
