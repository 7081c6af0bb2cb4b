//! Signed plugin bundles: a component with its manifest embedded and an
//! Ed25519 signature by the publisher's key, all in one `.wasm` file.
//!
//! The signature is one more top-level custom section,
//! [`SIGNATURE_SECTION`], holding JSON `{publisher, public_key, signature}`.
//! It signs every other byte of the file — the component and its manifest
//! section — so changing any byte of either breaks it. A signed bundle is
//! still a plain component: hosts and tools that know nothing of signatures
//! load it unchanged, and OCI registries carry it as a wasm layer.
//!
//! What is signed: `"nachfass-bundle-v1\n"` followed by the SHA-256 of the
//! file with the signature section left out. The prefix keeps a bundle
//! signature from ever being valid for another purpose of the same key.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest, ManifestError};

/// Name of the custom section holding the signature JSON.
pub const SIGNATURE_SECTION: &str = "nachfass:signature";

const DOMAIN: &[u8] = b"nachfass-bundle-v1\n";
const KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the signature does not match the component and manifest: the file was changed after it was signed by `{publisher}`; get the bundle again from its publisher"
    )]
    Mismatch { publisher: String },
    #[error(
        "signed by `{publisher}` with key {key}, which this server does not trust; an admin adds it with `nachfass trust add` or POST /v1/trusted-keys after checking it with the publisher"
    )]
    Untrusted { publisher: String, key: PublicKey },
    #[error(
        "the plugin is not signed and this server requires signatures (--signatures required); ask the publisher for a bundle made with `nachfass plugin pack`"
    )]
    Unsigned,
    #[error(
        "the manifest names publisher `{manifest}` but the signature is by `{signature}`; the publisher must sign their own plugins"
    )]
    PublisherMismatch { manifest: String, signature: String },
    #[error("the signature section is not valid: {0}")]
    Malformed(String),
    #[error("the key is not valid: {0}")]
    BadKey(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// A publisher's public key, written `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        VerifyingKey::from_bytes(&self.0).map_err(|e| SignatureError::BadKey(e.to_string()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for PublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            SignatureError::BadKey(format!(
                "`{s}` is not a public key; expected `{KEY_PREFIX}` and 64 hex digits, as `nachfass plugin keygen` prints"
            ))
        };
        let digits = s.trim().strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = hex::decode(digits)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let key = PublicKey(bytes);
        key.verifying_key()?;
        Ok(key)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A publisher's signing key as `nachfass plugin keygen` writes it to a
/// file: JSON with the publisher's name and both halves of the key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherKey {
    pub publisher: String,
    pub public_key: PublicKey,
    /// 64 hex digits. Keep the file private.
    secret_key: String,
}

impl PublisherKey {
    /// A new random key for `publisher`.
    pub fn generate(publisher: &str) -> Result<PublisherKey, SignatureError> {
        validate_publisher(publisher)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| SignatureError::BadKey(format!("no randomness from the OS: {e}")))?;
        let signing = SigningKey::from_bytes(&secret);
        Ok(PublisherKey {
            publisher: publisher.to_owned(),
            public_key: PublicKey(signing.verifying_key().to_bytes()),
            secret_key: hex::encode(secret),
        })
    }

    pub fn from_json(json: &[u8]) -> Result<PublisherKey, SignatureError> {
        let key: PublisherKey = serde_json::from_slice(json).map_err(|e| {
            SignatureError::BadKey(format!(
                "not a key file written by `nachfass plugin keygen`: {e}"
            ))
        })?;
        validate_publisher(&key.publisher)?;
        if PublicKey(key.signing_key()?.verifying_key().to_bytes()) != key.public_key {
            return Err(SignatureError::BadKey(
                "the public key in the file does not belong to its secret key".into(),
            ));
        }
        Ok(key)
    }

    fn signing_key(&self) -> Result<SigningKey, SignatureError> {
        let secret: [u8; 32] = hex::decode(&self.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SignatureError::BadKey("secret_key must be 64 hex digits".into()))?;
        Ok(SigningKey::from_bytes(&secret))
    }
}

