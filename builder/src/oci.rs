//! `cargo unikernel push` and `pull`: images as OCI artifacts
//! (docs/deploy.md).
//!
//! An image becomes an OCI image manifest whose one layer (a tar) holds
//! the image at `unikernel/NAME` and a `urunc.json`; the annotations (on
//! the manifest, and as labels in the image config) name the platform,
//! memory, command line, build id and toolchain version, with the
//! `com.urunc.unikernel.*` keys urunc reads. The image's debug files go
//! into a second manifest, tagged `debug-<build id>`. Everything is
//! reproducible: the tar has fixed metadata, the JSON has sorted keys, so
//! two pushes of the same image give the same digests.
//!
//! Destinations: `oci:DIR[:TAG]` (an OCI image layout directory) or a
//! registry reference `HOST[:PORT]/REPO[:TAG]` (plain HTTP for loopback
//! hosts or with `--insecure`; credentials from `~/.docker/config.json`).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::messages::hex;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{
    ConfigBuilder, DescriptorBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    RootFsBuilder,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::image::Image;

/// The layer: a tar of `unikernel/NAME` and `urunc.json`.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The same gzipped (what tools that recompress layers write); pulled too.
pub const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The debug artifact's type, and its layers' (ELF files with DWARF).
pub const DEBUG_ARTIFACT_TYPE: &str = "application/vnd.cargo-unikernel.debug.v1";
pub const DEBUG_LAYER_MEDIA_TYPE: &str = "application/vnd.cargo-unikernel.debug.elf";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const TITLE: &str = "org.opencontainers.image.title";
/// Our own annotations.
pub const ANNOT_NAME: &str = "dev.cargo-unikernel.name";
pub const ANNOT_PLATFORM: &str = "dev.cargo-unikernel.platform";
pub const ANNOT_MEMORY: &str = "dev.cargo-unikernel.memory";
pub const ANNOT_BUILD_ID: &str = "dev.cargo-unikernel.build-id";
pub const ANNOT_TOOLCHAIN: &str = "dev.cargo-unikernel.toolchain-version";
pub const ANNOT_COMPONENTS: &str = "dev.cargo-unikernel.components";

/// A blob and its digest (`sha256:HEX`).
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&data),
            data,
        }
    }
}

/// One manifest with the blobs it names (config first).
#[derive(Clone, Debug)]
pub struct Artifact {
    pub manifest: Blob,
    pub blobs: Vec<Blob>,
    /// The tag it goes under.
    pub tag: String,
}

/// What `push` sends: the image, and its debug files if it has any.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub image: Artifact,
    pub debug: Option<Artifact>,
    pub annotations: BTreeMap<String, String>,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// JSON with sorted keys (serde_json's map is a BTreeMap): the same
/// struct always gives the same bytes, whatever order a HashMap had.
fn canonical<T: serde::Serialize>(v: &T) -> anyhow::Result<Vec<u8>> {
    let v: Value = serde_json::to_value(v)?;
    Ok(serde_json::to_vec(&v)?)
}

fn oci_err(e: oci_spec::OciSpecError) -> anyhow::Error {
    anyhow::anyhow!("building the OCI manifest: {e}")
}

/// A tar entry with fixed metadata (reproducible).
fn tar_append(
    t: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    t.append(&h, data)?;
    Ok(())
}

/// The annotations of an image (urunc's keys and ours).
pub fn annotations(img: &Image) -> BTreeMap<String, String> {
    use unikernel_image::manifest::Platform;
    let m = &img.manifest;
    let hypervisor = match m.platform {
        Platform::Kvm => "qemu",
        Platform::Xen => "xen",
        Platform::Hvt => "unikernel-hvt",
    };
    // The image's own default arguments (empty: keep the defaults, none).
    let cmdline = if m.args.is_empty() {
        String::new()
    } else {
        crate::cmdline::CommandLine {
            args: Some(m.args.clone()),
            ..Default::default()
        }
        .encode()
    };
    let version = env!("CARGO_PKG_VERSION");
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_string(), v);
    };
    put("com.urunc.unikernel.unikernelType", "linux".into());
    put("com.urunc.unikernel.hypervisor", hypervisor.into());
    put(
        "com.urunc.unikernel.binary",
        format!("/unikernel/{}", m.name),
    );
    put("com.urunc.unikernel.cmdline", cmdline);
    put("com.urunc.unikernel.mountRootfs", "false".into());
    put("com.urunc.unikernel.unikernelVersion", version.into());
    put(ANNOT_NAME, m.name.clone());
    put(ANNOT_PLATFORM, m.platform.name().into());
    put(ANNOT_MEMORY, m.memory.to_string());
    put(ANNOT_BUILD_ID, hex(&m.build_id));
    put(ANNOT_TOOLCHAIN, version.into());
    put(ANNOT_COMPONENTS, m.components.join(","));
    put(TITLE, m.name.clone());
    a
}

