//! The server's token-signing keys: created on first start, sealed with the key-encryption
//! key before they reach the store, rotated with overlap, and published in the JWKS.
//!
//! The newest unretired key signs. Every unretired key, and every retired key until the last
//! token it could have signed has expired, verifies and is published. Nodes sharing a store
//! learn of a key another node created when they meet its `kid` (see [`Keyring::refresh`]).

use std::sync::{Arc, RwLock};

use custos_core::jose::{KeyLookup, PublicKey, SigningAlg, SigningKey};
use custos_core::{DomainEvent, EventKind, Timestamp};
use custos_store::{Retirement, SigningKeyRecord, Store, StoreError};

use crate::secrets::Keys;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid}: {reason}")]
    Key { kid: String, reason: String },
    #[error("the store holds no usable signing key")]
    NoActiveKey,
}

struct Loaded {
    /// The key new tokens are signed with.
    active: Arc<SigningKey>,
    /// Every key a token may still name, with the time it stops being published.
    published: Vec<(PublicKey, Option<Timestamp>)>,
    loaded_at: Timestamp,
}

/// The verification keys at one moment, for the JOSE verifier.
pub struct PublishedKeys(Vec<PublicKey>);

impl KeyLookup for PublishedKeys {
    fn key(&self, kid: &str) -> Option<&PublicKey> {
        self.0.iter().find(|k| k.kid() == kid)
    }
}

impl PublishedKeys {
    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }
}

#[derive(Clone)]
pub struct Keyring {
    loaded: Arc<RwLock<Loaded>>,
}

fn key_error(kid: &str, reason: impl std::fmt::Display) -> KeyringError {
    KeyringError::Key {
        kid: kid.to_owned(),
        reason: reason.to_string(),
    }
}

/// Generates a key of `alg` and its store record, the private half sealed.
fn new_record(
    keys: &Keys,
    alg: SigningAlg,
    now: Timestamp,
) -> Result<SigningKeyRecord, KeyringError> {
    let key = SigningKey::generate(alg, &mut rand::rng()).map_err(|e| key_error("new", e))?;
    let der = key.to_pkcs8_der().map_err(|e| key_error(key.kid(), e))?;
    Ok(SigningKeyRecord {
        kid: key.kid().to_owned(),
        alg: alg.as_str().to_owned(),
        public_jwk: key.public_jwk().to_string(),
        sealed_key: keys.seal(key.kid(), &der),
        created_at: now,
        retired_at: None,
        publish_until: None,
    })
}

fn key_event(kind: EventKind, record: &SigningKeyRecord, now: Timestamp) -> DomainEvent {
    DomainEvent::new(
        crate::service::new_id(),
        kind,
        custos_core::Actor::System,
        format!("signing_key:{}", record.kid),
        now,
    )
    .with("kid", &record.kid)
    .with("alg", &record.alg)
}

impl Keyring {
    /// Loads the keys, creating the first one (of `alg`) on an empty store.
    pub async fn open(
        store: &dyn Store,
        keys: &Keys,
        alg: SigningAlg,
        now: Timestamp,
    ) -> Result<Self, KeyringError> {
        if store.list_signing_keys().await?.is_empty() {
            let record = new_record(keys, alg, now)?;
            let event = key_event(EventKind::SigningKeyCreated, &record, now);
            store.add_signing_key(&record, None, &event).await?;
        }
        let loaded = load(store, keys, now).await?;
        Ok(Self {
            loaded: Arc::new(RwLock::new(loaded)),
        })
    }

    /// A new signing key of `alg` replaces the active one, which stays published for
    /// `overlap_seconds` (the longest lifetime of a token it may have signed).
    pub async fn rotate(
        &self,
        store: &dyn Store,
        keys: &Keys,
        alg: SigningAlg,
        overlap_seconds: i64,
        now: Timestamp,
    ) -> Result<String, KeyringError> {
        let retiring = self.active().kid().to_owned();
        let record = new_record(keys, alg, now)?;
        let event =
            key_event(EventKind::SigningKeyCreated, &record, now).with("retired", &retiring);
        store
            .add_signing_key(
                &record,
                Some(Retirement {
                    kid: &retiring,
                    at: now,
                    publish_until: now.plus_seconds(overlap_seconds),
                }),
                &event,
            )
            .await?;
        self.refresh(store, keys, now).await?;
        Ok(record.kid)
    }

    /// Reloads from the store: picks up keys other nodes created or retired.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        keys: &Keys,
        now: Timestamp,
    ) -> Result<(), KeyringError> {
        let loaded = load(store, keys, now).await?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(())
    }

    /// Whether a reload may find something new: at most once a second, so that tokens naming
    /// unknown keys cannot turn into a stream of store reads.
    pub fn may_refresh(&self, now: Timestamp) -> bool {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        now.unix_millis() - loaded.loaded_at.unix_millis() >= 1000
    }

    pub fn active(&self) -> Arc<SigningKey> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .active
            .clone()
    }

    /// The keys tokens may be verified with at `now`: what the JWKS publishes.
    pub fn published(&self, now: Timestamp) -> PublishedKeys {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        PublishedKeys(
            loaded
                .published
                .iter()
                .filter(|(_, until)| until.is_none_or(|until| now < until))
                .map(|(key, _)| key.clone())
                .collect(),
        )
    }
}

async fn load(store: &dyn Store, keys: &Keys, now: Timestamp) -> Result<Loaded, KeyringError> {
    let records = store.list_signing_keys().await?;
    let mut active = None;
    let mut published = Vec::new();
    for record in records {
        let alg: SigningAlg = record
            .alg
            .parse()
            .map_err(|_| key_error(&record.kid, "unknown algorithm"))?;
        if record.retired_at.is_none() {
            // Records come oldest first, so the last unretired key is the newest.
            let der = keys
                .unseal(&record.kid, &record.sealed_key)
                .map_err(|e| key_error(&record.kid, e))?;
            let key =
                SigningKey::from_pkcs8_der(alg, &der).map_err(|e| key_error(&record.kid, e))?;
            if key.kid() != record.kid {
                return Err(key_error(&record.kid, "sealed key does not match its kid"));
            }
            published.push((key.public_key().clone(), None));
            active = Some(Arc::new(key));
        } else if record.publish_until.is_some_and(|until| now < until) {
            let jwk: serde_json::Value =
                serde_json::from_str(&record.public_jwk).map_err(|e| key_error(&record.kid, e))?;
            let key = PublicKey::from_jwk(&jwk).map_err(|e| key_error(&record.kid, e))?;
            published.push((key, record.publish_until));
        }
    }
    Ok(Loaded {
        active: active.ok_or(KeyringError::NoActiveKey)?,
        published,
        loaded_at: now,
    })
}