fn validate_publisher(publisher: &str) -> Result<(), SignatureError> {
    let valid = !publisher.is_empty()
        && publisher.len() <= 64
        && publisher
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(SignatureError::BadKey(format!(
            "publisher `{publisher}` must be 1-64 characters of letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// The signature section's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBlock {
    publisher: String,
    public_key: PublicKey,
    /// 128 hex digits.
    signature: String,
}

/// Who signed a bundle, once the signature is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBy {
    pub publisher: String,
    pub public_key: PublicKey,
}

/// Signs a component that carries its manifest: writes the key's publisher
/// into the manifest (refusing a manifest that names someone else), then
/// appends the signature section. An earlier signature is replaced.
pub fn sign(component: &[u8], key: &PublisherKey) -> Result<Vec<u8>, SignatureError> {
    let unsigned = manifest::without_section(component, SIGNATURE_SECTION)?;
    let mut manifest = embedded_manifest(&unsigned)?;
    if !manifest.publisher.is_empty() && manifest.publisher != key.publisher {
        return Err(SignatureError::PublisherMismatch {
            manifest: manifest.publisher,
            signature: key.publisher.clone(),
        });
    }
    manifest.publisher = key.publisher.clone();
    let mut bundle = manifest::embed(&unsigned, &manifest)?;
    let signature = key.signing_key()?.sign(&signed_message(&bundle));
    let block = SignatureBlock {
        publisher: key.publisher.clone(),
        public_key: key.public_key,
        signature: hex::encode(signature.to_bytes()),
    };
    let json = serde_json::to_vec(&block).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    manifest::append_section(&mut bundle, SIGNATURE_SECTION, &json);
    Ok(bundle)
}

/// Checks a component's signature, if it has one: `Ok(None)` for an
/// unsigned component, the signer for a valid signature, an error for a
/// signature that does not match the bytes or the manifest's publisher.
/// Whether the signer is trusted is [`TrustPolicy::check`]'s question.
pub fn verify(component: &[u8]) -> Result<Option<SignedBy>, SignatureError> {
    let Some(json) = manifest::read_section(component, SIGNATURE_SECTION)? else {
        return Ok(None);
    };
    let block: SignatureBlock =
        serde_json::from_slice(json).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let signature_bytes: [u8; 64] = hex::decode(&block.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SignatureError::Malformed("signature must be 128 hex digits".into()))?;
    let unsigned = manifest::without_section(component, SIGNATURE_SECTION)?;
    block
        .public_key
        .verifying_key()?
        .verify(
            &signed_message(&unsigned),
            &Signature::from_bytes(&signature_bytes),
        )
        .map_err(|_| SignatureError::Mismatch {
            publisher: block.publisher.clone(),
        })?;
    let manifest = embedded_manifest(&unsigned)?;
    if manifest.publisher != block.publisher {
        return Err(SignatureError::PublisherMismatch {
            manifest: manifest.publisher,
            signature: block.publisher,
        });
    }
    Ok(Some(SignedBy {
        publisher: block.publisher,
        public_key: block.public_key,
    }))
}

fn embedded_manifest(component: &[u8]) -> Result<Manifest, SignatureError> {
    let json = manifest::read_section(component, manifest::SECTION_NAME)?.ok_or(
        SignatureError::Manifest(ManifestError::Invalid(
            "only a component with its manifest embedded can be signed; run `nachfass plugin build` (or embed the manifest) first".into(),
        )),
    )?;
    Ok(Manifest::from_json(json)?)
}

fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&Sha256::digest(unsigned));
    message
}

/// Whether unsigned plugins are accepted.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// Signed and unsigned plugins are accepted; a signature, when there is
    /// one, must be valid and by a trusted key.
    #[default]
    Optional,
    /// Only plugins signed by a trusted key are accepted.
    Required,
}

/// The keys a server trusts, by key, with the publisher each belongs to,
/// and its signature policy.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    pub signatures: SignaturePolicy,
    pub trusted: BTreeMap<PublicKey, String>,
}

