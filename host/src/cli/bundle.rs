//! `nachfass plugin keygen | pack | verify`: signed bundles a publisher
//! hands to operators.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliError, fail};
use crate::oci::{self, OciClient};
use crate::runtime::RuntimeLimits;
use crate::runtime::manifest::{self, Manifest};
use crate::runtime::signature::{self, PublicKey, PublisherKey, SignaturePolicy, TrustPolicy};

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Make a publisher's Ed25519 signing key; prints the public key that
    /// operators trust.
    Keygen {
        /// The publisher's name, as plugin manifests and operators see it.
        #[arg(long)]
        publisher: String,
        /// Where to write the key file (private: keep it out of the repository).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a built plugin into a bundle: the component, its manifest (naming
    /// the publisher) and an Ed25519 signature over both, in one file.
    Pack {
        /// A component with its manifest embedded or beside it as `<file>.manifest.json`.
        file: PathBuf,
        /// The key file from `nachfass plugin keygen`.
        #[arg(long, env = "NACHFASS_PUBLISHER_KEY")]
        key: PathBuf,
        /// Output file; defaults to `<name>-<version>.signed.wasm` beside the input.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Push a plugin file (signed bundle or not) to an OCI registry, in the
    /// WebAssembly artifact layout wkg uses.
    Push {
        file: PathBuf,
        /// `registry/repository:tag`, e.g. `ghcr.io/acme/engagement:1.0.0`.
        reference: String,
        /// Token for a private registry.
        #[arg(long, env = "NACHFASS_OCI_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Pull a plugin from an OCI registry into a file.
    Pull {
        reference: String,
        #[arg(long)]
        out: PathBuf,
        /// Token for a private registry.
        #[arg(long, env = "NACHFASS_OCI_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Check a bundle's signature; with `--trust`, also that its key is one of these.
    Verify {
        file: PathBuf,
        /// A trusted public key (`ed25519:…`); repeatable.
        #[arg(long = "trust", value_name = "PUBLIC_KEY")]
        trusted: Vec<PublicKey>,
    },
}

pub async fn run(command: BundleCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        BundleCommand::Push {
            file,
            reference,
            token,
        } => {
            let bytes =
                std::fs::read(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            let reference = oci::parse_reference(&reference).map_err(fail)?;
            let url = OciClient::new(token)
                .push(&reference, &bytes)
                .await
                .map_err(|e| fail(format!("{}: {e}", file.display())))?;
            writeln!(out, "pushed {reference} ({url})").map_err(fail)
        }
        BundleCommand::Pull {
            reference,
            out: path,
            token,
        } => {
            let reference = oci::parse_reference(&reference).map_err(fail)?;
            let bytes = OciClient::new(token)
                .pull(&reference, RuntimeLimits::default().max_component_bytes)
                .await
                .map_err(fail)?;
            std::fs::write(&path, &bytes).map_err(|e| fail(format!("{}: {e}", path.display())))?;
            let signer = match signature::verify(&bytes).map_err(fail)? {
                Some(signer) => format!("signed by {} ({})", signer.publisher, signer.public_key),
                None => "unsigned".to_owned(),
            };
            writeln!(out, "pulled {reference} into {}, {signer}", path.display()).map_err(fail)
        }
        BundleCommand::Keygen {
            publisher,
            out: path,
        } => keygen(&publisher, &path, out),
        BundleCommand::Pack {
            file,
            key,
            out: path,
        } => pack(&file, &key, path, out),
        BundleCommand::Verify { file, trusted } => verify(&file, trusted, out),
    }
}

fn keygen(publisher: &str, path: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let key = PublisherKey::generate(publisher).map_err(fail)?;
    let json = serde_json::to_vec_pretty(&key).map_err(fail)?;
    write_private(path, &json)?;
    writeln!(out, "{}", key.public_key).map_err(fail)?;
    Ok(())
}

/// Writes a new file only its owner can read; never overwrites a key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        fail(format!(
            "{}: {e} (keygen never overwrites a key file; choose another --out)",
            path.display()
        ))
    })?;
    file.write_all(bytes).map_err(fail)
}

fn pack(
    file: &Path,
    key: &Path,
    target: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let key_json = std::fs::read(key).map_err(|e| fail(format!("{}: {e}", key.display())))?;
    let key = PublisherKey::from_json(&key_json).map_err(fail)?;
    let bytes = std::fs::read(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    // A component built by another toolchain may carry its manifest beside
    // it; the bundle carries it inside.
    let manifest =
        Manifest::for_file(file, &bytes).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let embedded = manifest::embed(&bytes, &manifest).map_err(fail)?;
    let bundle = signature::sign(&embedded, &key).map_err(fail)?;
    let target = target.unwrap_or_else(|| {
        file.with_file_name(format!(
            "{}-{}.signed.wasm",
            manifest.name, manifest.version
        ))
    });
    std::fs::write(&target, bundle).map_err(|e| fail(format!("{}: {e}", target.display())))?;
    writeln!(
        out,
        "{} signed by {} ({})",
        target.display(),
        key.publisher,
        key.public_key
    )
    .map_err(fail)?;
    Ok(())
}

fn verify(file: &Path, trusted: Vec<PublicKey>, out: &mut dyn Write) -> Result<(), CliError> {
    let bytes = std::fs::read(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let signer = signature::verify(&bytes).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let Some(signer) = signer else {
        return Err(fail(format!("{}: not signed", file.display())));
    };
    let trust_note = if trusted.is_empty() {
        "; the key was not compared with a trust list (pass --trust)"
    } else {
        let policy = TrustPolicy {
            signatures: SignaturePolicy::Required,
            trusted: trusted
                .into_iter()
                .map(|key| (key, signer.publisher.clone()))
                .collect(),
        };
        policy
            .check(&bytes)
            .map_err(|e| fail(format!("{}: {e}", file.display())))?;
        "; the key is trusted"
    };
    writeln!(
        out,
        "{}: signature valid, publisher {} ({}){trust_note}",
        file.display(),
        signer.publisher,
        signer.public_key,
    )
    .map_err(fail)?;
    Ok(())
}
