//! The spool (DESIGN section 4): one self-checking file per acknowledged message not yet ingested.
//!
//! `hold` writes `spool/.<random>.tmp` (O_EXCL, 0600, the store's owner), fsyncs it, renames it to
//! `spool/<id>.<random>` and fsyncs `spool/`; only then does it print the id. It never opens the index, so a
//! locked, migrating or damaged index never delays or fails an intake. `ingest` moves spool files into blobs and
//! rows in batches ([`crate::ingest`]).
//!
//! # Format, version 1 (docs/storage.md has the same table)
//! All integers little-endian.
//!
//! | offset          | size | field                                                                  |
//! |-----------------|------|------------------------------------------------------------------------|
//! | 0               | 8    | magic `QSPOOL\r\n`                                                     |
//! | 8               | 2    | format version, `1` or `2` (see below)                                 |
//! | 10              | 2    | flags, `0` (bit 0 would mean a compressed body; none is written)       |
//! | 12              | 4    | `H`, length of the header record                                       |
//! | 16              | H    | header record: a JSON object ([`SpoolHeader`]), UTF-8                  |
//! | 16+H            | B    | the original bytes, exactly as they arrived                            |
//! | 16+H+B          | 8    | `B`, the byte count of the original                                    |
//! | 24+H+B          | 32   | BLAKE3 of the original bytes                                           |
//! | 56+H+B          | 32   | BLAKE3 of bytes 0..16+H (prefix and header record)                     |
//! | 88+H+B          | 8    | first 8 bytes of the BLAKE3 of the 72 trailer bytes before it          |
//! | 96+H+B          | 8    | end marker `QSPEND\r\n`                                                |
//!
//! A reader knows a file is complete without trusting its size: the end marker must be there, the trailer must
//! check, and `16 + H + B + 88` must be the file's length; the header and the body are then checked against
//! their hashes. The body is streamed, never read into memory whole.
//!
//! Version 2 is version 1 with one more optional key in the header record, `scan` ([`ScanMeta`]: a filter's
//! action, score and symbols, from `serve`). It is written only when there is scan metadata, so `hold`'s files
//! stay version 1; this reader accepts both (a version 1 file has no `scan`). A reader that knows only version 1
//! moves a version 2 file to `spool/bad/` (never deleting it) instead of dropping the metadata silently.
//!
//! The id is in the header, but with `--queue-id` it is derived from the BLAKE3 of the bytes, known only at EOF:
//! the header is written with a placeholder id (the `id` key is serialised first, so it sits at a fixed offset)
//! and patched before the fsync: in the write buffer when the whole file fits in it (most messages: one write),
//! else in place in the file.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::durable::{self, Owner};
use crate::error::{Error, Result};
use crate::hold::{self, HoldOutcome, HoldRequest};
use crate::ids;
use crate::store::{now_us, INDEX_FILE};

pub const SPOOL_DIR: &str = "spool";
pub const BAD_DIR: &str = "bad";
pub const MAGIC: [u8; 8] = *b"QSPOOL\r\n";
pub const END: [u8; 8] = *b"QSPEND\r\n";
pub const VERSION: u16 = 1;
/// The version of a file whose header carries [`ScanMeta`].
pub const VERSION_SCAN: u16 = 2;
pub const PREFIX_LEN: u64 = 16;
pub const TRAILER_LEN: u64 = 88;
/// The byte offset of the id's first character inside the header record: `{"id":"` is 7 bytes.
const ID_OFFSET: u64 = 7;
const ID_PLACEHOLDER: &str = "@@@@@@@@@@";
/// The header record is small; anything larger is not one of ours.
const MAX_HEADER: u32 = 1 << 20;

