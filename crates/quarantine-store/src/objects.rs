//! The object-store side of the blob backend (DESIGN section 11): the small trait a remote blob store implements,
//! and the choice of backend a store is opened with.
//!
//! The store defines the trait and never links a network or TLS crate (CI checks it with `cargo tree`): the S3
//! client lives in `quarantine-objects`, which the CLI builds from the config and hands over through [`Backends`].
//! Names passed to the trait are blob names (64 hex); the implementation owns the bucket and the key prefix.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Result;

/// What a create-only PUT found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist; these bytes are it now.
    Created,
    /// An object with this name was already there and was left alone: the caller decides whether to trust it.
    AlreadyThere,
}

/// One object's metadata, as HEAD or a listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The blob name (the key without the prefix).
    pub name: String,
    /// Stored (compressed) size in bytes.
    pub size: u64,
    /// The store's checksum of the stored bytes, when it gives one (S3: the ETag).
    pub e_tag: Option<String>,
    /// When the object was last written: the upload time purge's grace period counts from.
    pub last_modified: SystemTime,
}

/// A remote object store holding the blobs. Every call blocks until the store answered or gave up; an
/// unreachable store, a missing bucket or refused credentials are [`crate::Error::ObjectStore`] errors whose
/// message says which, so an admin can act on it.
pub trait ObjectStore: Send + Sync + Debug {
    /// Where the objects live, for messages: `s3://bucket/prefix/ at http://127.0.0.1:8333`.
    fn describe(&self) -> String;
    /// The URL of one object, for messages (`s3://bucket/prefix/<name>`).
    fn url_of(&self, name: &str) -> String;
    /// Writes `bytes` under `name` only if no object has that name (S3: `If-None-Match: *`), so two gateways
    /// uploading the same content race harmlessly.
    fn put_create_only(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome>;
    /// Writes `bytes` under `name`, replacing any object there (only ever used to replace a corrupt blob with
    /// the bytes its name is the hash of).
    fn put_overwrite(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// The object's bytes, `None` when it does not exist.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// The object's metadata, `None` when it does not exist.
    fn head(&self, name: &str) -> Result<Option<ObjectInfo>>;
    /// Removes the object; removing one that does not exist is not an error.
    fn delete(&self, name: &str) -> Result<()>;
    /// Every object under the prefix (for verify, purge's orphan sweep and stats).
    fn list(&self) -> Result<Vec<ObjectInfo>>;
    /// Proves the store answers and the bucket is usable (lists at most one key): for `check` and `config check`.
    fn probe(&self) -> Result<()>;
}

/// Where a store keeps its blobs.
#[derive(Clone, Debug, Default)]
pub enum BlobLocation {
    /// `STORE/blobs/`, the embedded default.
    #[default]
    Local,
    /// A remote object store; `tmp/` stays local as the staging area.
    Remote(Arc<dyn ObjectStore>),
}
