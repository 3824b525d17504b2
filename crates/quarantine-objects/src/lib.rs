//! `quarantine-objects`: the S3-compatible object store behind a store's blobs (DESIGN section 11).
//!
//! It implements [`quarantine_store::ObjectStore`] with `object_store`'s S3 client, so the store crate itself
//! links no network or TLS code. The client is async; the store is synchronous and calls from its staging
//! threads, so each call is a `block_on` on a small private tokio runtime (two workers: the requests of many
//! staging threads share its connection pool).
//!
//! # Where the settings come from
//! `blobs = "s3://bucket/prefix"` names the bucket and the key prefix; each blob is the object
//! `prefix/<BLAKE3 hex of the original bytes>`, holding the same zstd frame as a local blob. Endpoint, region and
//! credentials are taken, for each value, from the first of: the config's `[s3]` table, the standard
//! `AWS_ENDPOINT_URL`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! (and `AWS_SESSION_TOKEN`) variables, and a credentials file in the AWS `[default]` format, which must not be
//! readable by group or others ([`Settings::credentials_file`]). No credentials at all means unsigned
//! (anonymous) requests, never a probe of a cloud metadata service.
//!
//! # Failure
//! Requests are retried twice within 10 s and connecting gives up after 5 s: an outage must fail an ingest
//! quickly (the mail waits in the spool, nothing is lost), not hang a command for minutes. Every error says
//! which of *unreachable*, *no such bucket* or *access denied* it was when the answer tells.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore as _, PutMode, PutOptions, PutPayload, RetryConfig};
use quarantine_store::{ObjectInfo, PutOutcome};

/// Everything that can go wrong before a request is made: the URL, the settings, the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blobs = {url:?}: {why} (expected s3://BUCKET or s3://BUCKET/PREFIX)")]
    BadUrl { url: String, why: &'static str },
    #[error("credentials file {path}: {why}")]
    Credentials { path: PathBuf, why: String },
    #[error("object store {url}: {why}")]
    Client { url: String, why: String },
}

/// `s3://bucket/prefix`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// The key prefix without a trailing slash; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, Error> {
        let bad = |why| Error::BadUrl { url: url.to_string(), why };
        let rest = url.strip_prefix("s3://").ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules, short form: what a path-style URL can carry unescaped.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad("the bucket name must be 3-63 characters of a-z, 0-9, '-' and '.'"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|seg| seg == "." || seg == "..") || prefix.contains("//") {
            return Err(bad("the prefix must not contain empty, '.' or '..' segments"));
        }
        Ok(S3Url { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}/", self.bucket)
        } else {
            write!(f, "s3://{}/{}/", self.bucket, self.prefix)
        }
    }
}

/// The S3 settings of the config's `[s3]` table; every field falls back to the standard environment variable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// An AWS-format credentials file (`[default]` with `aws_access_key_id`, `aws_secret_access_key`), used
    /// when neither the table nor the environment gives a key. Refused when group or others can read it.
    pub credentials_file: Option<PathBuf>,
}

/// Resolved credentials.
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads `[default]`'s keys from an AWS-format credentials file, refusing one that group or others can read.
pub fn read_credentials_file(path: &Path) -> Result<(String, String), Error> {
    let err = |why: String| Error::Credentials { path: path.to_path_buf(), why };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "is readable by group or others (mode {mode:04o}); make it readable only by the store's owner: chmod 600 {}",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let (mut section, mut id, mut secret) = (String::new(), None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if section == "default" {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(err("has no [default] section with aws_access_key_id and aws_secret_access_key".into())),
    }
}

impl Settings {
    fn keys(&self) -> Result<Option<Keys>, Error> {
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            return Ok(Some(Keys { id: id.clone(), secret: secret.clone(), token: None }));
        }
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Some(Keys { id, secret, token: env("AWS_SESSION_TOKEN") }));
        }
        match &self.credentials_file {
            Some(path) => read_credentials_file(path).map(|(id, secret)| Some(Keys { id, secret, token: None })),
            None => Ok(None),
        }
    }
}

/// A bucket (and prefix) on an S3-compatible server: the blobs of a store.
pub struct S3Store {
    url: S3Url,
    endpoint: String,
    client: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).field("endpoint", &self.endpoint).finish()
    }
}

/// How long a request may take before the store gives up on it (a 64 MiB batch is many small objects).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl S3Store {
    /// Builds the client (no request is made: [`quarantine_store::ObjectStore::probe`] connects).
    pub fn new(url: &str, settings: &Settings) -> Result<S3Store, Error> {
        let url = S3Url::parse(url)?;
        let endpoint =
            settings.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL_S3")).or_else(|| env("AWS_ENDPOINT_URL"));
        let region = settings
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let client_err = |why: String| Error::Client { url: url.to_string(), why };
        let options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_allow_http(endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
        let retry = RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(10), ..Default::default() };
        // Build from an empty builder, not from_env(): the environment is read above, once, by name.
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(&region)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
        }
        match settings.keys()? {
            Some(k) => {
                b = b.with_access_key_id(k.id).with_secret_access_key(k.secret);
                if let Some(t) = k.token {
                    b = b.with_token(t);
                }
            }
            // Without this the client would ask an EC2 metadata service for credentials, which off EC2 hangs.
            None => b = b.with_skip_signature(true),
        }
        let client = b.build().map_err(|e| client_err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quarantine-s3")
            .enable_all()
            .build()
            .map_err(|e| client_err(format!("cannot start the I/O runtime: {e}")))?;
        let endpoint = endpoint.unwrap_or_else(|| format!("AWS S3 {region}"));
        Ok(S3Store { url, endpoint, client, runtime })
    }

    /// [`S3Store::new`] as the `Arc<dyn ObjectStore>` a store is opened with.
    pub fn shared(url: &str, settings: &Settings) -> Result<Arc<dyn quarantine_store::ObjectStore>, Error> {
        Ok(Arc::new(S3Store::new(url, settings)?))
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.url.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.url.prefix))
        }
    }

    fn fail(&self, op: &'static str, name: &str, e: &object_store::Error) -> quarantine_store::Error {
        quarantine_store::Error::ObjectStore {
            store: quarantine_store::ObjectStore::describe(self),
            op,
            name: name.to_string(),
            detail: explain(e),
        }
    }

    fn info(&self, meta: object_store::ObjectMeta) -> ObjectInfo {
        let key = meta.location.to_string();
        let name = match self.url.prefix.is_empty() {
            true => key,
            false => key.strip_prefix(&format!("{}/", self.url.prefix)).unwrap_or(&key).to_string(),
        };
        ObjectInfo { name, size: meta.size, e_tag: meta.e_tag, last_modified: SystemTime::from(meta.last_modified) }
    }
}