/// The header record of a spool file: everything the index row needs that is not in the bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpoolHeader {
    /// The id printed by hold (first key: see the module docs).
    pub id: String,
    pub received_us: i64,
    /// Envelope sender, normalised (`""` for the null sender).
    pub from: String,
    pub recipients: Vec<String>,
    pub verdict: String,
    pub scanner: Option<String>,
    pub reason: Option<String>,
    pub queue_id: Option<String>,
    /// The uid `hold` ran as.
    pub uid: u32,
    /// Added after format 1 shipped: absent in older files (`null` when unknown).
    #[serde(default)]
    pub scanner_version: Option<String>,
    /// Version 2 only: what the filter said besides the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanMeta>,
}

/// A filter's own findings, kept beside the verdict (rspamd's action, score and symbols, as it sent them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// rspamd's list of symbol objects (`name`, `score`, `options`, ...), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<serde_json::Value>,
}

impl ScanMeta {
    pub fn is_empty(&self) -> bool {
        self.action.is_none() && self.score.is_none() && self.symbols.is_none()
    }
}

/// A spool file written, fsynced and renamed into place, whose directory entry is not yet fsynced
/// ([`Spool::stage`]): not durable, not to be acknowledged until [`Spool::sync_dir`] returned `Ok`.
#[derive(Debug)]
pub struct Staged {
    pub outcome: HoldOutcome,
    path: PathBuf,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes back a file that will not be acknowledged (its directory fsync failed), best effort: the MTA's
    /// retry is then the only copy; if the unlink does not stick, ingest indexes it (a duplicate beats a loss).
    pub fn discard(self) {
        durable::remove_quietly(&self.path);
    }
}

/// Why a spool file does not check. Never a reason to delete it: it moves to `spool/bad/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadReason {
    /// Shorter than a prefix and a trailer, or no end marker: the file was cut.
    Truncated,
    BadMagic,
    UnknownVersion(u16),
    /// The trailer's own checksum fails.
    BadTrailer,
    /// Prefix, header and body lengths do not add up to the file's length.
    LengthMismatch {
        expected: u64,
        actual: u64,
    },
    HeaderChecksum,
    /// The header checks but is not a header record this version understands.
    BadHeader(String),
    HashMismatch,
}

impl BadReason {
    /// A short stable name, for JSON and the `.reason` file's first word.
    pub fn code(&self) -> &'static str {
        match self {
            BadReason::Truncated => "truncated",
            BadReason::BadMagic => "bad-magic",
            BadReason::UnknownVersion(_) => "unknown-version",
            BadReason::BadTrailer => "bad-trailer",
            BadReason::LengthMismatch { .. } => "length-mismatch",
            BadReason::HeaderChecksum => "header-checksum",
            BadReason::BadHeader(_) => "bad-header",
            BadReason::HashMismatch => "hash-mismatch",
        }
    }
}

impl std::fmt::Display for BadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadReason::Truncated => write!(f, "truncated: no end marker"),
            BadReason::BadMagic => write!(f, "bad magic: not a quarantine spool file"),
            BadReason::UnknownVersion(v) => write!(f, "unknown spool format version {v}"),
            BadReason::BadTrailer => write!(f, "trailer checksum mismatch"),
            BadReason::LengthMismatch { expected, actual } => {
                write!(f, "length mismatch: the trailer says {expected} bytes, the file has {actual}")
            }
            BadReason::HeaderChecksum => write!(f, "header checksum mismatch"),
            BadReason::BadHeader(why) => write!(f, "unreadable header record: {why}"),
            BadReason::HashMismatch => write!(f, "hash mismatch: the bytes do not match the trailer's BLAKE3"),
        }
    }
}

/// A spool file whose prefix, trailer, lengths and header check (the body is checked while it is read).
#[derive(Clone, Debug)]
pub struct Checked {
    pub header: SpoolHeader,
    pub body_offset: u64,
    pub body_len: u64,
    pub body_hash: [u8; 32],
}

impl Checked {
    pub fn hash_hex(&self) -> String {
        blake3::Hash::from(self.body_hash).to_hex().to_string()
    }
}

