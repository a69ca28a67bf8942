//! TLS both ways, with a CA and certificates made by the test: HTTPS
//! receivers verified against the configured CA bundle, and the gateway's
//! own listener serving HTTPS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::repository;

pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A CA, and a certificate it signed for `localhost`.
pub(crate) fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Callisto test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An HTTPS receiver on loopback that answers 200 and counts.
async fn https_receiver(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    use hyper_util::rt::TokioIo;
    let certs: Vec<_> = rustls_pemfile_certs(&pki.cert_pem);
    let key = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap()
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, count)
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

async fn test_result(gw: &callisto::test_util::TestGateway, url: &str) -> Value {
    let repos: Value = gw
        .api(Method::GET, "/repositories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = repos[0]["id"].as_str().unwrap();
    gw.api(Method::POST, &format!("/repositories/{id}/webhooks/test"))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_configured_ca() {
    let pki = pki();
    let (port, count) = https_receiver(&pki).await;
    let url = format!("https://localhost:{port}/hook");

    // Without the CA: an unknown issuer is an error, and nothing is sent.
    let gw = crate::gateway().await;
    repository(&gw, json!([])).await;
    let result = test_result(&gw, &url).await;
    assert_eq!(result["result"], "error", "{result}");
    let summary = result["summary"].as_str().unwrap().to_lowercase();
    assert!(
        summary.contains("certificate") || summary.contains("issuer"),
        "{summary}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // With it: verified, sent.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &pki.ca_pem).unwrap();
    let gw = crate::gateway_with(|c| c.delivery.ca_bundle = Some(bundle.clone())).await;
    repository(&gw, json!([])).await;
    let result = test_result(&gw, &url).await;
    assert_eq!(result["summary"], "Success (200)", "{result}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_gateway_serves_https_with_its_configured_certificate() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let gw = crate::gateway_with(|c| {
        c.tls = Some(callisto::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let port = gw.url.rsplit(':').next().unwrap().to_owned();

    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let repos = client
        .get(format!("https://localhost:{port}/api/v1/repositories"))
        .bearer_auth(&gw.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(repos.status(), StatusCode::OK);
    // Served over TLS, the console's session cookie is sent over TLS only.
    let signed_in = client
        .post(format!("https://localhost:{port}/console/session"))
        .json(&serde_json::json!({"token": gw.admin_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Plain HTTP gets no answer from a TLS listener; an untrusting client
    // refuses the certificate.
    assert!(
        gw.http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    let untrusting = callisto_tests::http();
    assert!(
        untrusting
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
}
