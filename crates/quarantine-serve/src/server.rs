//! Listeners and sessions: one thread per connection, at most `max_sessions` at once per listener (one more is
//! told `421`/`503` and closed), so a slow or hostile client only ever holds its own thread. The main thread
//! polls the listeners and the signal flags: SIGTERM stops accepting, lets sessions finish what is in flight for
//! `shutdown_grace` (after that they answer 421 and nothing partial is kept), and returns; SIGHUP reloads the
//! config (limits, mapping, token; the listen addresses stay as bound).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quarantine_store::Spool;

use crate::commit::GroupCommit;
use crate::config::{Listen, ServeConfig};

/// A connection of either kind.
pub trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, d)
    }
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, d)
    }
}

/// What every session shares.
pub struct Shared {
    config: RwLock<Arc<ServeConfig>>,
    pub commit: GroupCommit,
    stopping: AtomicBool,
    grace_until: Mutex<Option<Instant>>,
    /// Whether the HTTP listener is bound to loopback or a unix socket (no token needed then, unless set).
    pub http_local: bool,
    /// Numbers LMTP/SMTP sessions for the log, so an admin can tell which messages shared a connection (Postfix
    /// reuses LMTP connections: one session, many transactions).
    sessions: AtomicU64,
}

impl Shared {
    pub fn config(&self) -> Arc<ServeConfig> {
        self.config.read().expect("config lock").clone()
    }

    /// The next session's number (1, 2, ...): unique for the life of the process.
    pub fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// SIGTERM's grace for in-flight messages is over.
    pub fn past_grace(&self) -> bool {
        self.stopping() && self.grace_until.lock().expect("grace").is_some_and(|t| Instant::now() >= t)
    }
}

enum Listener {
    Unix(UnixListener, std::path::PathBuf),
    Tcp(TcpListener),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lmtp,
    Http,
}

fn bind(l: &Listen) -> Result<Listener, String> {
    match l {
        Listen::Unix(p) => {
            // A socket left by a killed serve: connect to it; if nobody answers it is stale and goes.
            if std::fs::symlink_metadata(p).is_ok() {
                if UnixStream::connect(p).is_ok() {
                    return Err(format!("{}: another serve is listening there", p.display()));
                }
                std::fs::remove_file(p).map_err(|e| format!("{}: cannot remove the stale socket: {e}", p.display()))?;
            }
            let u = UnixListener::bind(p).map_err(|e| format!("{}: cannot listen: {e}", p.display()))?;
            // The MTA (postfix's lmtp, another user) must be able to connect; the directory's mode restricts.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666));
            Ok(Listener::Unix(u, p.clone()))
        }
        Listen::Tcp(a) => TcpListener::bind(a).map(Listener::Tcp).map_err(|e| format!("{a}: cannot listen: {e}")),
    }
}