/// Opens a spool file and checks everything but the body's hash. `Ok(Err(reason))` for a file that does not
/// check; `Err` only for an I/O error (which says nothing about the file's content).
pub fn open_checked(path: &Path) -> io::Result<std::result::Result<(File, Checked), BadReason>> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    if file_len < PREFIX_LEN {
        return Ok(Err(BadReason::Truncated));
    }
    let mut prefix = [0u8; PREFIX_LEN as usize];
    f.read_exact_at(&mut prefix, 0)?;
    if prefix[0..8] != MAGIC {
        return Ok(Err(BadReason::BadMagic));
    }
    let version = u16::from_le_bytes([prefix[8], prefix[9]]);
    if version != VERSION && version != VERSION_SCAN {
        return Ok(Err(BadReason::UnknownVersion(version)));
    }
    if file_len < PREFIX_LEN + TRAILER_LEN {
        return Ok(Err(BadReason::Truncated));
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    f.read_exact_at(&mut trailer, file_len - TRAILER_LEN)?;
    if trailer[80..88] != END {
        return Ok(Err(BadReason::Truncated));
    }
    if blake3::hash(&trailer[..72]).as_bytes()[..8] != trailer[72..80] {
        return Ok(Err(BadReason::BadTrailer));
    }
    let header_len = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes"));
    let body_len = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    let expected = PREFIX_LEN.saturating_add(header_len as u64).saturating_add(body_len).saturating_add(TRAILER_LEN);
    if expected != file_len || header_len > MAX_HEADER {
        return Ok(Err(BadReason::LengthMismatch { expected, actual: file_len }));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact_at(&mut header, PREFIX_LEN)?;
    let mut h = blake3::Hasher::new();
    h.update(&prefix);
    h.update(&header);
    if h.finalize().as_bytes()[..] != trailer[40..72] {
        return Ok(Err(BadReason::HeaderChecksum));
    }
    let header: SpoolHeader = match serde_json::from_slice(&header) {
        Ok(h) => h,
        Err(e) => return Ok(Err(BadReason::BadHeader(e.to_string()))),
    };
    let body_hash: [u8; 32] = trailer[8..40].try_into().expect("32 bytes");
    let checked = Checked { header, body_offset: PREFIX_LEN + header_len as u64, body_len, body_hash };
    Ok(Ok((f, checked)))
}

/// The body of a checked spool file as a reader (bounded to its length).
pub fn body_reader(mut f: File, c: &Checked) -> io::Result<io::Take<File>> {
    f.seek(SeekFrom::Start(c.body_offset))?;
    Ok(f.take(c.body_len))
}

/// Checks a whole spool file, the body's hash included, streaming it in 64 KiB pieces.
pub fn check_file(path: &Path) -> io::Result<std::result::Result<Checked, BadReason>> {
    let (f, c) = match open_checked(path)? {
        Ok(x) => x,
        Err(r) => return Ok(Err(r)),
    };
    let mut body = body_reader(f, &c)?;
    let mut hasher = blake3::Hasher::new();
    let n = io::copy(&mut body, &mut HashWriter(&mut hasher))?;
    if n != c.body_len || hasher.finalize().as_bytes() != &c.body_hash {
        return Ok(Err(BadReason::HashMismatch));
    }
    Ok(Ok(c))
}

struct HashWriter<'a>(&'a mut blake3::Hasher);
impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The id of a delivery with an MTA queue id: the same queue id, sender and bytes give the same id, so an MTA
/// retry lands on the same message.
pub fn derived_id(queue_id: &str, from: &str, hash: &[u8; 32]) -> String {
    let mut h = blake3::Hasher::new_derive_key("quarantine 2026 hold id v1");
    h.update(&(queue_id.len() as u64).to_le_bytes());
    h.update(queue_id.as_bytes());
    h.update(&(from.len() as u64).to_le_bytes());
    h.update(from.as_bytes());
    h.update(hash);
    ids::from_digest(h.finalize().as_bytes())
}

