//! API keys: a secret shown once at creation, stored only as its SHA-256,
//! with scopes that every route checks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, new_id};

/// What a key may do. `admin` implies every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Manage keys, plugins and bindings.
    Admin,
    /// Create, change and delete contacts.
    Write,
    /// Read contacts, timelines and figures.
    Read,
    /// Send events only, e.g. from a website.
    Ingest,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Ingest => "ingest",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        [Scope::Admin, Scope::Write, Scope::Read, Scope::Ingest]
            .into_iter()
            .find(|scope| scope.as_str() == s)
    }
}

/// A key as the server knows it (never the secret).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// How long a node trusts a key it looked up: every request needs its key,
/// and at thousands of single-event requests a second the lookup was a
/// query per request. A key revoked in the database stops working on
/// every node within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Keys at most in the cache; unknown secrets are never cached, so only
/// real keys fill it.
const KEY_CACHE_SIZE: usize = 1024;

/// The keys this node looked up lately, by the hash of their secret.
#[derive(Debug, Default)]
pub(super) struct KeyCache(Mutex<HashMap<String, (ApiKey, Instant)>>);

impl KeyCache {
    fn get(&self, key_hash: &str) -> Option<ApiKey> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key_hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone())
    }

    fn put(&self, key_hash: String, key: ApiKey) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= KEY_CACHE_SIZE {
            cache.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
            if cache.len() >= KEY_CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(key_hash, (key, Instant::now()));
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Creates a key and returns it with its secret, the only time the
    /// secret is seen.
    pub async fn create_api_key(
        &self,
        name: &str,
        scopes: &[Scope],
        now: i64,
    ) -> Result<(ApiKey, String), StoreError> {
        if scopes.is_empty() {
            return Err(StoreError::Invalid("a key needs at least one scope".into()));
        }
        let secret = format!(
            "nf_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let key = ApiKey {
            id: new_id("k"),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            created_at: now,
        };
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(key.id.clone())
            .bind(key.name.clone())
            .bind(hash(&secret))
            .bind(scopes.join(","))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok((key, secret))
    }

    /// The live key with this secret, if any (looked up at most every
    /// [`KEY_CACHE_TTL`] per key on this node).
    pub async fn api_key(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let key_hash = hash(secret);
        if let Some(key) = self.api_keys.get(&key_hash) {
            return Ok(Some(key));
        }
        let row = sqlx::query(
            "SELECT id, name, scopes, created_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash.clone())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let scopes: String = row.try_get("scopes")?;
        let key = ApiKey {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            scopes: scopes.split(',').filter_map(Scope::parse).collect(),
            created_at: row.try_get("created_at")?,
        };
        self.api_keys.put(key_hash, key.clone());
        Ok(Some(key))
    }

    pub async fn count_api_keys(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
