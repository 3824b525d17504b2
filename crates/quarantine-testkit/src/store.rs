//! A scratch store: a [`Scratch`] directory with `store/` made by `quarantine init`, and runs of the binary on it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::env::{require, Scratch};
use crate::gen::{copy_tree, is_id, walk_files};
use crate::run::{run, Input, Out, HANG};

/// A store in its own scratch directory. Derefs to its [`Scratch`] (`work()`, `file()`, `program()`...); the
/// store's own `cmd`/`q`/`run` put `--store ROOT` first, `scratch.cmd` does not.
pub struct Store {
    pub scratch: Scratch,
    pub root: PathBuf,
}

impl Deref for Store {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.scratch
    }
}

impl Store {
    /// `quarantine --store SCRATCH/store init`, asserted.
    pub fn new(bin: impl AsRef<Path>) -> Store {
        Store::new_in(bin, None)
    }

    /// A store under `parent` (e.g. a small mounted filesystem), or under the system temp dir.
    pub fn new_in(bin: impl AsRef<Path>, parent: Option<&Path>) -> Store {
        let scratch = Scratch::new_in(bin, parent);
        let root = scratch.path().join("store");
        let s = Store { scratch, root };
        s.q(&["init"]).code_is(0, "init");
        s
    }

    /// A byte-for-byte copy of `template`'s store (modes kept) in a new scratch directory, so every case of a
    /// sweep starts from the same state. The template must be at rest. On a shared index the copy gets a clone of
    /// the template's database (the same index id, so the copied local marker accepts it) and the template's
    /// config with that database in `index`.
    pub fn copy_of(template: &Store) -> Store {
        let scratch = Scratch::new(&template.scratch.bin);
        let root = scratch.path().join("store");
        copy_tree(&template.root, &root);
        if let Some(conninfo) = template.shared_index() {
            let clone = crate::postgres::clone_database(&conninfo);
            let config = std::fs::read_to_string(template.scratch.config()).unwrap();
            let config = config.replace(&format!("index = \"{conninfo}\""), &format!("index = \"{clone}\""));
            std::fs::write(scratch.config(), config).unwrap();
        }
        Store { scratch, root }
    }

    pub fn index(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }

    /// `--store ROOT REST...` as arguments, for wrappers (strace, faketime, setpriv) that run the binary.
    pub fn args<S: AsRef<OsStr>>(&self, rest: &[S]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--store".into(), self.root.clone().into()];
        v.extend(rest.iter().map(|a| a.as_ref().to_os_string()));
        v
    }