/// The `k`-th fresh id of a spool file whose own id is taken by another message (for ingest): derived from the
/// file's identity, so ingesting the same file again after a crash lands on the same row.
pub fn fresh_id(id: &str, received_us: i64, hash: &str, k: u32) -> String {
    let mut h = blake3::Hasher::new_derive_key("quarantine 2026 fresh id v1");
    h.update(id.as_bytes());
    h.update(&received_us.to_le_bytes());
    h.update(hash.as_bytes());
    h.update(&k.to_le_bytes());
    ids::from_digest(h.finalize().as_bytes())
}

/// The spool of a store, for `hold` (no index connection).
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
    owner: Owner,
    /// Bytes every write leaves free ([`Spool::set_reserve`]); shared by clones, so `serve` can change it on a
    /// reload while its sessions write.
    reserve: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One pending spool file, as listed.
#[derive(Clone, Debug)]
pub struct Pending {
    pub path: PathBuf,
    pub len: u64,
    pub modified: SystemTime,
}

/// One file in `spool/bad/` with what its `.reason` file says.
#[derive(Clone, Debug, Serialize)]
pub struct BadEntry {
    pub path: PathBuf,
    pub reason: String,
}

/// The backlog, for stats and check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Backlog {
    pub pending: u64,
    pub bytes: u64,
    /// Seconds since the oldest pending file was spooled; null when none is pending.
    pub oldest_age_s: Option<f64>,
    pub bad: u64,
}

