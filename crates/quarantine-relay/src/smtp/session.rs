//! Opening a session: TCP with `TCP_NODELAY`, implicit TLS or STARTTLS (rustls), the greeting, EHLO (HELO for a
//! relay without ESMTP). [`Conn`] is the open session the transaction runs on.
//!
//! TLS trusts the webpki roots, the system bundle (a private relay's CA is usually installed there) and
//! `$SSL_CERT_FILE`; the handshake is completed before the first command, so a certificate problem is reported as
//! such and not as a lost connection.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use quarantine_store::Down;

use super::reply::{self, Reply};
use crate::url::{RelayUrl, Security};

/// The socket under the session, plain or TLS. One type for both, so the transaction code never asks which.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An open session.
pub(super) struct Conn {
    io: BufReader<Stream>,
    /// EHLO keywords, upper case (`PIPELINING`, `8BITMIME`, `SMTPUTF8`, `STARTTLS`, ...).
    ext: Vec<String>,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn { io: BufReader::with_capacity(16 * 1024, stream), ext: Vec::new() }
    }

    /// Whether the relay offered this EHLO keyword (upper case).
    pub(super) fn has(&self, kw: &str) -> bool {
        self.ext.iter().any(|e| e == kw)
    }

    /// Writes `bytes` and flushes: every call is one command group or one whole message.
    pub(super) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.io.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    pub(super) fn read_reply(&mut self) -> io::Result<Reply> {
        reply::read(&mut self.io)
    }

    /// Sends one command line and reads its reply.
    pub(super) fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Waits up to `limit` for a reply to begin, however short the socket's own timeout (the command timeout):
    /// each time it expires with nothing read, waits again. The final dot's long limit then costs no socket
    /// option set and reset per message. Once a byte is in, the rest of the reply has the command timeout.
    pub(super) fn await_reply(&mut self, limit: Duration) -> io::Result<()> {
        let start = std::time::Instant::now();
        loop {
            match self.io.fill_buf() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
                        && start.elapsed() < limit => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What it takes to open a session to the relay; keeps the TLS configuration across reconnects.
pub(super) struct Dialer {
    pub(super) url: RelayUrl,
    /// Bounds connecting and each command's reply.
    pub(super) timeout: Duration,
    hello: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Trust anchors beyond the system's (tests).
    pub(super) extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The name we give in EHLO: this host's name, or an address literal if it has none.
fn hello_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or_else(|| "[127.0.0.1]".into())
}

/// rustls with the webpki roots, the system bundle (a private relay's CA is usually installed there), the bundle
/// named by `$SSL_CERT_FILE` if set (the OpenSSL convention), and `extra`.
fn tls_config(extra: &[rustls::pki_types::CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut bundles: Vec<std::path::PathBuf> =
        ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"].iter().map(Into::into).collect();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        bundles.push(f.into());
    }
    for bundle in &bundles {
        if let Ok(iter) = CertificateDer::pem_file_iter(bundle) {
            roots.add_parsable_certificates(iter.flatten());
        }
    }
    roots.add_parsable_certificates(extra.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl Dialer {
    pub(super) fn new(url: RelayUrl, timeout: Duration) -> Dialer {
        Dialer { url, timeout, hello: hello_name(), tls: None, extra_roots: Vec::new() }
    }

    fn down(&self, what: &str, e: impl fmt::Display) -> Down {
        Down(format!("relay {}: {what}: {e}", self.url))
    }

    /// Connects, reads the greeting, says EHLO, and upgrades with STARTTLS when the URL asks for it.
    pub(super) fn open(&mut self) -> Result<Conn, Down> {
        let tcp = self.tcp()?;
        let stream = match self.url.security {
            Security::Implicit => self.wrap_tls(tcp)?,
            _ => Stream::Plain(tcp),
        };
        let mut c = Conn::new(stream);
        let greeting = c.read_reply().map_err(|e| self.down("no greeting", e))?;
        if greeting.code != 220 {
            return Err(self.down("refused the session", greeting.text));
        }
        self.ehlo(&mut c)?;
        if self.url.security == Security::StartTls {
            c = self.starttls(c)?;
            self.ehlo(&mut c)?;
        }
        Ok(c)
    }

    /// The first address that answers, with `TCP_NODELAY` and the time limits set.
    fn tcp(&self) -> Result<TcpStream, Down> {
        let addrs: Vec<_> = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| self.down("cannot resolve", e))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| self.down("cannot connect", last))?;
        // Every write is a whole command group or a whole message: never wait for Nagle.
        tcp.set_nodelay(true).map_err(|e| self.down("TCP_NODELAY", e))?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(|e| self.down("socket", e))?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(|e| self.down("socket", e))?;
        Ok(tcp)
    }

    fn wrap_tls(&mut self, tcp: TcpStream) -> Result<Stream, Down> {
        if self.tls.is_none() {
            self.tls = Some(tls_config(&self.extra_roots).map_err(|e| self.down("TLS set-up", e))?);
        }
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(|e| self.down("TLS server name", e))?;
        let conn = rustls::ClientConnection::new(Arc::clone(self.tls.as_ref().expect("set above")), name)
            .map_err(|e| self.down("TLS", e))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // Complete the handshake now, so a certificate problem is reported as such.
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).map_err(|e| self.down("TLS handshake", e))?;
        }
        Ok(Stream::Tls(Box::new(s)))
    }

    /// STARTTLS on a plain session; the caller says EHLO again (RFC 3207: the old keywords are void).
    fn starttls(&mut self, c: Conn) -> Result<Conn, Down> {
        if !c.has("STARTTLS") {
            return Err(self.down("STARTTLS", "not offered (--tls requires it)"));
        }
        let mut c = c;
        let r = c.command("STARTTLS").map_err(|e| self.down("STARTTLS", e))?;
        if r.code != 220 {
            return Err(self.down("STARTTLS refused", r.text));
        }
        // Anything already buffered was sent in plain text after the 220: a command-injection attempt
        // (CVE-2011-0411 and kin). Refuse rather than carry it into the TLS session.
        if !c.io.buffer().is_empty() {
            return Err(self.down("STARTTLS", "relay sent data after its 220 reply"));
        }
        let Stream::Plain(tcp) = c.io.into_inner() else { unreachable!("plain before STARTTLS") };
        Ok(Conn::new(self.wrap_tls(tcp)?))
    }

    fn ehlo(&self, c: &mut Conn) -> Result<(), Down> {
        let r = c.command(&format!("EHLO {}", self.hello)).map_err(|e| self.down("EHLO", e))?;
        if r.code == 250 {
            c.ext = reply::ehlo_keywords(&r);
            return Ok(());
        }
        // An old relay without ESMTP: HELO, no extensions.
        let r = c.command(&format!("HELO {}", self.hello)).map_err(|e| self.down("HELO", e))?;
        if r.code != 250 {
            return Err(self.down("HELO refused", r.text));
        }
        c.ext.clear();
        Ok(())
    }
}
