//! `nachfass trust add | list | remove`: the publisher keys this cluster
//! accepts signed plugins from, written straight to the database (the API
//! has the same under `/v1/trusted-keys`). Servers pick changes up within
//! seconds.

use std::io::Write;

use clap::Subcommand;

use super::serve::DatabaseArgs;
use super::{CliError, fail};
use crate::clock::{Clock, SystemClock};
use crate::runtime::signature::PublicKey;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a publisher's key, as `nachfass plugin keygen` printed it.
    Add {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long)]
        publisher: String,
        /// `ed25519:<64 hex digits>`.
        #[arg(long)]
        key: PublicKey,
    },
    /// List trusted keys.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Stop trusting a key; installed versions stay installed.
    Remove {
        #[command(flatten)]
        db: DatabaseArgs,
        #[arg(long)]
        key: PublicKey,
    },
}

/// Who the audit log names for changes made from the command line.
const CLI_ACTOR: &str = "cli";

pub async fn run(command: TrustCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        TrustCommand::Add { db, publisher, key } => {
            let store = connect(&db).await?;
            let added = store
                .trust_key(&key.to_string(), &publisher, CLI_ACTOR, SystemClock.now())
                .await
                .map_err(fail)?;
            let what = if added {
                "now trusted"
            } else {
                "already trusted"
            };
            writeln!(out, "{key} {what} for {publisher}").map_err(fail)
        }
        TrustCommand::List { db } => {
            let store = connect(&db).await?;
            for key in store.trusted_keys().await.map_err(fail)? {
                writeln!(out, "{}\t{}", key.public_key, key.publisher).map_err(fail)?;
            }
            Ok(())
        }
        TrustCommand::Remove { db, key } => {
            let store = connect(&db).await?;
            store
                .distrust_key(&key.to_string(), CLI_ACTOR, SystemClock.now())
                .await
                .map_err(fail)?;
            writeln!(out, "{key} no longer trusted").map_err(fail)
        }
    }
}

async fn connect(db: &DatabaseArgs) -> Result<Store, CliError> {
    Store::connect(&db.database)
        .await
        .map_err(|e| fail(format!("database {}: {e}", db.database)))
}
