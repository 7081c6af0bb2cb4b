//! Plugins in OCI registries (GHCR, Harbor, a local `registry`), in the
//! WebAssembly artifact layout `wkg` uses: one `application/wasm` layer
//! holding the component — for nachfass the whole bundle, manifest and
//! signature included — and a `application/vnd.wasm.config.v0+json` config.
//!
//! A pulled plugin is checked like an uploaded one (size, manifest,
//! signature and trust) by whoever installs it; this module only moves
//! bytes, refusing registries that are not allowed and layers that are too
//! large before downloading them.

use std::collections::BTreeMap;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

use crate::runtime::manifest::{self, Manifest};

/// The component layer's media type (WebAssembly OCI artifact layout).
pub const WASM_LAYER: &str = "application/wasm";
/// The config's media type (WebAssembly OCI artifact layout).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{reference}` is not an OCI reference like registry.example/acme/plugin:1.0.0: {detail}"
    )]
    BadReference { reference: String, detail: String },
    #[error(
        "registry `{registry}` is not allowed; the server accepts: {allowed}. An operator adds it with --oci-registry"
    )]
    RegistryNotAllowed { registry: String, allowed: String },
    #[error("`{reference}` is not a WebAssembly plugin artifact: {detail}")]
    NotAPlugin { reference: String, detail: String },
    #[error("`{reference}`: the component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        reference: String,
        size: i64,
        limit: usize,
    },
    #[error("registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

/// Registries a server may pull from (`host` or `host:port`).
#[derive(Clone, Debug, Default)]
pub struct AllowedRegistries(pub Vec<String>);

impl AllowedRegistries {
    pub fn check(&self, reference: &Reference) -> Result<(), OciError> {
        let registry = reference.registry();
        if self.0.iter().any(|allowed| allowed == registry) {
            return Ok(());
        }
        Err(OciError::RegistryNotAllowed {
            registry: registry.to_owned(),
            allowed: if self.0.is_empty() {
                "none".to_owned()
            } else {
                self.0.join(", ")
            },
        })
    }
}

pub fn parse_reference(reference: &str) -> Result<Reference, OciError> {
    reference
        .parse()
        .map_err(|e: oci_client::ParseError| OciError::BadReference {
            reference: reference.to_owned(),
            detail: e.to_string(),
        })
}

/// How to reach registries: a token for private ones. Registries on the
/// loopback interface speak plain HTTP (as a local `registry` does); all
/// others HTTPS.
#[derive(Clone, Default)]
pub struct OciClient {
    token: Option<String>,
}

impl std::fmt::Debug for OciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciClient")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl OciClient {
    pub fn new(token: Option<String>) -> OciClient {
        OciClient {
            token: token.filter(|t| !t.is_empty()),
        }
    }

    fn auth(&self) -> RegistryAuth {
        match &self.token {
            Some(token) => RegistryAuth::Bearer(token.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    fn client(reference: &Reference) -> Client {
        // reqwest is built without a default TLS provider; use ring, the one
        // the rest of the binary (lettre) already links.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.registry();
        let host = registry.rsplit_once(':').map_or(registry, |(host, _)| host);
        let protocol = if matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            ..ClientConfig::default()
        })
    }

    /// Pushes a plugin file (a component with its manifest embedded, signed
    /// or not) and returns the pullable manifest URL.
    pub async fn push(&self, reference: &Reference, bundle: &[u8]) -> Result<String, OciError> {
        let json = manifest::read_section(bundle, manifest::SECTION_NAME)?
            .ok_or(manifest::ManifestError::Missing)?;
        let plugin = Manifest::from_json(json)?;
        let layer = ImageLayer::new(bundle.to_vec(), WASM_LAYER.to_owned(), None);
        let config = json!({
            "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "author": if plugin.publisher.is_empty() { &plugin.author } else { &plugin.publisher },
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.sha256_digest()],
            "component": { "exports": [], "imports": [], "target": format!("nachfass:plugin/{}@{}", plugin.world, plugin.api) },
        });
        let config = Config::new(
            serde_json::to_vec(&config).map_err(|e| OciError::Registry(e.to_string()))?,
            WASM_CONFIG.to_owned(),
            None,
        );
        let annotations = BTreeMap::from([
            (
                "org.opencontainers.image.title".to_owned(),
                plugin.name.clone(),
            ),
            (
                "org.opencontainers.image.version".to_owned(),
                plugin.version.clone(),
            ),
            (
                "org.opencontainers.image.description".to_owned(),
                plugin.description.clone(),
            ),
            ("dev.nachfass.world".to_owned(), plugin.world.to_string()),
        ]);
        let layers = [layer];
        let oci_manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        let pushed = Self::client(reference)
            .push(reference, &layers, config, &self.auth(), Some(oci_manifest))
            .await
            .map_err(|e| OciError::Registry(format!("push to {reference}: {e}")))?;
        Ok(pushed.manifest_url)
    }

    /// Pulls the component layer of a plugin artifact, refusing anything
    /// over `max_bytes` before downloading it.
    pub async fn pull(&self, reference: &Reference, max_bytes: usize) -> Result<Vec<u8>, OciError> {
        let client = Self::client(reference);
        let (oci_manifest, _digest) = client
            .pull_image_manifest(reference, &self.auth())
            .await
            .map_err(|e| OciError::Registry(format!("pull {reference}: {e}")))?;
        let not_a_plugin = |detail: String| OciError::NotAPlugin {
            reference: reference.to_string(),
            detail,
        };
        if oci_manifest.config.media_type != WASM_CONFIG {
            return Err(not_a_plugin(format!(
                "its config is `{}`, not `{WASM_CONFIG}`",
                oci_manifest.config.media_type
            )));
        }
        let [layer] = oci_manifest.layers.as_slice() else {
            return Err(not_a_plugin(format!(
                "it has {} layers, a plugin has one",
                oci_manifest.layers.len()
            )));
        };
        if layer.media_type != WASM_LAYER {
            return Err(not_a_plugin(format!(
                "its layer is `{}`, not `{WASM_LAYER}`",
                layer.media_type
            )));
        }
        if layer.size < 0 || layer.size as u64 > max_bytes as u64 {
            return Err(OciError::TooLarge {
                reference: reference.to_string(),
                size: layer.size,
                limit: max_bytes,
            });
        }
        let mut capped = Capped {
            bytes: Vec::with_capacity(layer.size as usize),
            max: layer.size as usize,
        };
        client
            .pull_blob(reference, layer, &mut capped)
            .await
            .map_err(|e| OciError::Registry(format!("pull {reference}: {e}")))?;
        let bytes = capped.bytes;
        if bytes.len() as u64 != layer.size as u64 {
            return Err(OciError::Registry(format!(
                "pull {reference}: the registry sent {} bytes for a {}-byte layer",
                bytes.len(),
                layer.size
            )));
        }
        Ok(bytes)
    }
}

/// A buffer that refuses to grow past the size the manifest announced, so
/// a registry cannot stream more than it promised.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.max {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes its manifest announced",
                self.max
            ))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
