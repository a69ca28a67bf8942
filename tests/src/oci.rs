//! Making OCI images and pushing them into a registry.
//!
//! Callisto reacts to what a registry says happened, so the end-to-end tests
//! need real pushes. Two ways are offered:
//!
//! * [`skopeo_push`] copies an [`ImageLayout`] with the real `skopeo` binary,
//!   the way a user would. It costs a process and about a tenth of a second
//!   per push.
//! * [`RegistryClient`] speaks the distribution API directly, for tests that
//!   push many tags: once the blobs are in a repository, each further tag is a
//!   single `PUT` of the manifest.
//!
//! Images are tiny and deterministic: the same `variant` always gives the same
//! digests, and different variants give different ones. So re-pushing a tag
//! with another variant is an "image changed" event, and re-pushing the same
//! variant is a no-op as far as content goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index (multi-platform image).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The `org.opencontainers.image.ref.name` under which every layout names its
/// one image (`oci:<dir>:latest` for skopeo).
pub const REF_NAME: &str = "latest";

/// How long one `skopeo copy` may take before the test is failed rather than
/// left hanging.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);

/// One content-addressed blob: its bytes, digest and media type.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// The OCI descriptor that points at this blob.
    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }

    /// The blob's digest without its `sha256:` prefix, as used in file names.
    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// A minimal valid OCI image layout on disk (`oci-layout`, `index.json`,
/// `blobs/sha256/...`) holding one single-layer image, named [`REF_NAME`].
///
/// The layer is a gzip'ed tar of one file, `/callisto-variant`, whose content
/// includes the variant; nothing else varies (no timestamps), so the digests
/// are a function of the variant alone. The directory is removed on drop.
pub struct ImageLayout {
    dir: tempfile::TempDir,
    config: Blob,
    layer: Blob,
    manifest: Blob,
}

impl ImageLayout {
    /// Builds the layout for `variant` in a new temporary directory.
    pub fn new(variant: &str) -> anyhow::Result<Self> {
        let tar = layer_tar(variant)?;
        let diff_id = sha256_digest(&tar);
        let layer = Blob::new(OCI_LAYER_GZIP, gzip(&tar)?);
        let config = Blob::new(OCI_CONFIG, image_config(&diff_id, variant));
        let manifest = Blob::new(OCI_MANIFEST, image_manifest(&config, &layer));

        let dir = tempfile::Builder::new().prefix("callisto-oci-").tempdir()?;
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for blob in [&config, &layer, &manifest] {
            std::fs::write(blobs.join(blob.hex()), &blob.bytes)?;
        }
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        std::fs::write(dir.path().join("index.json"), image_index(&manifest))?;

        Ok(ImageLayout {
            dir,
            config,
            layer,
            manifest,
        })
    }

    /// The layout's directory (what `oci:<dir>:<ref>` names).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The image's name inside the layout: [`REF_NAME`].
    pub fn ref_name(&self) -> &str {
        REF_NAME
    }

    /// `sha256:...` of the manifest: what a registry reports once the image
    /// is pushed, whichever way it was pushed.
    pub fn manifest_digest(&self) -> String {
        self.manifest.digest.clone()
    }

    /// The manifest's bytes, exactly as pushed.
    pub fn manifest(&self) -> &[u8] {
        &self.manifest.bytes
    }

    /// The blobs the manifest refers to: the config, then the layer.
    pub fn blobs(&self) -> [&Blob; 2] {
        [&self.config, &self.layer]
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A tar holding one file whose content names the variant. The header's
/// mtime, owner and mode are fixed so the bytes depend on the variant only.
fn layer_tar(variant: &str) -> anyhow::Result<Vec<u8>> {
    let content = format!("callisto test image, variant {variant}\n");
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, "callisto-variant", content.as_bytes())?;
    Ok(builder.into_inner()?)
}

/// gzip with a zero mtime in its header, so it is deterministic too.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn image_config(diff_id: &str, variant: &str) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "dev.callisto.test.variant": variant } },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    serde_json::to_vec(&config).expect("a JSON value serialises")
}

fn image_manifest(config: &Blob, layer: &Blob) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    serde_json::to_vec(&manifest).expect("a JSON value serialises")
}

fn image_index(manifest: &Blob) -> Vec<u8> {
    let mut descriptor = manifest.descriptor();
    descriptor["annotations"] =
        serde_json::json!({ "org.opencontainers.image.ref.name": REF_NAME });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor],
    });
    serde_json::to_vec(&index).expect("a JSON value serialises")
}

