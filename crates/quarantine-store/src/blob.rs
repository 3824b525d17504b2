//! Content-addressed blobs: `blobs/ab/cd/<64 hex>` holds one zstd frame (content checksum on) of the original
//! bytes, named by the BLAKE3 of those original bytes, so `zstd -d < blob` gives the message back and the
//! compression level never changes an identity. New blobs are staged in `tmp/` under a random name (two holds of
//! the same bytes never share a temp file), fsynced, and renamed into place by [`BlobStore::publish`], which the
//! caller runs inside its index write transaction.
//!
//! With a remote object store ([`crate::BlobLocation::Remote`]) the blobs are objects named the same way, staged
//! in the same local `tmp/`: [`BlobStore::prepare`] uploads each one from a staging thread with a create-only PUT
//! (an object already there is kept only if it decompresses to the right size and hash, else the good bytes
//! replace it), and [`BlobStore::publish_checked`], under the index write lock, confirms with a HEAD that the
//! object is still there (purge's GC deletes under that lock, so a confirmed object stays until the commit).
//! The staging file needs no fsync then: durability is the object store's acknowledgement.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;

use crate::durable::{self, Owner};
use crate::error::{Error, Result};
use crate::objects::{ObjectStore, PutOutcome};

/// zstd level 3 is zstd's default: good ratio on mail at a few hundred MB/s, so compression is never the
/// bottleneck of a hold that waits on two fsyncs anyway.
const ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    owner: Owner,
    /// The object store holding the blobs instead of `blobs/`, when the store is configured so.
    remote: Option<Arc<dyn ObjectStore>>,
    /// How long after its last upload an object is safe from purge's GC ([`BlobStore::set_upload_grace`]).
    upload_grace: std::time::Duration,
}

/// The default of [`BlobStore::upload_grace`]: the same 24 h as the orphan grace.
const UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A blob written and fsynced under `tmp/`, not yet visible under `blobs/`.
#[derive(Debug)]
pub struct StagedBlob {
    pub hash: String,
    pub size: u64,
    /// The first bytes of the message, kept for header parsing (bounded, see [`BlobStore::stage`]).
    pub prefix: Vec<u8>,
    tmp_path: PathBuf,
    /// The temp file while it is not yet fsynced ([`BlobStore::stage_unsynced`]); `None` once it is durable.
    unsynced: Option<File>,
    /// Uploaded by [`BlobStore::prepare`] to the object store: `Some(replaced)`, where `replaced` says an existing
    /// object did not check and the good bytes replaced it.
    uploaded: Option<bool>,
}

impl StagedBlob {
    /// Makes a blob staged by [`BlobStore::stage_unsynced`] durable. Uses the descriptor that wrote the data, so
    /// a writeback error is reported here and never missed by a fresh open. A no-op if already synced.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(file) = self.unsynced.take() {
            durable::fsync_file(&file, &self.tmp_path)?;
        }
        Ok(())
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        // After a successful publish the temp name no longer exists; on any failure path this removes our
        // staging file. Best effort: a leftover is reported by verify and swept by purge after a grace period.
        durable::remove_quietly(&self.tmp_path);
    }
}

impl BlobStore {
    pub fn new(root: &Path, owner: Owner) -> BlobStore {
        BlobStore { blobs: root.join("blobs"), tmp: root.join("tmp"), owner, remote: None, upload_grace: UPLOAD_GRACE }
    }

    /// The same store with its blobs in `remote` instead of `blobs/`.
    pub fn with_remote(mut self, remote: Arc<dyn ObjectStore>) -> BlobStore {
        self.remote = Some(remote);
        self
    }

    /// The object store holding the blobs, if they are not under `blobs/`.
    pub fn remote(&self) -> Option<&Arc<dyn ObjectStore>> {
        self.remote.as_ref()
    }

    /// Objects uploaded more recently than this are never deleted by purge's GC: an ingest on another gateway
    /// may have found the object there (a create-only PUT that changed nothing) and be about to commit a row.
    pub fn set_upload_grace(&mut self, grace: std::time::Duration) {
        self.upload_grace = grace;
    }

    pub fn upload_grace(&self) -> std::time::Duration {
        self.upload_grace
    }

    /// Where the blob named `hash` lives, for messages: its path, or its object's URL.
    pub fn location_of(&self, hash: &str) -> PathBuf {
        match &self.remote {
            Some(r) => PathBuf::from(r.url_of(hash)),
            None => self.path_of(hash),
        }
    }

