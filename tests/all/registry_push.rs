//! The whole path with the real thing: Debian's `docker-registry` notifies
//! the gateway of a `skopeo` push, and real receivers get signed webhooks.

use std::time::Duration;

use callisto_tests::oci::{ImageLayout, RegistryClient, skopeo_push};
use callisto_tests::receiver::Receiver;
use callisto_tests::registry::Registry;
use serde_json::json;

use crate::delivery::{repository, verify_standard};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_skopeo_push_reaches_receivers_signed_once_and_deletes_follow() {
    let gw = crate::gateway().await;
    let registry = Registry::builder()
        .notify(&format!("{}/ingest/distribution", gw.url), &gw.ingest_token)
        .start()
        .await
        .expect("docker-registry starts (is the docker-registry package installed?)");
    let (a, off, tagged) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    repository(
        &gw,
        json!([
            {"url": a.url("/a"), "secret": SECRET},
            {"url": off.url("/off"), "enabled": false},
            {"url": tagged.url("/tagged"), "config": {"tags": "v*"}},
        ]),
    )
    .await;

    // v1: one image.pushed, with the registry's view of it.
    let one = ImageLayout::new("one").unwrap();
    skopeo_push(&one, &registry.host(), "demo/app", "v1", None)
        .await
        .unwrap_or_else(|e| panic!("skopeo push: {e}\nregistry log:\n{}", registry.log()));
    let got = a.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["type"], "image.pushed");
    assert_eq!(body["repository"]["name"], "demo/app");
    assert_eq!(body["repository"]["registry"], registry.host());
    assert_eq!(body["tag"], "v1");
    assert_eq!(body["digest"], one.manifest_digest());
    assert_eq!(
        body["media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(body["previous_digest"].is_null());
    verify_standard(&got[0], SECRET);
    tagged.wait_for(1, WAIT).await;
    // Blob pushes made no events: exactly one webhook per receiver.
    a.wait_quiet(Duration::from_millis(700)).await;
    assert_eq!(a.requests().len(), 1);

    // latest: the v* webhook does not want it.
    skopeo_push(&one, &registry.host(), "demo/app", "latest", None)
        .await
        .unwrap();
    let got = a.wait_for(2, WAIT).await;
    assert_eq!(got[1].json()["tag"], "latest");
    tagged.wait_quiet(Duration::from_millis(700)).await;
    assert_eq!(tagged.requests().len(), 1);

    // v1 again with another image: previous_digest says what it was.
    let two = ImageLayout::new("two").unwrap();
    skopeo_push(&two, &registry.host(), "demo/app", "v1", None)
        .await
        .unwrap();
    let got = a.wait_for(3, WAIT).await;
    let body = got[2].json();
    assert_eq!(body["digest"], two.manifest_digest());
    assert_eq!(body["previous_digest"], one.manifest_digest());

    // Deleting the v1 manifest: the registry says "manifest deleted" and then
    // "tag v1 deleted"; receivers hear of it once, with the digest.
    RegistryClient::new(&registry.host(), None)
        .delete_manifest("demo/app", &two.manifest_digest())
        .await
        .unwrap();
    let got = a.wait_for(4, WAIT).await;
    let body = got[3].json();
    assert_eq!(body["type"], "image.deleted");
    assert_eq!(body["tag"], "v1");
    assert_eq!(body["digest"], two.manifest_digest());
    a.wait_quiet(Duration::from_secs(1)).await;
    assert_eq!(a.requests().len(), 4, "a deletion was announced twice");
    assert!(off.requests().is_empty());
    let ids: std::collections::HashSet<_> = a
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4);
}