/// Copies `layout` to `docker://<registry_host>/<repo>:<tag>` with skopeo, as
/// a user would, over plain HTTP.
///
/// Runs `skopeo --insecure-policy copy --quiet --dest-tls-verify=false
/// (--dest-creds u:p | --dest-no-creds) oci:<dir>:latest docker://...`.
/// `--insecure-policy` keeps the host's `/etc/containers/policy.json` out of
/// the test; `--dest-no-creds` keeps any `auth.json` of the machine out of
/// anonymous pushes. skopeo keeps the OCI manifest as it is, so the pushed
/// digest is [`ImageLayout::manifest_digest`]. On failure the error carries
/// skopeo's stderr.
pub async fn skopeo_push(
    layout: &ImageLayout,
    registry_host: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("skopeo");
    command.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    match creds {
        Some((user, password)) => command.arg(format!("--dest-creds={user}:{password}")),
        None => command.arg("--dest-no-creds"),
    };
    command
        .arg(format!(
            "oci:{}:{}",
            layout.path().display(),
            layout.ref_name()
        ))
        .arg(format!("docker://{registry_host}/{repo}:{tag}"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);

    let output = tokio::time::timeout(SKOPEO_TIMEOUT, command.output())
        .await
        .with_context(|| {
            format!("skopeo copy to {registry_host}/{repo}:{tag} took over {SKOPEO_TIMEOUT:?}")
        })?
        .context("run skopeo (is the skopeo package installed?)")?;
    if !output.status.success() {
        bail!(
            "skopeo copy to {registry_host}/{repo}:{tag} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// An HTTP client for plain `http://` on loopback.
///
/// The workspace builds reqwest with `rustls-no-provider`, and such a reqwest
/// panics when it builds a client while no rustls crypto provider is
/// installed. Rather than install a process-wide default (which the gateway
/// may want to do itself), the client gets its own ring-backed TLS config; it
/// is never used, since the tests speak only plain HTTP to 127.0.0.1.
///
/// Proxies from the environment are ignored, and idle connections are not
/// kept: a registry or receiver that a test restarts would otherwise leave
/// dead connections in the pool.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(unused_tls_config())
        .no_proxy()
        .user_agent("callisto-tests")
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build a reqwest client")
}

fn unused_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// A small client of the distribution API (`/v2/...`) of one registry, with
/// HTTP Basic auth when credentials are given (what `auth.htpasswd` wants:
/// no token dance).
pub struct RegistryClient {
    base: String,
    creds: Option<(String, String)>,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client of the registry at `registry_host` (`127.0.0.1:PORT`).
    pub fn new(registry_host: &str, creds: Option<(&str, &str)>) -> Self {
        RegistryClient {
            base: format!("http://{registry_host}"),
            creds: creds.map(|(user, password)| (user.to_owned(), password.to_owned())),
            http: http_client(),
        }
    }

    /// Pushes the whole image (blobs that are missing, then the manifest)
    /// under `repo:tag`, and returns the digest the registry gives it.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layout: &ImageLayout,
    ) -> anyhow::Result<String> {
        for blob in layout.blobs() {
            self.push_blob(repo, blob).await?;
        }
        self.put_manifest(repo, tag, layout).await
    }

    /// Uploads one blob monolithically (`POST` an upload, `PUT` its bytes
    /// with the digest), unless `HEAD` says the repository has it already.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        if self.blob_exists(repo, &blob.digest).await? {
            return Ok(());
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let response = self.send(self.http.post(url)).await?;
        let response = expect_status(response, 202, "start a blob upload").await?;
        let location = header(&response, "location").context("an upload without Location")?;

        let url = self.upload_url(&location, &blob.digest);
        let request = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone());
        let response = self.send(request).await?;
        expect_status(response, 201, "finish a blob upload").await?;
        Ok(())
    }

    /// Whether the repository holds a blob.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let response = self.send(self.http.head(url)).await?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => bail!("HEAD blob {digest} in {repo}: unexpected status {status}"),
        }
    }

    /// `PUT`s the layout's manifest under `repo:tag`, assuming its blobs are
    /// in the repository already (one request per tag), and returns the
    /// digest from `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        layout: &ImageLayout,
    ) -> anyhow::Result<String> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let request = self
            .http
            .put(url)
            .header("content-type", OCI_MANIFEST)
            .body(layout.manifest().to_vec());
        let response = self.send(request).await?;
        let response = expect_status(response, 201, &format!("put manifest {repo}:{tag}")).await?;
        header(&response, "docker-content-digest")
            .context("a manifest PUT without Docker-Content-Digest")
    }

    /// The digest `repo:reference` resolves to, or `None` when the registry
    /// does not know it.
    ///
    /// `reference` is a tag or a digest. The `Accept` header matters:
    /// without one that lists the OCI types, Distribution 2.8 answers 404
    /// for an OCI manifest, by tag and by digest alike.
    pub async fn digest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<String>> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let response = self
            .send(self.http.head(url).header("accept", accept))
            .await?;
        match response.status().as_u16() {
            200 => Ok(header(&response, "docker-content-digest")),
            404 => Ok(None),
            status => bail!("HEAD manifest {repo}:{reference}: unexpected status {status}"),
        }
    }

    /// Deletes the manifest `digest` from `repo` (the registry must run with
    /// `storage.delete.enabled`, as [`crate::registry::Registry`] does).
    /// Distribution also drops every tag that pointed at it.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base);
        let response = self.send(self.http.delete(url)).await?;
        expect_status(response, 202, &format!("delete manifest {repo}@{digest}")).await?;
        Ok(())
    }

    /// The repository's tags, sorted; empty when the repository does not
    /// exist or has no tags left. (Distribution 2.8 lists them in directory
    /// order, not sorted.)
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/v2/{repo}/tags/list", self.base);
        let response = self.send(self.http.get(url)).await?;
        if response.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        let response = expect_status(response, 200, &format!("list the tags of {repo}")).await?;
        let body: serde_json::Value = response.json().await?;
        let tags = body["tags"].as_array().cloned().unwrap_or_default();
        let mut tags: Vec<String> = tags
            .iter()
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Sends a request with the client's credentials, if any.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let request = match &self.creds {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        Ok(request.send().await?)
    }

    /// The URL that finishes an upload: the registry's `Location` (absolute
    /// in Distribution 2.8, relative in some other registries, and already
    /// carrying a `_state` query) plus the blob's digest.
    fn upload_url(&self, location: &str, digest: &str) -> String {
        let url = if location.starts_with("http://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}digest={digest}")
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    let value = response.headers().get(name)?;
    Some(value.to_str().ok()?.to_owned())
}