    pub fn owner(&self) -> Owner {
        self.owner
    }

    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.blobs.join(&hash[0..2]).join(&hash[2..4]).join(hash)
    }

    pub fn exists(&self, hash: &str) -> Result<bool> {
        if let Some(r) = &self.remote {
            return Ok(r.head(hash)?.is_some());
        }
        let p = self.path_of(hash);
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", p)(e)),
        }
    }

    /// Streams `input` to EOF into a new temp file, hashing the original bytes and compressing them as they
    /// arrive, then fsyncs the file. Keeps up to `keep_prefix` leading bytes in memory for header parsing, so a
    /// 20 MB message never sits in memory whole.
    pub fn stage(&self, input: &mut dyn Read, keep_prefix: usize) -> Result<StagedBlob> {
        let mut staged = self.stage_unsynced(input, keep_prefix)?;
        staged.sync()?;
        Ok(staged)
    }

    /// Like [`BlobStore::stage`] but leaves the fsync to [`StagedBlob::sync`], for a caller (import) that first
    /// checks whether the message is already held and then drops the temp file without ever paying for an fsync.
    /// [`BlobStore::publish`] syncs a blob that is still unsynced, so nothing reaches `blobs/` undurable.
    pub fn stage_unsynced(&self, input: &mut dyn Read, keep_prefix: usize) -> Result<StagedBlob> {
        let name: u64 = rand::thread_rng().gen();
        let tmp_path = self.tmp.join(format!("{name:016x}.{}.tmp", std::process::id()));
        let file = durable::create_new(&tmp_path, &self.owner)?;
        let mut staged =
            StagedBlob { hash: String::new(), size: 0, prefix: Vec::new(), tmp_path, unsynced: None, uploaded: None };

        let mut enc = zstd::stream::Encoder::new(BufWriter::with_capacity(128 * 1024, file), ZSTD_LEVEL)
            .map_err(Error::io("start compressing", &staged.tmp_path))?;
        enc.include_checksum(true).map_err(Error::io("configure zstd", &staged.tmp_path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Input(e)),
            };
            let chunk = &buf[..n];
            hasher.update(chunk);
            if staged.prefix.len() < keep_prefix {
                let take = (keep_prefix - staged.prefix.len()).min(n);
                staged.prefix.extend_from_slice(&chunk[..take]);
            }
            enc.write_all(chunk).map_err(Error::io("write", &staged.tmp_path))?;
            staged.size += n as u64;
        }
        let file = enc
            .finish()
            .map_err(Error::io("write", &staged.tmp_path))?
            .into_inner()
            .map_err(|e| Error::io("write", &staged.tmp_path)(e.into_error()))?;
        staged.unsynced = Some(file);
        staged.hash = hasher.finalize().to_hex().to_string();
        Ok(staged)
    }

    /// Makes a staged blob visible under its hash name: drops the temp file if that blob already exists (dedup),
    /// else renames it into place; either way fsyncs the blob's directory, so a blob left by a hold that failed
    /// before its own directory fsync is made durable before anyone acknowledges it. Must run while the caller
    /// holds the index write lock, so that purge's GC cannot unlink the blob between this check and the commit.
    pub fn publish(&self, staged: StagedBlob) -> Result<()> {
        match self.publish_checked(staged)? {
            (Some(dir), _) => durable::fsync_dir(&dir),
            (None, _) => Ok(()),
        }
    }

    /// Whether the blob already stored under `hash` decompresses to `size` bytes that hash to its name, so a new
    /// row may reference it (DESIGN section 4: a corrupt existing blob is never trusted, it is replaced by the good
    /// bytes). An I/O error other than corruption is returned: it says nothing about the content.
    pub(crate) fn existing_is_intact(&self, hash: &str, size: u64) -> Result<bool> {
        match self.stream_verified(hash, &mut io::sink()) {
            Ok(n) => Ok(n == size),
            Err(Error::CorruptBlob { .. } | Error::MissingBlob { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes a staged blob visible under its hash name without the final directory fsync, for a batch writer
    /// that renames many blobs and then fsyncs each distinct returned directory once, before its commit (`None`:
    /// nothing to fsync, the blob is in the object store). Also says whether an existing blob was replaced: one
    /// already in place is kept only if it checks; a corrupt one is replaced by the staged good bytes, never
    /// trusted. The temp file is fsynced first if it is not yet. Must run under the index write lock.
    pub fn publish_checked(&self, mut staged: StagedBlob) -> Result<(Option<PathBuf>, bool)> {
        if let Some(remote) = &self.remote {
            let replaced = match staged.uploaded {
                Some(replaced) => {
                    // Uploaded outside the lock: a purge's GC may have deleted a same-content object we found
                    // there since. It deletes only under this lock, so what this HEAD sees stays until our commit.
                    if remote.head(&staged.hash)?.is_none() {
                        self.upload(&mut staged)?;
                    }
                    replaced
                }
                None => self.upload(&mut staged)?,
            };
            return Ok((None, replaced));
        }
        let final_path = self.path_of(&staged.hash);
        let dir = final_path.parent().expect("blob path has a parent").to_path_buf();
        let exists = self.exists(&staged.hash)?;
        if exists && self.existing_is_intact(&staged.hash, staged.size)? {
            return Ok((Some(dir), false)); // StagedBlob's Drop removes the temp file
        }
        // Missing, or present but corrupt: the good bytes take the name (rename replaces a corrupt file atomically).
        staged.sync()?;
        durable::ensure_dir(dir.parent().expect("two levels"), &self.owner)?;
        durable::ensure_dir(&dir, &self.owner)?;
        durable::rename(&staged.tmp_path, &final_path)?;
        staged.tmp_path = PathBuf::new();
        Ok((Some(dir), exists))
    }

    /// [`BlobStore::publish_checked`] of many blobs at once, for an object store: the HEADs (and any re-upload)
    /// run on up to 16 threads, so the write lock is held for a few round trips, not one per blob. Returns how
    /// many existing objects were replaced.
    pub fn publish_all(&self, staged: Vec<StagedBlob>) -> Result<u64> {
        if staged.is_empty() {
            return Ok(0);
        }
        let jobs = staged.len().clamp(1, 16);
        let work = std::sync::Mutex::new(staged);
        let results: Vec<Result<u64>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..jobs)
                .map(|_| {
                    s.spawn(|| {
                        let mut replaced = 0;
                        while let Some(b) = work.lock().expect("no poisoned queue").pop() {
                            replaced += self.publish_checked(b)?.1 as u64;
                        }
                        Ok(replaced)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a publishing thread panicked")).collect()
        });
        results.into_iter().sum()
    }

    /// The staging threads' last step for a blob: locally, fsync it and create its fan-out directories
    /// ([`BlobStore::prepare_dirs`]); with an object store, upload it ([`BlobStore::publish_checked`] then only
    /// confirms it under the lock), so the uploads of a batch run in parallel and outside the lock.
    pub fn prepare(&self, staged: &mut StagedBlob) -> Result<()> {
        if self.remote.is_some() {
            self.upload(staged).map(|_| ())
        } else {
            staged.sync()?;
            self.prepare_dirs(&staged.hash)
        }
    }

    /// Create-only PUT of a staged blob; an object already under its name is kept only if it decompresses to
    /// the staged size and hash, else the staged bytes replace it (they are, by their name, the right ones).
    /// The check is on content, not on the stored bytes' size or ETag: another gateway's zstd may compress the
    /// same message differently, and that object is as good as ours. Returns whether it replaced one.
    fn upload(&self, staged: &mut StagedBlob) -> Result<bool> {
        let remote = self.remote.as_ref().expect("upload only with an object store");
        let bytes = fs::read(&staged.tmp_path).map_err(Error::io("read", &staged.tmp_path))?;
        let replaced = match remote.put_create_only(&staged.hash, &bytes)? {
            PutOutcome::Created => false,
            PutOutcome::AlreadyThere => {
                if self.existing_is_intact(&staged.hash, staged.size)? {
                    false
                } else {
                    remote.put_overwrite(&staged.hash, &bytes)?;
                    true
                }
            }
        };
        staged.uploaded = Some(replaced);
        Ok(replaced)
    }

    /// Creates the fan-out directories `blobs/ab/` and `blobs/ab/cd/` of `hash` if missing, durably (each new
    /// directory fsynced with its parent). Harmless outside the index write lock (an empty directory is not a
    /// blob, and nothing removes fan-out directories), so a batch writer runs it on its staging threads, where
    /// the fsyncs of many threads share journal commits, instead of one after another under the lock.
    pub fn prepare_dirs(&self, hash: &str) -> Result<()> {
        let final_path = self.path_of(hash);
        let dir = final_path.parent().expect("blob path has a parent");
        durable::ensure_dir(dir.parent().expect("two levels"), &self.owner)?;
        durable::ensure_dir(dir, &self.owner)?;
        Ok(())
    }

    /// Reads a whole blob back, checking it against its name. Corrupt or truncated data is an error and is never
    /// returned as if it were the original.
    pub fn read_verified(&self, hash: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.stream_verified(hash, &mut out)?;
        Ok(out)
    }

    /// [`BlobStore::read_verified`] for a blob whose original size is known (the index has it): the compressed
    /// file is read in one piece and decompressed straight into a buffer of that size, then hashed in one call,
    /// with no intermediate copies. Any surprise (a size that does not match, a bad frame) is left to
    /// [`BlobStore::read_verified`], whose errors say what is wrong.
    pub fn read_verified_sized(&self, hash: &str, size: u64) -> Result<Vec<u8>> {
        if let (Ok(compressed), Ok(size)) = (std::fs::read(self.path_of(hash)), usize::try_from(size)) {
            // One decompression context per thread: making one per message (zstd's tables, ~100 KB zeroed) cost
            // more than a small message's decompression.
            thread_local! {
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let out = DCTX.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                d.as_mut().map(|d| d.decompress(&compressed, size))
            });
            if let Some(Ok(out)) = out {
                if out.len() == size && blake3::hash(&out).to_hex().as_str() == hash {
                    return Ok(out);
                }
            }
        }
        self.read_verified(hash)
    }

    /// Decompresses a blob into `out` while hashing it; returns the original size. The caller must not trust
    /// what reached `out` unless this returns Ok (use [`BlobStore::read_verified`] when bytes go to a person).
    pub fn stream_verified(&self, hash: &str, out: &mut dyn Write) -> Result<u64> {
        if let Some(r) = &self.remote {
            let Some(bytes) = r.get(hash)? else {
                return Err(Error::MissingBlob { hash: hash.to_string(), path: self.location_of(hash) });
            };
            return verify_into(&bytes[..], hash, out);
        }
        let path = self.path_of(hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob { hash: hash.to_string(), path })
            }
            Err(e) => return Err(Error::io("open", path)(e)),
        };
        verify_into(file, hash, out)
    }
}

/// Decompresses one stored blob from `stored` into `out` while hashing it; returns the original size, or
/// [`Error::CorruptBlob`] when it does not decompress to bytes that hash to `hash`.
fn verify_into(stored: impl Read, hash: &str, out: &mut dyn Write) -> Result<u64> {
    let corrupt = |detail: String| Error::CorruptBlob { hash: hash.to_string(), detail };
    let mut dec = zstd::stream::Decoder::new(stored).map_err(|e| corrupt(e.to_string()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(format!("decompression failed: {e}"))),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(Error::Output)?;
        size += n as u64;
    }
    let got = hasher.finalize().to_hex();
    if got.as_str() != hash {
        return Err(corrupt(format!("content hashes to {got}")));
    }
    Ok(size)
}

/// True for a 64-character lowercase hex string, the only names allowed under `blobs/`.
pub fn is_hash(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-piece read used by release agrees with the streaming one: the bytes when the blob is sound (even
    /// with a wrong size hint), and the streaming read's errors when it is not.
    #[test]
    fn sized_read_returns_the_original_or_the_same_errors() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["blobs", "tmp"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        let blobs = BlobStore::new(dir.path(), Owner::of(dir.path()).unwrap());
        let original: Vec<u8> = (0..200_000u32).map(|i| b"abc\ndef.\r\n"[(i % 10) as usize]).collect();
        let staged = blobs.stage(&mut &original[..], 0).unwrap();
        let hash = staged.hash.clone();
        blobs.publish(staged).unwrap();
        let n = original.len() as u64;
        assert_eq!(blobs.read_verified_sized(&hash, n).unwrap(), original);
        assert_eq!(blobs.read_verified_sized(&hash, n - 1).unwrap(), original, "too small a hint");
        assert_eq!(blobs.read_verified_sized(&hash, n * 2).unwrap(), original, "too large a hint");

        // Another message's frame under this name: decompresses fine, hashes wrong.
        let path = blobs.path_of(&hash);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, zstd::bulk::compress(&original[1..], 3).unwrap()).unwrap();
        let err = blobs.read_verified_sized(&hash, n - 1).unwrap_err();
        assert!(matches!(err, Error::CorruptBlob { .. }), "{err}");
        fs::write(&path, b"not zstd at all").unwrap();
        let err = blobs.read_verified_sized(&hash, n).unwrap_err();
        assert!(matches!(err, Error::CorruptBlob { .. }), "{err}");
        fs::remove_file(&path).unwrap();
        let err = blobs.read_verified_sized(&hash, n).unwrap_err();
        assert!(matches!(err, Error::MissingBlob { .. }), "{err}");
    }
}