/// Builds the artifacts of the image file at `path` (its debug files are
/// `PATH.app.debug` and `PATH.kernel.debug`, when present).
pub fn build(path: &Path, tag: &str) -> anyhow::Result<Artifacts> {
    let data = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the image {}: {e}", path.display()))?;
    let img = Image::parse(&data)
        .map_err(|e| anyhow::anyhow!("{} is not a unikernel image ({e:?})", path.display()))?;
    let annots = annotations(&img);
    let name = img.manifest.name.clone();
    if name.is_empty() || name.contains('/') {
        anyhow::bail!("the image's name {name:?} cannot be a file name");
    }

    let mut t = tar::Builder::new(Vec::new());
    tar_append(&mut t, "unikernel/", &[], 0o755)?;
    tar_append(&mut t, &format!("unikernel/{name}"), &data, 0o755)?;
    let urunc = serde_json::to_vec_pretty(&annots)?;
    tar_append(&mut t, "urunc.json", &urunc, 0o644)?;
    let layer = Blob::new(t.into_inner()?);

    let hashmap = |m: &BTreeMap<String, String>| {
        m.clone()
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>()
    };
    let config = ImageConfigurationBuilder::default()
        .architecture("amd64")
        .os("linux")
        .config(
            ConfigBuilder::default()
                .labels(hashmap(&annots))
                .build()
                .map_err(oci_err)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.digest.clone()])
                .build()
                .map_err(oci_err)?,
        )
        .build()
        .map_err(oci_err)?;
    let config = Blob::new(canonical(&config)?);
    let descriptor = |media: MediaType, b: &Blob, annotations: Option<BTreeMap<String, String>>| {
        let mut d = DescriptorBuilder::default()
            .media_type(media)
            .digest(oci_spec::image::Digest::from_str(&b.digest).map_err(oci_err)?)
            .size(b.data.len() as u64);
        if let Some(a) = annotations {
            d = d.annotations(hashmap(&a));
        }
        d.build().map_err(oci_err)
    };
    let mut title = BTreeMap::new();
    title.insert(TITLE.to_string(), format!("unikernel/{name}"));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config, None)?)
        .layers(vec![descriptor(
            MediaType::Other(LAYER_MEDIA_TYPE.into()),
            &layer,
            Some(title),
        )?])
        .annotations(hashmap(&annots))
        .build()
        .map_err(oci_err)?;
    let image = Artifact {
        manifest: Blob::new(canonical(&manifest)?),
        blobs: vec![config, layer],
        tag: tag.to_string(),
    };

    // The debug files, keyed by build id.
    let build_id = hex(&img.manifest.build_id);
    let mut files = Vec::new();
    for which in ["app", "kernel"] {
        let p = crate::pipeline::debug_path(path, which);
        if let Ok(d) = std::fs::read(&p) {
            files.push((format!("{build_id}.{which}.debug"), Blob::new(d)));
        }
    }
    let debug = if files.is_empty() || build_id.is_empty() {
        None
    } else {
        let empty = Blob::new(b"{}".to_vec());
        let mut layers = Vec::new();
        for (n, b) in &files {
            let mut t = BTreeMap::new();
            t.insert(TITLE.to_string(), n.clone());
            layers.push(descriptor(
                MediaType::Other(DEBUG_LAYER_MEDIA_TYPE.into()),
                b,
                Some(t),
            )?);
        }
        let mut a = BTreeMap::new();
        a.insert(ANNOT_BUILD_ID.to_string(), build_id.clone());
        a.insert(ANNOT_NAME.to_string(), name.clone());
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(DEBUG_ARTIFACT_TYPE.into()))
            .config(descriptor(MediaType::EmptyJSON, &empty, None)?)
            .layers(layers)
            .annotations(hashmap(&a))
            .build()
            .map_err(oci_err)?;
        let mut blobs = vec![empty];
        blobs.extend(files.into_iter().map(|(_, b)| b));
        Some(Artifact {
            manifest: Blob::new(canonical(&m)?),
            blobs,
            tag: format!("debug-{build_id}"),
        })
    };
    Ok(Artifacts {
        image,
        debug,
        annotations: annots,
    })
}