impl TrustPolicy {
    /// Verifies a component and applies the policy: the signer if signed by
    /// a trusted key; `None` if unsigned and signatures are optional.
    pub fn check(&self, component: &[u8]) -> Result<Option<SignedBy>, SignatureError> {
        match verify(component)? {
            Some(signer) => match self.trusted.get(&signer.public_key) {
                Some(publisher) if *publisher == signer.publisher => Ok(Some(signer)),
                _ => Err(SignatureError::Untrusted {
                    publisher: signer.publisher,
                    key: signer.public_key,
                }),
            },
            None if self.signatures == SignaturePolicy::Required => Err(SignatureError::Unsigned),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::manifest::World;

    fn component() -> Vec<u8> {
        let manifest = Manifest {
            name: "b2b-fit".into(),
            version: "1.0.0".into(),
            world: World::Scorer,
            description: String::new(),
            author: String::new(),
            publisher: String::new(),
            api: manifest::API_VERSION.into(),
            config: vec![],
            capabilities: vec![],
            http_hosts: vec![],
            limits: Default::default(),
            reads: None,
        };
        // A component header, one opaque custom section standing for the
        // code, then the manifest.
        let mut bytes = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        manifest::append_section(&mut bytes, "code", b"\x01\x02\x03 pretend code");
        manifest::embed(&bytes, &manifest).unwrap()
    }

    fn trusting(key: &PublisherKey) -> TrustPolicy {
        TrustPolicy {
            signatures: SignaturePolicy::Required,
            trusted: [(key.public_key, key.publisher.clone())].into(),
        }
    }

    #[test]
    fn a_signed_bundle_verifies_and_names_its_publisher() {
        let key = PublisherKey::generate("acme-agency").unwrap();
        let bundle = sign(&component(), &key).unwrap();
        let signer = trusting(&key).check(&bundle).unwrap().unwrap();
        assert_eq!(signer.publisher, "acme-agency");
        let json = manifest::read_section(&bundle, manifest::SECTION_NAME)
            .unwrap()
            .unwrap();
        assert_eq!(Manifest::from_json(json).unwrap().publisher, "acme-agency");
        // Signing again replaces the signature instead of stacking one.
        let again = sign(&bundle, &key).unwrap();
        assert_eq!(again, bundle);
    }

    #[test]
    fn any_changed_byte_breaks_the_signature() {
        let key = PublisherKey::generate("acme").unwrap();
        let bundle = sign(&component(), &key).unwrap();
        let code_at = bundle
            .windows(4)
            .position(|w| w == b"\x01\x02\x03 ")
            .unwrap();
        let manifest_at = bundle.windows(7).position(|w| w == b"b2b-fit").unwrap();
        for at in [code_at, manifest_at] {
            let mut tampered = bundle.clone();
            tampered[at] ^= 0x20;
            let error = trusting(&key).check(&tampered).unwrap_err();
            assert!(
                matches!(error, SignatureError::Mismatch { .. }),
                "byte {at}: {error}"
            );
            assert!(error.to_string().contains("changed after it was signed"));
        }
    }

    #[test]
    fn untrusted_keys_and_unsigned_plugins_follow_the_policy() {
        let key = PublisherKey::generate("acme").unwrap();
        let stranger = PublisherKey::generate("acme").unwrap();
        let bundle = sign(&component(), &stranger).unwrap();
        let error = trusting(&key).check(&bundle).unwrap_err();
        assert!(matches!(error, SignatureError::Untrusted { .. }), "{error}");
        assert!(error.to_string().contains(&stranger.public_key.to_string()));

        let unsigned = component();
        assert!(matches!(
            trusting(&key).check(&unsigned),
            Err(SignatureError::Unsigned)
        ));
        let optional = TrustPolicy {
            signatures: SignaturePolicy::Optional,
            ..trusting(&key)
        };
        assert_eq!(optional.check(&unsigned).unwrap(), None);
        // Optional still refuses a signature it cannot trust.
        assert!(optional.check(&bundle).is_err());
    }

    #[test]
    fn a_trusted_key_under_another_publisher_name_is_refused() {
        let key = PublisherKey::generate("acme").unwrap();
        let mut policy = trusting(&key);
        policy.trusted.insert(key.public_key, "someone-else".into());
        let bundle = sign(&component(), &key).unwrap();
        assert!(matches!(
            policy.check(&bundle),
            Err(SignatureError::Untrusted { .. })
        ));
    }

    #[test]
    fn a_manifest_naming_another_publisher_is_not_signed() {
        let key = PublisherKey::generate("acme").unwrap();
        let other = PublisherKey::generate("globex").unwrap();
        let bundle = sign(&component(), &other).unwrap();
        assert!(matches!(
            sign(&bundle, &key),
            Err(SignatureError::PublisherMismatch { .. })
        ));
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_explained() {
        let key = PublisherKey::generate("acme").unwrap();
        let json = serde_json::to_vec(&key).unwrap();
        let read = PublisherKey::from_json(&json).unwrap();
        assert_eq!(read.public_key, key.public_key);
        let text = key.public_key.to_string();
        assert_eq!(text.parse::<PublicKey>().unwrap(), key.public_key);
        assert!("ed25519:abcd".parse::<PublicKey>().is_err());
        assert!(
            "rsa:00"
                .parse::<PublicKey>()
                .unwrap_err()
                .to_string()
                .contains("nachfass plugin keygen")
        );
        assert!(PublisherKey::generate("bad name!").is_err());
        let mut forged: serde_json::Value = serde_json::from_slice(&json).unwrap();
        forged["public_key"] =
            serde_json::json!(PublisherKey::generate("x").unwrap().public_key.to_string());
        assert!(PublisherKey::from_json(forged.to_string().as_bytes()).is_err());
    }

    #[test]
    fn garbage_in_the_signature_section_is_refused() {
        let mut bytes = component();
        manifest::append_section(&mut bytes, SIGNATURE_SECTION, b"{not json");
        assert!(matches!(verify(&bytes), Err(SignatureError::Malformed(_))));
    }
}