/// Runs until SIGTERM (or SIGINT). `reload` gives the config again for SIGHUP (an error keeps the old one).
pub fn run(
    cfg: ServeConfig,
    store: &std::path::Path,
    reload: Box<dyn Fn() -> Result<ServeConfig, String> + Send>,
) -> Result<(), String> {
    if let Some(p) = cfg.problems().into_iter().next() {
        return Err(p);
    }
    if cfg.lmtp.is_none() && cfg.http.is_none() {
        return Err("nothing to listen on: give --lmtp and/or --http (or serve.lmtp / serve.http)".into());
    }
    let spool = Spool::open(store).map_err(|e| e.to_string())?;
    spool.set_reserve(cfg.reserve);
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("signal handler: {e}"))?;
    let mut listeners: Vec<(Listener, Kind, String)> = Vec::new();
    if let Some(l) = &cfg.lmtp {
        listeners.push((bind(l)?, Kind::Lmtp, l.to_string()));
    }
    if let Some(l) = &cfg.http {
        listeners.push((bind(l)?, Kind::Http, l.to_string()));
    }
    let sh = Arc::new(Shared {
        http_local: cfg.http.as_ref().is_none_or(Listen::is_local),
        commit: GroupCommit::new(spool, cfg.commit_delay),
        config: RwLock::new(Arc::new(cfg)),
        stopping: AtomicBool::new(false),
        grace_until: Mutex::new(None),
        sessions: AtomicU64::new(0),
    });
    for (l, _, what) in &listeners {
        match l {
            Listener::Unix(u, _) => u.set_nonblocking(true),
            Listener::Tcp(t) => t.set_nonblocking(true),
        }
        .map_err(|e| format!("{what}: {e}"))?;
        eprintln!(
            "quarantine serve: listening on {what} ({})",
            if matches!(listeners.iter().find(|x| &x.2 == what).map(|x| x.1), Some(Kind::Http)) {
                "http"
            } else {
                "lmtp/smtp"
            }
        );
    }
    let active = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !term.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            match reload().and_then(|c| match c.problems().into_iter().next() {
                Some(p) => Err(p),
                None => Ok(c),
            }) {
                Ok(c) => {
                    sh.commit.spool().set_reserve(c.reserve);
                    *sh.config.write().expect("config lock") = Arc::new(c);
                    eprintln!("quarantine serve: configuration reloaded");
                }
                Err(e) => eprintln!("quarantine serve: reload failed, keeping the old configuration: {e}"),
            }
        }
        wait_readable(&listeners, Duration::from_millis(200));
        for (l, kind, _) in &listeners {
            loop {
                let conn: Box<dyn ConnBox> = match l {
                    Listener::Unix(u, _) => match u.accept() {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => break,
                    },
                    Listener::Tcp(t) => match t.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            Box::new(s)
                        }
                        Err(_) => break,
                    },
                };
                let _ = conn.nonblocking(false);
                let count = active[*kind as usize].clone();
                let (sh, kind) = (sh.clone(), *kind);
                let max = sh.config().limits.max_sessions;
                if count.fetch_add(1, Ordering::SeqCst) >= max {
                    count.fetch_sub(1, Ordering::SeqCst);
                    refuse(conn, kind);
                    continue;
                }
                let spawned = std::thread::Builder::new().name("session".into()).spawn(move || {
                    let _guard = Decrement(count);
                    match kind {
                        Kind::Lmtp => crate::session::Session::new(&sh, conn).run(),
                        Kind::Http => crate::http::serve(&sh, conn),
                    }
                });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => eprintln!("quarantine serve: cannot start a session thread: {e}"),
                }
            }
        }
        threads.retain(|t| !t.is_finished());
    }
    // SIGTERM: stop accepting, let in-flight messages finish, then tempfail what is left.
    let grace = sh.config().limits.shutdown_grace;
    *sh.grace_until.lock().expect("grace") = Some(Instant::now() + grace);
    sh.stopping.store(true, Ordering::SeqCst);
    for (l, _, _) in listeners {
        if let Listener::Unix(_, p) = l {
            let _ = std::fs::remove_file(p);
        }
    }
    eprintln!("quarantine serve: stopping: {} session(s) to finish", threads.len());
    let hard = Instant::now() + grace + Duration::from_secs(2);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < hard {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = sh.commit.stats();
    eprintln!("quarantine serve: stopped ({} commits in {} directory fsyncs)", st.commits, st.rounds);
    Ok(())
}

struct Decrement(Arc<AtomicUsize>);
impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A boxed connection that can also be made blocking again after a non-blocking accept.
pub trait ConnBox: Conn {
    fn nonblocking(&self, on: bool) -> io::Result<()>;
}
impl ConnBox for TcpStream {
    fn nonblocking(&self, on: bool) -> io::Result<()> {
        self.set_nonblocking(on)
    }
}
impl ConnBox for UnixStream {
    fn nonblocking(&self, on: bool) -> io::Result<()> {
        self.set_nonblocking(on)
    }
}
impl Conn for Box<dyn ConnBox> {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        (**self).set_write_timeout(d)
    }
}

fn refuse(mut conn: Box<dyn ConnBox>, kind: Kind) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let msg: &[u8] = match kind {
        Kind::Lmtp => b"421 4.3.2 Too many sessions, try again later\r\n",
        Kind::Http => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 18\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many sessions\n",
    };
    let _ = conn.write_all(msg);
}

fn wait_readable(listeners: &[(Listener, Kind, String)], timeout: Duration) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds: Vec<PollFd> = listeners
        .iter()
        .map(|(l, _, _)| match l {
            Listener::Unix(u, _) => PollFd::new(u, PollFlags::IN),
            Listener::Tcp(t) => PollFd::from_borrowed_fd(t.as_fd(), PollFlags::IN),
        })
        .collect();
    let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as _ };
    let _ = poll(&mut fds, Some(&ts));
}

/// What one read of a session's socket gave.
pub(crate) enum ReadOutcome {
    /// Bytes were appended to the buffer.
    Data,
    /// The peer closed or the socket failed: the session is over.
    Gone,
    /// A read timeout or an interrupted call: check the session's limits and read again.
    Again,
}

/// One read of `s` into `buf` (through `chunk`), the same for the LMTP/SMTP and the HTTP listeners.
pub(crate) fn read_into<R: std::io::Read + ?Sized>(s: &mut R, chunk: &mut [u8], buf: &mut Vec<u8>) -> ReadOutcome {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    match s.read(chunk) {
        Ok(0) => ReadOutcome::Gone,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            ReadOutcome::Data
        }
        Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => ReadOutcome::Again,
        Err(_) => ReadOutcome::Gone,
    }
}