/// Where `push` writes and `pull` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An OCI image layout directory and a tag in its index.
    Layout { dir: PathBuf, tag: String },
    /// A registry.
    Registry(Reference),
}

/// Parses `oci:DIR[:TAG]` or `HOST[:PORT]/REPO[:TAG|@DIGEST]`.
pub fn parse_location(s: &str) -> anyhow::Result<Location> {
    if let Some(rest) = s.strip_prefix("oci:") {
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !d.is_empty() && !t.is_empty() && !t.contains('/') => (d, t),
            _ => (rest, "latest"),
        };
        if dir.is_empty() {
            anyhow::bail!("{s:?}: an OCI layout destination is oci:DIR or oci:DIR:TAG");
        }
        if !valid_tag(tag) {
            anyhow::bail!(
                "{s:?}: {tag:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"
            );
        }
        return Ok(Location::Layout {
            dir: PathBuf::from(dir),
            tag: tag.to_string(),
        });
    }
    if !s.contains('/') {
        anyhow::bail!(
            "{s:?} is neither oci:DIR[:TAG] nor a registry reference HOST[:PORT]/REPO[:TAG]"
        );
    }
    Reference::from_str(s)
        .map(Location::Registry)
        .map_err(|e| anyhow::anyhow!("{s:?} is not a registry reference: {e}"))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

// ---- OCI image layouts ----

fn blob_path(dir: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow::anyhow!("unsupported digest {digest:?} (sha256 only)"))?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

fn write_blob(dir: &Path, b: &Blob) -> anyhow::Result<()> {
    let p = blob_path(dir, &b.digest)?;
    if std::fs::read(&p).is_ok_and(|d| sha256(&d) == b.digest) {
        return Ok(());
    }
    std::fs::create_dir_all(p.parent().unwrap())?;
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, &b.data)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

/// Writes the artifacts into the layout at `dir` (created if needed; an
/// existing index keeps its other tags).
pub fn write_layout(dir: &Path, arts: &[&Artifact]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let layout = dir.join("oci-layout");
    if let Ok(s) = std::fs::read_to_string(&layout) {
        let v: Value = serde_json::from_str(&s)
            .map_err(|e| anyhow::anyhow!("{}: not an OCI layout: {e}", layout.display()))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
            anyhow::bail!("{}: not an OCI image layout 1.0.0", layout.display());
        }
    }
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match std::fs::read_to_string(&index_path) {
        Ok(s) => {
            let v: Value = serde_json::from_str(&s)
                .map_err(|e| anyhow::anyhow!("{}: {e}", index_path.display()))?;
            v.get("manifests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
        Err(_) => Vec::new(),
    };
    for a in arts {
        for b in a.blobs.iter().chain([&a.manifest]) {
            write_blob(dir, b)?;
        }
        manifests.retain(|m| {
            m.pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(Value::as_str)
                != Some(a.tag.as_str())
        });
        manifests.push(serde_json::json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": a.manifest.digest,
            "size": a.manifest.data.len(),
            "annotations": { REF_NAME: a.tag },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Reads a blob of the layout and checks its digest.
fn read_layout_blob(dir: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let p = blob_path(dir, digest)?;
    let d = std::fs::read(&p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
    if sha256(&d) != digest {
        anyhow::bail!(
            "{}: content does not match its digest {digest}",
            p.display()
        );
    }
    Ok(d)
}

/// The manifest tagged `tag` in the layout at `dir`: (bytes, digest).
fn layout_manifest(dir: &Path, tag: &str) -> anyhow::Result<(Vec<u8>, String)> {
    let p = dir.join("index.json");
    let s = std::fs::read_to_string(&p)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e} (not an OCI layout?)", p.display()))?;
    let v: Value = serde_json::from_str(&s).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let entry = v
        .get("manifests")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter().find(|e| {
                e.pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(Value::as_str)
                    == Some(tag)
            })
        })
        .ok_or_else(|| anyhow::anyhow!("{} has no manifest tagged {tag:?}", dir.display()))?;
    let digest = entry
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("{}: an entry without a digest", p.display()))?
        .to_string();
    Ok((read_layout_blob(dir, &digest)?, digest))
}

// ---- registries ----

/// Credentials for `registry` from `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` (`auths.<registry>.auth`, base64 of
/// `user:password`); anonymous without one.
pub fn registry_auth(registry: &str) -> anyhow::Result<RegistryAuth> {
    let Some(path) = docker_config() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let Ok(s) = std::fs::read_to_string(&path) else {
        return Ok(RegistryAuth::Anonymous);
    };
    auth_from_config(&s, registry).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// oci-client's `e` from `doing`: says "`doing`: `e`" (as shown to the
/// user, the whole message), and keeps `e` below it in the chain for
/// [`explain_unauthorized`].
fn registry_err(doing: String, e: OciDistributionError) -> anyhow::Error {
    let msg = format!("{doing}: {e}");
    anyhow::Error::new(e).context(msg)
}

/// Whether oci-client's `e` is the registry refusing the request as
/// unauthorized: HTTP 401 (`UnauthorizedError`, or a `ServerError` with
/// that status where oci-client keeps the body) or an OCI error envelope
/// saying UNAUTHORIZED.
fn is_unauthorized(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => *code == 401,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| x.code == OciErrorCode::Unauthorized),
        _ => false,
    }
}