    /// `quarantine --store ROOT ARGS...`, hermetic.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.scratch.cmd(&self.args(args))
    }

    /// Runs `quarantine --store ROOT ARGS...` with `input`.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], input: Input) -> Out {
        run(self.cmd(args), input, HANG)
    }

    /// Runs `quarantine --store ROOT ARGS...` with an empty stdin.
    pub fn q<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        self.run(args, Input::Null)
    }

    /// `quarantine hold ARGS...` with `msg` on stdin.
    pub fn hold<S: AsRef<OsStr>>(&self, msg: &[u8], args: &[S]) -> Out {
        let mut full: Vec<OsString> = vec!["hold".into()];
        full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self.run(&full, Input::Bytes(msg))
    }

    /// `hold ARGS...` with `msg` on stdin as if it ran `ago` in the past (`2h`, `30d`): faketime shifts the clock
    /// hold stamps the spool file with. (Debian package `faketime`.)
    pub fn hold_aged<S: AsRef<OsStr>>(&self, ago: &str, msg: &[u8], args: &[S]) -> Out {
        let mut full: Vec<OsString> = vec!["hold".into()];
        full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let mut c = self.program(require("faketime", "faketime"));
        c.args(["-f", &format!("-{ago}")]).arg(&self.bin).args(self.args(&full));
        run(c, Input::Bytes(msg), HANG)
    }

    /// Holds `msg` with `args` (after `hold`); asserts exit 0, an empty stderr and an id on stdout; returns it.
    #[track_caller]
    pub fn hold_ok<S: AsRef<OsStr>>(&self, msg: &[u8], args: &[S]) -> String {
        let out = self.hold(msg, args);
        out.code_is(0, "hold");
        assert!(out.stderr.is_empty(), "hold succeeded but wrote to stderr: {:?}", out.stderr);
        let text = out.text();
        let id = text.strip_suffix('\n').expect("the id ends with a newline");
        assert!(is_id(id), "hold printed {id:?}, not an id");
        id.to_string()
    }

    /// `show ID --json`, asserted and parsed.
    #[track_caller]
    pub fn show_json(&self, id: &str) -> serde_json::Value {
        let out = self.q(&["show", id, "--json"]);
        out.code_is(0, &format!("show {id} --json"));
        serde_json::from_slice(&out.stdout).expect("show --json prints one JSON object")
    }

    /// `show ID --raw`, asserted.
    #[track_caller]
    pub fn raw(&self, id: &str) -> Vec<u8> {
        let out = self.q(&["show", id, "--raw"]);
        out.code_is(0, &format!("show {id} --raw"));
        out.stdout
    }

    /// Asserts `verify --deep` exits 0: no live row's blob is missing or corrupt (orphans and temp files allowed).
    #[track_caller]
    pub fn verify_deep_clean(&self, what: &str) {
        self.q(&["verify", "--deep"]).code_is(0, &format!("{what}: verify --deep"));
    }

    /// The sqlite3 shell on the index (with a 10 s busy timeout), hermetic.
    pub fn sqlite3(&self) -> Command {
        let mut c = self.scratch.program(require("sqlite3", "sqlite3"));
        c.args(["-batch", "-cmd", ".timeout 10000"]).arg(self.index());
        c
    }

    /// Runs `sql` on the index through its engine's own shell (not through the code under test): sqlite3, or psql
    /// when the store's config names a PostgreSQL `index` (QUARANTINE_TEST_INDEX=postgres); the outcome unchecked.
    /// Both print rows as `a|b` lines.
    pub fn sqlite(&self, sql: &str) -> Out {
        if let Some(conninfo) = self.shared_index() {
            let mut c = self.scratch.program(std::path::Path::new(crate::postgres::BIN).join("psql"));
            c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &conninfo, "-c", sql]);
            return run(c, Input::Null, HANG);
        }
        let mut c = self.sqlite3();
        c.arg(sql);
        run(c, Input::Null, HANG)
    }

    /// Runs `sql` on the index through its engine's own shell, as [`Store::sql`] does, and splits its rows into
    /// fields (a unit separator between them, so `|` or a tab in a value stays in its field). NULL is "".
    #[track_caller]
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        const SEP: &str = "\u{1f}";
        let out = match self.shared_index() {
            Some(conninfo) => {
                let mut c = self.scratch.program(std::path::Path::new(crate::postgres::BIN).join("psql"));
                c.args(["-X", "-q", "-A", "-t", "-F", SEP, "-v", "ON_ERROR_STOP=1", "-d", &conninfo, "-c", sql]);
                run(c, Input::Null, HANG)
            }
            None => {
                let mut c = self.sqlite3();
                c.args(["-separator", SEP]).arg(sql);
                run(c, Input::Null, HANG)
            }
        };
        out.code_is(0, &format!("the index's shell: {sql}"));
        out.text().lines().map(|l| l.split(SEP).map(str::to_string).collect()).collect()
    }

    /// Replaces the scratch config every run reads with `text`, keeping its `index` line (a store on a shared
    /// index cannot open without it).
    pub fn set_config(&self, text: &str) {
        let index = self.shared_index().map(|u| format!("index = \"{u}\"\n")).unwrap_or_default();
        std::fs::write(self.scratch.config(), format!("{index}{text}")).unwrap();
    }

    /// The conninfo of the shared index the scratch config names, if it names one.
    pub fn shared_index(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.scratch.config()).ok()?;
        text.lines().find_map(|l| Some(l.strip_prefix("index = \"")?.strip_suffix('"')?.to_string()))
    }

    /// Runs `sql` through the sqlite3 shell, asserting success; stdout trimmed.
    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        let out = self.sqlite(sql);
        out.code_is(0, &format!("sqlite3 {sql}"));
        out.text().trim().to_string()
    }

    /// One number from the index, through the sqlite3 shell, after an `ingest`: hold writes only the spool
    /// (DESIGN section 4), so what it acknowledged is indexed before rows are counted.
    #[track_caller]
    pub fn sql_count(&self, sql: &str) -> u64 {
        self.ingest();
        self.sql(sql).parse().unwrap_or_else(|e| panic!("sqlite3 {sql}: not a count: {e}"))
    }

    /// `quarantine ingest`, asserted: every spool file acknowledged so far is in the index afterwards.
    #[track_caller]
    pub fn ingest(&self) {
        self.q(&["ingest"]).code_is(0, "ingest");
    }

    /// `SELECT count(*) FROM messages`.
    pub fn messages(&self) -> u64 {
        self.sql_count("SELECT count(*) FROM messages")
    }

    /// Takes the index's write lock in another process and returns once that process confirmed it holds it.
    pub fn lock_index(&self) -> IndexLock {
        IndexLock::take(self)
    }

    /// Every regular file under `blobs/`, sorted.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_files(&self.root.join("blobs"), &mut out);
        out
    }

    /// Every file under `tmp/`, sorted.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_files(&self.root.join("tmp"), &mut out);
        out
    }

    /// The pending spool files (`spool/`, regular files whose names do not start with `.`: not a hold's temp
    /// file, not the ingest lock), sorted. What hold acknowledged and ingest has not taken yet.
    pub fn spool_files(&self) -> Vec<PathBuf> {
        let dir = self.root.join("spool");
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut v: Vec<PathBuf> = rd
            .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && !e.file_name().as_encoded_bytes().starts_with(b"."))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    /// The names in `spool/bad/` (damaged spool files and their `.reason` files), sorted.
    pub fn bad_files(&self) -> Vec<String> {
        let dir = self.root.join("spool/bad");
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut v: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Where DESIGN section 2 says the blob of `hash` lives.
    pub fn blob_path(&self, hash: &str) -> PathBuf {
        blob_path(&self.root, hash)
    }

    /// The blob file of a held message (its hash from `show --json`).
    pub fn blob_of(&self, id: &str) -> PathBuf {
        let v = self.show_json(id);
        self.blob_path(v["hash"].as_str().expect("a hash"))
    }
}