/// Passes the response on if it has the expected status, else fails with the
/// registry's error body (which names the distribution error code).
async fn expect_status(
    response: reqwest::Response,
    expected: u16,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    let status = response.status().as_u16();
    if status == expected {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!(
        "{what}: expected status {expected}, got {status}: {}",
        body.trim()
    )
}

/// An OCI layout whose one image ([`REF_NAME`]) is bigger than
/// [`ImageLayout`]'s: several layers, or an index over several platforms.
/// Deterministic like it: the same arguments give the same digests.
pub struct RichLayout {
    dir: tempfile::TempDir,
    /// The manifest or index that [`REF_NAME`] names.
    pub top: Blob,
    /// An index's platform manifests (empty for a single image).
    pub platforms: Vec<Blob>,
}

impl RichLayout {
    /// One image with `layers` layers.
    pub fn multi_layer(variant: &str, layers: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("callisto-oci-").tempdir()?;
        let top = write_image(dir.path(), variant, layers, "amd64")?;
        finish_layout(dir.path(), &top)?;
        Ok(Self {
            dir,
            top,
            platforms: Vec::new(),
        })
    }

    /// An OCI index over one two-layer image per architecture.
    pub fn multi_arch(variant: &str, architectures: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("callisto-oci-").tempdir()?;
        let mut platforms = Vec::new();
        let mut descriptors = Vec::new();
        for arch in architectures {
            let manifest = write_image(dir.path(), &format!("{variant}-{arch}"), 2, arch)?;
            let mut d = manifest.descriptor();
            d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            descriptors.push(d);
            platforms.push(manifest);
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        });
        let top = Blob::new(OCI_INDEX, serde_json::to_vec(&index)?);
        std::fs::write(dir.path().join("blobs/sha256").join(top.hex()), &top.bytes)?;
        finish_layout(dir.path(), &top)?;
        Ok(Self {
            dir,
            top,
            platforms,
        })
    }

    /// `oci:<dir>:latest`, for skopeo.
    pub fn reference(&self) -> String {
        format!("oci:{}:{REF_NAME}", self.dir.path().display())
    }
}

/// Writes the blobs of one image into `dir` and returns its manifest.
fn write_image(dir: &Path, variant: &str, layers: usize, arch: &str) -> anyhow::Result<Blob> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut layer_blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let tar = layer_tar(&format!("{variant} layer {i}"))?;
        diff_ids.push(sha256_digest(&tar));
        layer_blobs.push(Blob::new(OCI_LAYER_GZIP, gzip(&tar)?));
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Labels": { "dev.callisto.test.variant": variant } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&config)?);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest)?);
    for blob in layer_blobs.iter().chain([&config, &manifest]) {
        std::fs::write(blobs.join(blob.hex()), &blob.bytes)?;
    }
    Ok(manifest)
}

fn finish_layout(dir: &Path, top: &Blob) -> anyhow::Result<()> {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), image_index(top))?;
    Ok(())
}

/// Runs `skopeo --insecure-policy <args>` (over plain HTTP: callers pass
/// `--dest-tls-verify=false` / `--src-tls-verify=false` as needed), failing
/// with skopeo's stderr.
pub async fn skopeo(args: &[&str]) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("skopeo");
    command
        .arg("--insecure-policy")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SKOPEO_TIMEOUT, command.output())
        .await
        .with_context(|| format!("skopeo {args:?} took over {SKOPEO_TIMEOUT:?}"))?
        .context("run skopeo (is the skopeo package installed?)")?;
    if !output.status.success() {
        bail!(
            "skopeo {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