/// `e`, from talking to `registry` with `auth`, said more plainly when the
/// registry refused the request as unauthorized (see [`is_unauthorized`];
/// every oci-client error that reaches here comes through
/// [`registry_err`], so there is no text to match): whether credentials
/// were sent, and where they come from.
pub fn explain_unauthorized(
    e: anyhow::Error,
    registry: &str,
    auth: &RegistryAuth,
) -> anyhow::Error {
    let unauthorized = e
        .chain()
        .filter_map(|c| c.downcast_ref::<OciDistributionError>())
        .any(is_unauthorized);
    if !unauthorized {
        return e;
    }
    // The message as shown (registry_err's context holds the whole of it).
    let text = e.to_string();
    let config = docker_config().map_or_else(
        || "~/.docker/config.json".to_string(),
        |p| p.display().to_string(),
    );
    let why = match auth {
        RegistryAuth::Basic(user, _) => format!(
            "authentication failed: {registry} refused the credentials of user \"{user}\" from {config}"
        ),
        _ => format!(
            "authentication required: {registry} refused anonymous access, and {config} holds no credentials for it (auths.\"{registry}\".auth: base64 of user:password)"
        ),
    };
    anyhow::anyhow!("{why} ({text})")
}

/// See [`registry_auth`].
pub fn auth_from_config(config: &str, registry: &str) -> Result<RegistryAuth, String> {
    use base64::Engine as _;
    let v: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
    let Some(auths) = v.get("auths").and_then(Value::as_object) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.trim_end_matches('/') == registry || k.split('/').next() == Some(registry)
    });
    let Some(auth) = entry
        .and_then(|(_, e)| e.get("auth"))
        .and_then(Value::as_str)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("the auth of {registry} is not base64: {e}"))?;
    let raw = String::from_utf8(raw).map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
    let (user, pass) = raw
        .split_once(':')
        .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
    Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()))
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn client(reference: &Reference, insecure: bool) -> Client {
    // rustls needs a crypto provider chosen once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_string();
    let protocol = if insecure || is_loopback(&registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..Default::default()
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn with_tag(r: &Reference, tag: &str) -> Reference {
    Reference::with_tag(
        r.registry().to_string(),
        r.repository().to_string(),
        tag.to_string(),
    )
}

async fn push_artifact(c: &Client, r: &Reference, a: &Artifact) -> anyhow::Result<()> {
    for b in &a.blobs {
        c.push_blob(r, b.data.clone(), &b.digest)
            .await
            .map_err(|e| registry_err(format!("pushing blob {}", b.digest), e))?;
    }
    c.push_manifest_raw(
        r,
        a.manifest.data.clone(),
        http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
    )
    .await
    .map_err(|e| registry_err(format!("pushing the manifest {r}"), e))?;
    Ok(())
}

/// `cargo unikernel push IMAGE DEST`: returns the lines to print.
pub fn push(image: &Path, dest: &str, insecure: bool) -> anyhow::Result<Vec<String>> {
    let loc = parse_location(dest)?;
    let tag = match &loc {
        Location::Layout { tag, .. } => tag.clone(),
        Location::Registry(r) => r.tag().unwrap_or("latest").to_string(),
    };
    let arts = build(image, &tag)?;
    let size: usize = arts.image.blobs.iter().map(|b| b.data.len()).sum();
    eprintln!(
        "cargo-unikernel: pushing {} ({} bytes{}) to {dest}",
        image.display(),
        size,
        if arts.debug.is_some() {
            ", and its debug files"
        } else {
            ""
        }
    );
    let mut out = Vec::new();
    match &loc {
        Location::Layout { dir, .. } => {
            let mut list = vec![&arts.image];
            list.extend(arts.debug.as_ref());
            write_layout(dir, &list)?;
            out.push(format!("{} {}", arts.image.manifest.digest, dest));
            if let Some(d) = &arts.debug {
                out.push(format!(
                    "{} oci:{}:{}",
                    d.manifest.digest,
                    dir.display(),
                    d.tag
                ));
            }
        }
        Location::Registry(r) => {
            if r.digest().is_some() {
                anyhow::bail!("{dest}: push to a tag, not a digest");
            }
            let r = with_tag(r, &tag);
            let auth = registry_auth(r.resolve_registry())?;
            let c = client(&r, insecure);
            runtime()?
                .block_on(async {
                    c.auth(&r, &auth, RegistryOperation::Push)
                        .await
                        .map_err(|e| {
                            registry_err(format!("{}: authentication", r.resolve_registry()), e)
                        })?;
                    push_artifact(&c, &r, &arts.image).await?;
                    if let Some(d) = &arts.debug {
                        push_artifact(&c, &with_tag(&r, &d.tag), d).await?;
                    }
                    anyhow::Ok(())
                })
                .map_err(|e| explain_unauthorized(e, r.resolve_registry(), &auth))?;
            out.push(format!("{} {}", arts.image.manifest.digest, r.whole()));
            if let Some(d) = &arts.debug {
                out.push(format!(
                    "{} {}",
                    d.manifest.digest,
                    with_tag(&r, &d.tag).whole()
                ));
            }
        }
    }
    Ok(out)
}

/// A pulled image: its bytes and annotations.
pub struct Pulled {
    pub image: Vec<u8>,
    pub digest: String,
    pub annotations: BTreeMap<String, String>,
    /// (file name, bytes) of the debug artifact, when asked for and found.
    pub debug: Vec<(String, Vec<u8>)>,
}

fn manifest_layers(m: &Value) -> Vec<(String, String, Option<String>)> {
    m.get("layers")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| {
                    Some((
                        l.get("mediaType")?.as_str()?.to_string(),
                        l.get("digest")?.as_str()?.to_string(),
                        l.pointer("/annotations/org.opencontainers.image.title")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The image file in a layer tar: `unikernel/NAME`.
fn image_from_layer(layer: &[u8], name: &str) -> anyhow::Result<Vec<u8>> {
    let want = format!("unikernel/{name}");
    let mut t = tar::Archive::new(layer);
    for e in t.entries()? {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == want {
            let mut d = Vec::new();
            e.read_to_end(&mut d)?;
            return Ok(d);
        }
    }
    anyhow::bail!("the layer holds no {want}")
}

/// Fetches a blob by digest (checked).
type FetchBlob = Box<dyn Fn(&str) -> anyhow::Result<Vec<u8>>>;
/// Fetches a manifest by tag: (bytes, digest), checked.
type FetchManifest = Box<dyn Fn(&str) -> anyhow::Result<(Vec<u8>, String)>>;

/// `cargo unikernel pull REF`: the image (and with `debug`, its debug files).
pub fn pull(source: &str, debug: bool, insecure: bool) -> anyhow::Result<Pulled> {
    let loc = parse_location(source)?;
    // Fetches a manifest by tag and blobs by digest, checking digests.
    let (manifest, digest, fetch): (Vec<u8>, String, FetchBlob);
    let fetch_manifest: FetchManifest;
    match &loc {
        Location::Layout { dir, tag } => {
            let d1 = dir.clone();
            let d2 = dir.clone();
            (manifest, digest) = layout_manifest(dir, tag)?;
            fetch = Box::new(move |dg| read_layout_blob(&d1, dg));
            fetch_manifest = Box::new(move |t| layout_manifest(&d2, t));
        }
        Location::Registry(r) => {
            let auth = registry_auth(r.resolve_registry())?;
            let c = std::sync::Arc::new(client(r, insecure));
            let rt = std::sync::Arc::new(runtime()?);
            rt.block_on(c.auth(r, &auth, RegistryOperation::Pull))
                .map_err(|e| anyhow::anyhow!("{}: authentication: {e}", r.resolve_registry()))?;
            let get_manifest = {
                let (c, rt, r, auth) = (c.clone(), rt.clone(), r.clone(), auth.clone());
                move |tag: Option<&str>| -> anyhow::Result<(Vec<u8>, String)> {
                    let r = match tag {
                        Some(t) => with_tag(&r, t),
                        None => r.clone(),
                    };
                    let (b, d) = rt
                        .block_on(c.pull_manifest_raw(&r, &auth, &[MANIFEST_MEDIA_TYPE]))
                        .map_err(|e| {
                            registry_err(format!("pulling the manifest {}", r.whole()), e)
                        })?;
                    if sha256(&b) != d {
                        anyhow::bail!(
                            "the manifest of {} does not match its digest {d}",
                            r.whole()
                        );
                    }
                    Ok((b.to_vec(), d))
                }
            };
            (manifest, digest) = get_manifest(None)
                .map_err(|e| explain_unauthorized(e, r.resolve_registry(), &auth))?;
            let (c2, rt2, r2) = (c.clone(), rt.clone(), r.clone());
            fetch = Box::new(move |dg| {
                let desc = oci_client::manifest::OciDescriptor {
                    digest: dg.to_string(),
                    ..Default::default()
                };
                let mut out: Vec<u8> = Vec::new();
                rt2.block_on(c2.pull_blob(&r2, &desc, &mut out))
                    .map_err(|e| anyhow::anyhow!("pulling blob {dg}: {e}"))?;
                if sha256(&out) != dg {
                    anyhow::bail!("blob {dg} does not match its digest");
                }
                Ok(out)
            });
            fetch_manifest = Box::new(move |t| get_manifest(Some(t)));
        }
    }
    let m: Value = serde_json::from_slice(&manifest)
        .map_err(|e| anyhow::anyhow!("{source}: the manifest is not JSON: {e}"))?;
    let annotations: BTreeMap<String, String> = m
        .get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let name = annotations.get(ANNOT_NAME).cloned().ok_or_else(|| {
        anyhow::anyhow!("{source}: not a cargo-unikernel image (no {ANNOT_NAME} annotation)")
    })?;
    let layer = manifest_layers(&m)
        .into_iter()
        .find(|(mt, _, _)| mt == LAYER_MEDIA_TYPE || mt == LAYER_GZIP_MEDIA_TYPE)
        .ok_or_else(|| anyhow::anyhow!("{source}: no {LAYER_MEDIA_TYPE} layer"))?;
    let mut tar_bytes = fetch(&layer.1)?;
    if layer.0 == LAYER_GZIP_MEDIA_TYPE {
        let mut d = Vec::new();
        flate2::read::GzDecoder::new(&tar_bytes[..])
            .read_to_end(&mut d)
            .map_err(|e| anyhow::anyhow!("{source}: the gzipped layer: {e}"))?;
        tar_bytes = d;
    }
    let image = image_from_layer(&tar_bytes, &name)?;
    let mut files = Vec::new();
    if debug {
        let id = annotations.get(ANNOT_BUILD_ID).cloned().unwrap_or_default();
        let (dm, _) = fetch_manifest(&format!("debug-{id}"))
            .map_err(|e| anyhow::anyhow!("{source}: no debug artifact for build id {id}: {e}"))?;
        let dm: Value = serde_json::from_slice(&dm)?;
        for (mt, dg, title) in manifest_layers(&dm) {
            if mt != DEBUG_LAYER_MEDIA_TYPE {
                continue;
            }
            let title = title.filter(|t| !t.contains('/') && !t.is_empty() && t != "..");
            let Some(title) = title else {
                anyhow::bail!("{source}: a debug layer without a plain file name");
            };
            files.push((title, fetch(&dg)?));
        }
    }
    Ok(Pulled {
        image,
        digest,
        annotations,
        debug: files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("oci:./layout").unwrap(),
            Location::Layout {
                dir: "./layout".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            parse_location("oci:/a/b:1.0").unwrap(),
            Location::Layout {
                dir: "/a/b".into(),
                tag: "1.0".into()
            }
        );
        assert!(parse_location("oci:").is_err());
        assert!(parse_location("oci:dir:-bad").is_err());
        assert!(parse_location("app").is_err());
        match parse_location("localhost:5000/app:1.0").unwrap() {
            Location::Registry(r) => {
                assert_eq!(r.registry(), "localhost:5000");
                assert_eq!(r.repository(), "app");
                assert_eq!(r.tag(), Some("1.0"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// oci-client's `e` from "doing it", as explain_unauthorized says it.
    fn explained(e: OciDistributionError, auth: &RegistryAuth) -> String {
        explain_unauthorized(registry_err("doing it".into(), e), "r:1", auth).to_string()
    }

    const REQUIRED: &str = "authentication required: r:1 refused anonymous access";

    #[test]
    fn unauthorized_errors_say_so() {
        let basic = RegistryAuth::Basic("alice".into(), "pw".into());
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        let m = explained(server(401), &basic);
        assert!(
            m.starts_with("authentication failed: r:1 refused the credentials of user \"alice\""),
            "{m}"
        );
        assert!(m.contains("code: 401"), "{m}");
        let m = explained(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            &RegistryAuth::Anonymous,
        );
        assert!(m.starts_with(REQUIRED), "{m}");
        let m = explained(server(404), &basic);
        assert_eq!(m, "doing it: Server error: url u, code: 404, message: m");
        // Only oci-client's error decides, not what a message says.
        let m = anyhow::anyhow!("a: code: 401, Not authorized, UNAUTHORIZED");
        let m = explain_unauthorized(m, "r:1", &basic).to_string();
        assert_eq!(m, "a: code: 401, Not authorized, UNAUTHORIZED");
    }

    #[test]
    fn an_unauthorized_error_envelope_is_unauthorized() {
        // What oci-client makes of a 4xx other than 401 with an OCI error
        // body: UNAUTHORIZED counts, DENIED does not.
        let envelope = |code: &str| OciDistributionError::RegistryError {
            envelope: serde_json::from_str(&format!(
                r#"{{"errors":[{{"code":"{code}","message":"no"}}]}}"#
            ))
            .unwrap(),
            url: "u".into(),
        };
        let m = explained(envelope("UNAUTHORIZED"), &RegistryAuth::Anonymous);
        assert!(m.starts_with(REQUIRED), "{m}");
        let m = explained(envelope("DENIED"), &RegistryAuth::Anonymous);
        assert!(m.starts_with("doing it: Registry error"), "{m}");
    }

    #[test]
    fn docker_config_auth() {
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let cfg = format!(
            r#"{{"auths":{{"localhost:5000":{{"auth":"{enc}"}},"https://index.docker.io/v1/":{{"auth":"{enc}"}}}}}}"#
        );
        match auth_from_config(&cfg, "localhost:5000").unwrap() {
            RegistryAuth::Basic(u, p) => {
                assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cret:x"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            auth_from_config(&cfg, "index.docker.io").unwrap(),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            auth_from_config(&cfg, "other:1").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            auth_from_config("{}", "x").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(auth_from_config(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h").is_err());
        assert!(auth_from_config("not json", "h").is_err());
    }

    #[test]
    fn loopback_registries_use_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut a = std::collections::HashMap::new();
        for k in ["z", "a", "m", "b", "y"] {
            a.insert(k.to_string(), k.to_string());
        }
        let s = String::from_utf8(canonical(&a).unwrap()).unwrap();
        assert_eq!(s, r#"{"a":"a","b":"b","m":"m","y":"y","z":"z"}"#);
    }
}