/// `STORE/blobs/ab/cd/<hash>`.
pub fn blob_path(store: &Path, hash: &str) -> PathBuf {
    store.join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(hash)
}

/// A shell holding the index's write lock until dropped: sqlite3 with `BEGIN IMMEDIATE` and a write to
/// `settings`, or on a shared index psql holding the writers' advisory lock (`db/pg.rs`) in an open transaction.
/// [`IndexLock::take`] returns only once the lock is held (the shell printed so, or PostgreSQL shows it granted),
/// so a test never races it. Dropping closes its stdin: the shell exits and its transaction rolls back.
pub struct IndexLock {
    child: Child,
}

/// The writers' advisory lock of a shared index ('QRNT', `crates/quarantine-store/src/db/pg.rs`).
pub const PG_WRITE_LOCK: i64 = 0x5152_4e54;

impl IndexLock {
    pub fn take(store: &Store) -> IndexLock {
        if let Some(conninfo) = store.shared_index() {
            return IndexLock::take_pg(store, &conninfo);
        }
        let mut c = store.sqlite3();
        c.arg("-bail").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("start sqlite3");
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(
                b"BEGIN IMMEDIATE;\nINSERT OR REPLACE INTO settings (key, value) VALUES ('testkit-lock', '1');\n.print testkit-locked\n",
            )
            .unwrap();
        stdin.flush().unwrap();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the sqlite3 locker exited without taking the write lock: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if line.trim() == "testkit-locked" {
                break;
            }
        }
        IndexLock { child }
    }

    fn take_pg(store: &Store, conninfo: &str) -> IndexLock {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name =
            format!("testkit-lock-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let psql = Path::new(crate::postgres::BIN).join("psql");
        let mut c = store.scratch.program(&psql);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &format!("{conninfo} application_name={name}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("start psql");
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; SELECT pg_advisory_xact_lock({PG_WRITE_LOCK});").unwrap();
        stdin.flush().unwrap();
        let granted = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' \
             AND l.objid = {PG_WRITE_LOCK} AND l.objsubid = 1 AND l.granted AND a.application_name = '{name}'"
        );
        crate::run::wait_for(HANG, "psql to hold the writers' lock", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the psql locker exited ({status}) without taking the writers' lock");
            }
            store.sql(&granted) == "1"
        });
        IndexLock { child }
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