impl Spool {
    /// The spool of the store at `root`, checked the way `hold` may: `index.sqlite` must exist and be a non-empty
    /// file (stat only: the index is never opened). Creates `spool/` and `spool/bad/` if missing (a store made by
    /// an earlier version).
    pub fn open(root: &Path) -> Result<Spool> {
        let index = root.join(INDEX_FILE);
        match fs::metadata(&index) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) => return Err(crate::store::permission_hint(e, &index)),
        }
        let owner = Owner::of(root)?;
        let spool = Spool::new(root, owner);
        // One stat in the common case (`spool/bad/` there means `spool/` is too); two mkdirs and two stats only
        // for a store made by an earlier version, or a damaged one (ensure_dirs then says what is wrong).
        if !fs::metadata(spool.bad_dir()).is_ok_and(|m| m.is_dir()) {
            spool.ensure_dirs()?;
        }
        Ok(spool)
    }

    pub(crate) fn new(root: &Path, owner: Owner) -> Spool {
        Spool { dir: root.join(SPOOL_DIR), owner, reserve: Default::default() }
    }

    /// Keeps `bytes` free on the spool's filesystem (`min_free_space`; 0: none): a write that would leave less
    /// fails with [`Error::LowSpace`] and leaves nothing behind. Ingest needs that room to stage the blobs of what
    /// was acknowledged before it may unlink the spool files (it sizes its batches to it): a spool that filled the
    /// filesystem to the last byte holds mail that cannot be indexed until someone frees space.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fails when the filesystem has less than the reserve free. A statvfs that fails is not a reason to refuse
    /// mail: the write that follows reports the real problem.
    fn keep_reserve(&self) -> Result<()> {
        let reserve = self.reserve.load(std::sync::atomic::Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        match durable::available_space(&self.dir) {
            Ok(free) if free < reserve => Err(Error::LowSpace { dir: self.dir.clone(), free, reserve }),
            _ => Ok(()),
        }
    }

    pub(crate) fn ensure_dirs(&self) -> Result<()> {
        durable::ensure_dir(&self.dir, &self.owner)?;
        durable::ensure_dir(&self.bad_dir(), &self.owner)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bad_dir(&self) -> PathBuf {
        self.dir.join(BAD_DIR)
    }

    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Writes one message to the spool (the steps of DESIGN section 4). Returns once the file is renamed into
    /// place and `spool/` is fsynced: the caller may acknowledge.
    pub fn hold(&self, req: &HoldRequest, input: &mut dyn Read) -> Result<HoldOutcome> {
        self.write(req, input).map(|(out, _)| out)
    }

    /// [`Spool::hold`], also returning the spool file's path.
    pub(crate) fn write(&self, req: &HoldRequest, input: &mut dyn Read) -> Result<(HoldOutcome, PathBuf)> {
        let staged = self.stage(req, None, input)?;
        if let Err(e) = self.sync_dir() {
            staged.discard();
            return Err(e);
        }
        Ok((staged.outcome, staged.path))
    }

    /// fsyncs `spool/`: every file [`Spool::stage`]d before this call is durable once it returns `Ok`. Concurrent
    /// intakes share it (`serve`'s group commit).
    pub fn sync_dir(&self) -> Result<()> {
        durable::fsync_dir(&self.dir)
    }

    /// The first steps of a hold: write the file, fsync it, rename it into place. Not durable until
    /// [`Spool::sync_dir`]; on its failure the caller [`Staged::discard`]s the file.
    pub fn stage(&self, req: &HoldRequest, scan: Option<&ScanMeta>, input: &mut dyn Read) -> Result<Staged> {
        let env = hold::validate(req)?;
        // Checked before writing (nothing is written on a full filesystem) and again once the file is complete
        // (a large message, or many at once, may have taken the rest).
        self.keep_reserve()?;
        let random_id = req.queue_id.is_none().then(ids::new_id);
        let mut header = SpoolHeader {
            id: random_id.clone().unwrap_or_else(|| ID_PLACEHOLDER.to_string()),
            received_us: now_us(),
            from: env.from.clone(),
            recipients: env.recipients.clone(),
            verdict: req.verdict.trim().to_string(),
            scanner: req.scanner.clone(),
            reason: req.reason.clone(),
            queue_id: req.queue_id.clone(),
            uid: rustix::process::getuid().as_raw(),
            scanner_version: req.scanner_version.clone(),
            scan: scan.filter(|s| !s.is_empty()).cloned(),
        };
        let tmp = self.dir.join(format!(".{:016x}.tmp", rand::random::<u64>()));
        let file = durable::create_new(&tmp, &self.owner)?;
        let mut guard = RemoveOnDrop(Some(tmp.clone()));
        let mut json = serde_json::to_vec(&header).expect("a header serialises");
        debug_assert_eq!(&json[ID_OFFSET as usize..ID_OFFSET as usize + ids::ID_LEN], header.id.as_bytes());
        let mut prefix = [0u8; PREFIX_LEN as usize];
        prefix[0..8].copy_from_slice(&MAGIC);
        let version = if header.scan.is_some() { VERSION_SCAN } else { VERSION };
        prefix[8..10].copy_from_slice(&version.to_le_bytes());
        prefix[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());

        // One 64 KiB buffer (a pipe's worth, below malloc's mmap threshold): the prefix and header record, then
        // the bytes as they arrive, written out whenever it is full. Most messages are then one write(2) with the
        // id patched in the buffer; a longer one gets the id patched in place with one pwrite(2) at the end.
        const BUF: usize = 64 * 1024;
        let mut file = file;
        let mut buf: Vec<u8> = Vec::with_capacity(BUF.max(PREFIX_LEN as usize + json.len()));
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(&json);
        let mut header_written = false;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        loop {
            if buf.len() >= BUF {
                file.write_all(&buf).map_err(Error::io("write", &tmp))?;
                buf.clear();
                header_written = true;
            }
            let (start, room) = (buf.len(), (BUF - buf.len()) as u64);
            // Reads until the buffer is full or EOF (retrying EINTR), into its spare capacity.
            Read::take(&mut *input, room).read_to_end(&mut buf).map_err(Error::Input)?;
            let n = (buf.len() - start) as u64;
            hasher.update(&buf[start..]);
            size += n;
            if n < room {
                break; // EOF
            }
        }
        let hash = *hasher.finalize().as_bytes();
        if random_id.is_none() {
            header.id = derived_id(req.queue_id.as_deref().unwrap_or(""), &env.from, &hash);
            let at = ID_OFFSET as usize;
            json[at..at + ids::ID_LEN].copy_from_slice(header.id.as_bytes());
            if !header_written {
                let at = (PREFIX_LEN + ID_OFFSET) as usize;
                buf[at..at + ids::ID_LEN].copy_from_slice(header.id.as_bytes());
            }
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        trailer[0..8].copy_from_slice(&size.to_le_bytes());
        trailer[8..40].copy_from_slice(&hash);
        let mut h = blake3::Hasher::new();
        h.update(&prefix);
        h.update(&json);
        trailer[40..72].copy_from_slice(h.finalize().as_bytes());
        let check = blake3::hash(&trailer[..72]);
        trailer[72..80].copy_from_slice(&check.as_bytes()[..8]);
        trailer[80..88].copy_from_slice(&END);
        buf.extend_from_slice(&trailer);
        file.write_all(&buf).map_err(Error::io("write", &tmp))?;
        if random_id.is_none() && header_written {
            file.write_all_at(header.id.as_bytes(), PREFIX_LEN + ID_OFFSET).map_err(Error::io("write", &tmp))?;
        }
        durable::fsync_file(&file, &tmp)?;
        drop(file);
        self.keep_reserve()?;
        let name = format!("{}.{:016x}", header.id, rand::random::<u64>());
        let path = self.dir.join(&name);
        durable::rename(&tmp, &path)?;
        // Disarmed, not forgotten: mem::forget leaked the path (~60 bytes a message, for ever in serve).
        guard.0 = None;
        let out =
            HoldOutcome { id: header.id, hash: blake3::Hash::from(hash).to_hex().to_string(), size, duplicate: false };
        Ok(Staged { outcome: out, path })
    }

    /// The entries of `spool/`; none when it does not exist yet (a store from before the spool).
    fn entries(&self) -> Result<Vec<fs::DirEntry>> {
        match fs::read_dir(&self.dir) {
            Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(Error::io("list", &self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("list", &self.dir)(e)),
        }
    }

    /// Pending spool files (names not starting with `.`), oldest first.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        for entry in self.entries()? {
            if entry.file_name().as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue }; // gone meanwhile: ingested by another process
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(Pending { path: entry.path(), len: meta.len(), modified });
        }
        out.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.path.cmp(&b.path)));
        Ok(out)
    }

    /// Temp files of holds that never finished (killed, or failed), older than `age`.
    pub fn stale_tmp(&self, age: Duration) -> Result<Vec<PathBuf>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for entry in self.entries()? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.ends_with(".tmp")) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() >= age {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Files in `spool/bad/` (not the `.reason` files), each with its reason.
    pub fn bad(&self) -> Result<Vec<BadEntry>> {
        let dir = self.bad_dir();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.ends_with(".reason") {
                continue;
            }
            let reason = fs::read_to_string(dir.join(format!("{name}.reason")))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "no .reason file".into());
            out.push(BadEntry { path: entry.path(), reason });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Moves a spool file that does not check into `spool/bad/`, with `<name>.reason` next to it (written first,
    /// so a crash between the two leaves the file in `spool/` to be checked again). Never deletes anything.
    pub fn quarantine_bad(&self, path: &Path, reason: &BadReason) -> Result<PathBuf> {
        let bad = self.bad_dir();
        durable::ensure_dir(&bad, &self.owner)?;
        let name = path.file_name().expect("a spool file has a name").to_string_lossy().to_string();
        let text = format!("{}: {}\n", reason.code(), reason);
        durable::write_file_atomic(&bad, &format!("{name}.reason"), text.as_bytes(), &self.owner)?;
        let to = bad.join(&name);
        durable::rename(path, &to)?;
        durable::fsync_dir(&bad)?;
        durable::fsync_dir(&self.dir)?;
        Ok(to)
    }

    pub fn backlog(&self) -> Result<Backlog> {
        let pending = self.pending()?;
        let now = SystemTime::now();
        Ok(Backlog {
            pending: pending.len() as u64,
            bytes: pending.iter().map(|p| p.len).sum(),
            oldest_age_s: pending.first().map(|p| now.duration_since(p.modified).unwrap_or_default().as_secs_f64()),
            bad: self.bad()?.len() as u64,
        })
    }
}

/// For `quarantine check`: a file can be created, written, fsynced and removed in `spool/` (what a hold does),
/// and the oldest pending spool file is younger than `max_age` (else ingest is not running). One line on failure.
pub fn check(root: &Path, max_age: Duration) -> std::result::Result<Backlog, String> {
    let spool = Spool::open(root).map_err(|e| e.to_string())?;
    let probe = spool.dir.join(format!(".check.{:016x}.tmp", rand::random::<u64>()));
    let written = durable::create_new(&probe, &spool.owner).and_then(|mut f| {
        f.write_all(b"quarantine check\n").map_err(Error::io("write", &probe))?;
        durable::fsync_file(&f, &probe)
    });
    let removed = durable::remove_file(&probe);
    written.and(removed).map_err(|e| format!("cannot write a file in {}: {e}", spool.dir.display()))?;
    let backlog = spool.backlog().map_err(|e| e.to_string())?;
    if let Some(age) = backlog.oldest_age_s.filter(|&a| a > max_age.as_secs_f64()) {
        return Err(format!(
            "{}: {} message(s) wait in the spool, the oldest for {}s, longer than spool_max_age {}s \
             (is `quarantine ingest` running?)",
            spool.dir.display(),
            backlog.pending,
            age.round(),
            max_age.as_secs()
        ));
    }
    Ok(backlog)
}

/// Removes a temp file on every path that does not rename it (a failed write, an input error).
struct RemoveOnDrop(Option<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            durable::remove_quietly(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("s");
        crate::Store::init(&root).unwrap();
        (d, root)
    }

    fn req(qid: Option<&str>) -> HoldRequest {
        HoldRequest {
            from: "a@b.example".into(),
            recipients: vec!["c@d.example".into()],
            verdict: "SPAM".into(),
            queue_id: qid.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_every_reason() {
        let (_d, root) = store();
        let sp = Spool::open(&root).unwrap();
        let out = sp.hold(&req(Some("Q1")), &mut &b"Subject: x\r\n\r\nbody\r\n"[..]).unwrap();
        let again = sp.hold(&req(Some("Q1")), &mut &b"Subject: x\r\n\r\nbody\r\n"[..]).unwrap();
        assert_eq!(out.id, again.id, "a retry gets the same id");
        let files = sp.pending().unwrap();
        assert_eq!(files.len(), 2);
        let path = &files[0].path;
        let c = check_file(path).unwrap().unwrap();
        assert_eq!(c.header.id, out.id);
        assert_eq!(c.hash_hex(), out.hash);
        let bytes = fs::read(path).unwrap();
        let bad = |b: &[u8]| {
            let p = root.join("x");
            fs::write(&p, b).unwrap();
            check_file(&p).unwrap().unwrap_err()
        };
        assert_eq!(bad(b""), BadReason::Truncated);
        assert_eq!(bad(&bytes[..bytes.len() - 1]), BadReason::Truncated);
        assert_eq!(bad(b"garbage garbage garbage"), BadReason::BadMagic);
        let mut v = bytes.clone();
        v[8] = 9;
        assert_eq!(bad(&v), BadReason::UnknownVersion(9));
        let body_at = c.body_offset as usize;
        let mut v = bytes.clone();
        v[body_at + 2] ^= 1;
        assert_eq!(bad(&v), BadReason::HashMismatch);
        let mut v = bytes.clone();
        v[PREFIX_LEN as usize + 20] ^= 1;
        assert_eq!(bad(&v), BadReason::HeaderChecksum);
        let mut v = bytes.clone();
        v.insert(body_at, b'x');
        assert!(matches!(bad(&v), BadReason::LengthMismatch { .. }));
        let mut v = bytes.clone();
        let n = v.len();
        v[n - 30] ^= 1;
        assert_eq!(bad(&v), BadReason::BadTrailer);
        let r = sp.hold(&req(None), &mut &b"x"[..]).unwrap();
        assert_ne!(r.id, out.id);
        assert_eq!(r.id.len(), ids::ID_LEN);
    }
}
