//! Every durable filesystem write of the store goes through here, so one fsync discipline applies everywhere:
//! create with 0600/0700, fsync the file, rename, fsync the directory. An fsync error is returned, never retried:
//! after a failed fsync the kernel may have dropped the dirty pages, so a second fsync that succeeds proves nothing.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// The uid and gid every file in the store must carry, so that an admin command run as root never leaves a file
/// the MTA's account cannot open (DESIGN section 2).
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn of(path: &Path) -> Result<Owner> {
        let meta = fs::metadata(path).map_err(Error::io("stat", path))?;
        Ok(Owner { uid: meta.uid(), gid: meta.gid() })
    }

    /// Gives `path` to this owner if it is not already theirs. Only root can do that; anyone else who created a
    /// file under another account's store gets a clear error instead of a store the MTA cannot write. A file the
    /// owner already owns is left alone when not root: files are 0600 and directories 0700, so the group is
    /// irrelevant, and the store directory's group need not be one of the owner's groups (`install -d -o USER`).
    pub fn apply(&self, path: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(path).map_err(Error::io("stat", path))?;
        if meta.uid() == self.uid && (meta.gid() == self.gid || !rustix::process::geteuid().is_root()) {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).map_err(|e| Error::Io {
            op: "chown to the store's owner (run this command as the store's owner or as root)",
            path: path.to_path_buf(),
            source: e,
        })
    }
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(Error::io("open directory", dir))?;
    f.sync_all().map_err(Error::io("fsync directory", dir))
}

/// Creates `dir` (mode 0700, given to `owner`) if missing and makes its entry durable in the parent (the new
/// directory's own entries are made durable by whoever puts something in it: `publish` fsyncs the blob's
/// directory after the rename). Returns whether it was created.
pub fn ensure_dir(dir: &Path, owner: &Owner) -> Result<bool> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            owner.apply(dir)?;
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if fs::metadata(dir).map_err(Error::io("stat", dir))?.is_dir() {
                Ok(false)
            } else {
                Err(Error::Io {
                    op: "expected a directory",
                    path: dir.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
                })
            }
        }
        Err(e) => Err(Error::io("create directory", dir)(e)),
    }
}

/// Creates a new file that must not exist yet (O_EXCL), mode 0600.
pub fn create_new(path: &Path, owner: &Owner) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(Error::io("create", path))?;
    owner.apply(path)?;
    Ok(f)
}

pub fn fsync_file(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(Error::io("fsync", path))
}

/// fsyncs many directories on several threads at once: a directory fsync on ext4 mostly waits for a journal
/// commit and a cache flush, which concurrent callers share. The first error fails the whole call (never retried).
pub fn fsync_dirs_parallel<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>) -> Result<()> {
    const WORKERS: usize = 16;
    let dirs: Vec<&PathBuf> = dirs.into_iter().collect();
    if dirs.len() <= 1 {
        return dirs.iter().try_for_each(|d| fsync_dir(d));
    }
    let per = dirs.len().div_ceil(WORKERS);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            dirs.chunks(per).map(|chunk| s.spawn(move || chunk.iter().try_for_each(|d| fsync_dir(d)))).collect();
        handles.into_iter().try_for_each(|h| h.join().expect("fsync worker panicked"))
    })
}

/// Bytes available to an unprivileged user on the filesystem holding `path`.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Renames without fsyncing the directory, for a caller that renames many entries of one directory and fsyncs it
/// once afterwards ([`fsync_dir`]).
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(Error::io("rename", to))
}

/// Writes one small file atomically and durably: `dir/.<name>.<random>.tmp`, fsync, rename to `dir/name`
/// (replacing an older file of that name), fsync `dir`.
pub fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8], owner: &Owner) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut f = create_new(&tmp, owner)?;
    let written = f.write_all(bytes).map_err(Error::io("write", &tmp)).and_then(|()| fsync_file(&f, &tmp));
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let to = dir.join(name);
    fs::rename(&tmp, &to).map_err(Error::io("rename into place", &to))?;
    fsync_dir(dir)
}

/// Removes a file; one that is already gone is not an error. The directory is not fsynced: every caller removes
/// something whose reappearance after a crash is harmless (a spool file already ingested is ingested again as a
/// no-op).
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// Opens (creating it 0600 if missing) a lock file and takes an exclusive `flock` on it. With `wait` false,
/// returns `None` when another process holds it. The lock goes with the returned file.
pub fn lock_file(path: &Path, owner: &Owner, wait: bool) -> Result<Option<File>> {
    use rustix::fs::{flock, FlockOperation};
    let f = match OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path) {
        Ok(f) => {
            owner.apply(path)?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).write(true).open(path).map_err(Error::io("open", path))?
        }
        Err(e) => return Err(Error::io("create", path)(e)),
    };
    let op = if wait { FlockOperation::LockExclusive } else { FlockOperation::NonBlockingLockExclusive };
    match flock(&f, op) {
        Ok(()) => Ok(Some(f)),
        Err(e) if !wait && e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(Error::io("lock", path)(e.into())),
    }
}

/// Unlinks `path` and hands back the raw error, for callers that count or classify failures (purge's GC goes on
/// after one and reports it). The directory is not fsynced: the caller fsyncs each touched directory once.
pub fn unlink(path: &Path) -> std::io::Result<()> {
    fs::remove_file(path)
}

/// Best-effort cleanup of a file this process created and will not acknowledge (a temp file on an error path):
/// whatever is left behind is reported by verify and swept by purge after its grace period.
pub fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Creates a directory and its parents with the default mode (a store's root: `init` checks it is empty before
/// [`make_private`] touches its mode, so it never changes someone else's directory).
pub fn create_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).create(dir).map_err(Error::io("create directory", dir))
}

/// Makes a directory 0700.
pub fn make_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(Error::io("chmod", dir))
}

/// Creates a directory outside the store for files handed to a person (export's `--to`), 0700 with parents.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(Error::io("create directory", dir))
}

/// Creates a new file (O_EXCL, 0600) outside the store, keeping the caller's owner: export's files belong to
/// whoever exported them. The raw error lets the caller tell "name taken" from a failure.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// Replaces a small cache file (`dir/name`) through a temp file and a rename, without fsync: a crash may lose or
/// keep the old value, both harmless for a cache, and a hold must not pay an fsync for it.
pub fn replace_volatile(dir: &Path, name: &str, bytes: &[u8], owner: &Owner) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut f = create_new(&tmp, owner)?;
    if let Err(e) = f.write_all(bytes) {
        drop(f);
        remove_quietly(&tmp);
        return Err(Error::io("write", &tmp)(e));
    }
    drop(f);
    rename(&tmp, &dir.join(name))
}