/// One line saying what went wrong and what to do: the class first when the answer tells it, then the detail.
fn explain(e: &object_store::Error) -> String {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_text = s.to_string();
        if !chain.contains(&s_text) {
            chain.push_str(": ");
            chain.push_str(&s_text);
        }
        src = s.source();
    }
    let class = if chain.contains("NoSuchBucket") {
        "no such bucket (create it, or fix the bucket name in `blobs`)"
    } else if matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
        || chain.contains("AccessDenied")
        || chain.contains("SignatureDoesNotMatch")
        || chain.contains("InvalidAccessKeyId")
        || chain.contains("403 Forbidden")
    {
        "access denied (check the access key and secret, and the bucket's policy)"
    } else if chain.contains("error sending request")
        || chain.contains("onnection refused")
        || chain.contains("dns error")
        || chain.contains("timed out")
        || chain.contains("connect")
    {
        "unreachable (is the endpoint right and the server up?)"
    } else {
        "failed"
    };
    format!("{class}: {}", chain.replace('\n', " "))
}

impl quarantine_store::ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("{} at {}", self.url, self.endpoint)
    }

    fn url_of(&self, name: &str) -> String {
        format!("{}{name}", self.url)
    }

    fn put_create_only(&self, name: &str, bytes: &[u8]) -> quarantine_store::Result<PutOutcome> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let payload = PutPayload::from(bytes.to_vec());
        match self.runtime.block_on(self.client.put_opts(&self.key(name), payload, opts)) {
            Ok(_) => Ok(PutOutcome::Created),
            // A 412 on If-None-Match: * (object_store maps it to AlreadyExists) means someone was first.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(PutOutcome::AlreadyThere)
            }
            Err(e) => Err(self.fail("put", name, &e)),
        }
    }

    fn put_overwrite(&self, name: &str, bytes: &[u8]) -> quarantine_store::Result<()> {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.client.put(&self.key(name), payload))
            .map(|_| ())
            .map_err(|e| self.fail("put", name, &e))
    }

    fn get(&self, name: &str) -> quarantine_store::Result<Option<Vec<u8>>> {
        let key = self.key(name);
        let got = self.runtime.block_on(async {
            let r = self.client.get(&key).await?;
            r.bytes().await
        });
        match got {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("get", name, &e)),
        }
    }

    fn head(&self, name: &str) -> quarantine_store::Result<Option<ObjectInfo>> {
        match self.runtime.block_on(self.client.head(&self.key(name))) {
            Ok(m) => Ok(Some(self.info(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("head", name, &e)),
        }
    }

    fn delete(&self, name: &str) -> quarantine_store::Result<()> {
        match self.runtime.block_on(self.client.delete(&self.key(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("delete", name, &e)),
        }
    }

    fn list(&self) -> quarantine_store::Result<Vec<ObjectInfo>> {
        let prefix = (!self.url.prefix.is_empty()).then(|| ObjectPath::from(self.url.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.client.list(prefix.as_ref()).try_collect())
            .map_err(|e| self.fail("list", "", &e))?;
        Ok(metas.into_iter().map(|m| self.info(m)).collect())
    }

    fn probe(&self) -> quarantine_store::Result<()> {
        let prefix = (!self.url.prefix.is_empty()).then(|| ObjectPath::from(self.url.prefix.as_str()));
        // list_with_delimiter is one ListObjectsV2 page: enough to prove the endpoint, bucket and keys work.
        self.runtime
            .block_on(self.client.list_with_delimiter(prefix.as_ref()))
            .map(|_| ())
            .map_err(|e| self.fail("list", "", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(S3Url::parse("s3://mail-q/gw1/").unwrap(), S3Url { bucket: "mail-q".into(), prefix: "gw1".into() });
        assert_eq!(S3Url::parse("s3://mail-q").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://mail-q/a/b").unwrap().to_string(), "s3://mail-q/a/b/");
        for bad in ["http://x/y", "s3://", "s3://UP", "s3://ab", "s3://mail-q/a//b", "s3://mail-q/../x"] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "[other]\naws_access_key_id = X\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_credentials_file(&p).unwrap_err().to_string();
        assert!(e.contains("readable by group or others") && e.contains("creds"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_credentials_file(&p).unwrap(), ("AK".into(), "SK".into()));
        std::fs::write(&p, "[default]\naws_access_key_id = AK\n").unwrap();
        assert!(read_credentials_file(&p).unwrap_err().to_string().contains("no [default] section"));
    }
}
