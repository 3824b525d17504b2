//! One scriptable SMTP/LMTP test server (threads and a std `TcpListener`), and a minimal SMTP client.
//!
//! The server answers from a [`Script`]: the greeting, the EHLO/LHLO keywords, a reply per MAIL and per RCPT
//! (by address), what happens after the final dot (a reply, one reply per recipient under LMTP, or dropping the
//! connection without a reply), a delay before that reply, dropping the connection after N bytes of DATA, and
//! the line-ending rule (strict CRLF, or the naive receiver SMTP smuggling exploits, which takes a bare LF or a
//! bare CR as a line end), a limit on messages per session, and TLS: implicit (smtps) or STARTTLS, with a
//! certificate from a throw-away CA ([`TestCert`]). Every transaction (MAIL FROM, RCPTs, data bytes as sent and
//! as meant, whether it came over TLS, whether it was accepted) is recorded for the test's asserts. The server
//! stops when dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A reply chosen per recipient address.
pub type PerRcpt = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the server does after the final dot.
#[derive(Clone)]
pub enum AfterData {
    /// This reply (SMTP), or this reply for each accepted recipient (LMTP).
    Reply(String),
    /// One reply per accepted recipient, by address (LMTP; under SMTP the first recipient's reply).
    PerRcpt(PerRcpt),
    /// Close the connection without answering: the client cannot know whether the message was taken.
    Drop,
}

/// How the server behaves.
#[derive(Clone)]
pub struct Script {
    pub greeting: String,
    /// The keywords after the first EHLO/LHLO line, e.g. `["8BITMIME", "SMTPUTF8", "PIPELINING"]`.
    pub ehlo: Vec<String>,
    /// LMTP: LHLO instead of EHLO, and one reply per accepted recipient after the dot.
    pub lmtp: bool,
    pub mail: String,
    /// The reply to `RCPT TO:<ADDR>`, by ADDR (without the brackets).
    pub rcpt: PerRcpt,
    pub after_data: AfterData,
    /// Wait this long after the final dot before replying.
    pub delay: Duration,
    /// Close the connection once this many bytes of DATA arrived (no reply).
    pub drop_after_bytes: Option<usize>,
    /// Take a bare LF or a bare CR as a line end (the receiver SMTP smuggling exploits); data lines are then
    /// recorded with LF endings.
    pub naive_line_ends: bool,
    /// Hang up (no reply, no 221) after this many messages on one connection: a per-session limit.
    pub max_messages: Option<usize>,
    /// TLS from the first byte, or offered as STARTTLS; `None`: plain text only (STARTTLS gets 454).
    pub tls: Option<Tls>,
}

/// How the server speaks TLS.
#[derive(Clone)]
pub enum Tls {
    /// smtps: the handshake comes before the greeting.
    Implicit(Arc<rustls::ServerConfig>),
    /// STARTTLS is offered in EHLO until the session is secure.
    StartTls(Arc<rustls::ServerConfig>),
}

/// A certificate for `localhost` signed by a throw-away CA: the server side of a TLS test, and the CA a client
/// must trust to accept it.
pub struct TestCert {
    /// The CA certificate (DER), for the client's trust store.
    pub ca: rustls::pki_types::CertificateDer<'static>,
    /// A server configuration presenting the `localhost` certificate.
    pub config: Arc<rustls::ServerConfig>,
}

impl TestCert {
    pub fn localhost() -> TestCert {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS config");
        TestCert { ca: ca.der().clone(), config: Arc::new(config) }
    }
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 testkit.example ESMTP".into(),
            ehlo: vec!["8BITMIME".into(), "SMTPUTF8".into(), "PIPELINING".into()],
            lmtp: false,
            mail: "250 2.1.0 Ok".into(),
            rcpt: Arc::new(|_| "250 2.1.5 Ok".to_string()),
            after_data: AfterData::Reply("250 2.0.0 Ok: queued as TESTKIT".into()),
            delay: Duration::ZERO,
            drop_after_bytes: None,
            naive_line_ends: false,
            max_messages: None,
            tls: None,
        }
    }
}

impl Script {
    /// Every recipient gets `f(address)` at RCPT time.
    pub fn rcpt(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Script {
        self.rcpt = Arc::new(f);
        self
    }

    pub fn after_data(mut self, a: AfterData) -> Script {
        self.after_data = a;
        self
    }

    pub fn delay(mut self, d: Duration) -> Script {
        self.delay = d;
        self
    }

    pub fn ehlo(mut self, keywords: &[&str]) -> Script {
        self.ehlo = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    pub fn tls(mut self, tls: Tls) -> Script {
        self.tls = Some(tls);
        self
    }

    pub fn max_messages(mut self, n: usize) -> Script {
        self.max_messages = Some(n);
        self
    }
}

/// One transaction as the server saw it.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    /// What followed `MAIL FROM:` (e.g. `<a@b> BODY=8BITMIME`).
    pub mail: String,
    /// What followed each `RCPT TO:` that was answered 2xx, in order (e.g. `<a@b>`).
    pub rcpts: Vec<String>,
    /// The DATA payload, dot-stuffing undone and the terminator removed (CRLF kept; LF in naive mode).
    pub data: Vec<u8>,
    /// The DATA payload exactly as it came off the wire: stuffed, terminator included.
    pub raw: Vec<u8>,
    /// Whether the transaction came over TLS.
    pub tls: bool,
    /// True once the server answered the data with 2xx (false for a drop, or a client gone while we waited).
    pub accepted: bool,
}

impl Transaction {
    /// The sender inside the brackets of `mail`.
    pub fn sender(&self) -> &str {
        bare(self.mail.split_whitespace().next().unwrap_or(""))
    }

    /// The recipient addresses, without brackets.
    pub fn rcpt_addrs(&self) -> Vec<String> {
        // `<"odd quoted"@d> NOTIFY=...`: the path is what the brackets enclose, spaces and all.
        self.rcpts
            .iter()
            .map(|r| match r.strip_prefix('<') {
                Some(rest) => rest.split_once('>').map_or(rest, |(path, _)| path).to_string(),
                None => bare(r.split_whitespace().next().unwrap_or("")).to_string(),
            })
            .collect()
    }
}

fn bare(s: &str) -> &str {
    s.trim_start_matches('<').trim_end_matches('>')
}

/// The server; stops accepting when dropped.
pub struct Server {
    pub port: u16,
    txs: Arc<Mutex<Vec<Transaction>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on a free port of 127.0.0.1 and serves each connection on its own thread.
    pub fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let txs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, st) = (Arc::clone(&txs), Arc::clone(&stop));
        let script = Arc::new(script);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: a server left running by a failed test stops by itself.
            while !st.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(3600) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let (t, script) = (Arc::clone(&t), Arc::clone(&script));
                        std::thread::spawn(move || {
                            let _ = Session::new(sock, &script, &t).and_then(|mut s| s.serve());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server { port, txs, stop, thread: Some(thread) }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every transaction that reached the final dot, in arrival order.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.txs.lock().unwrap().clone()
    }

    /// How many times each (Subject, recipient) was accepted: the exactly-once check, as [`crate::sink::Sink::deliveries`].
    pub fn deliveries(&self) -> std::collections::HashMap<(String, String), usize> {
        let mut seen = std::collections::HashMap::new();
        for t in self.transactions().into_iter().filter(|t| t.accepted) {
            let subject = String::from_utf8_lossy(&t.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .expect("a delivered message has a Subject");
            for r in t.rcpt_addrs() {
                *seen.entry((subject.clone(), r)).or_default() += 1;
            }
        }
        seen
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The socket under a session, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    fn tls(tcp: TcpStream, config: &Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
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

struct Session<'a> {
    io: BufReader<Stream>,
    script: &'a Script,
    txs: &'a Mutex<Vec<Transaction>>,
    pending_cr: bool,
    /// While reading DATA: every byte as it came.
    raw: Option<Vec<u8>>,
    /// Messages answered on this connection.
    messages: usize,
}

impl<'a> Session<'a> {
    fn new(sock: TcpStream, script: &'a Script, txs: &'a Mutex<Vec<Transaction>>) -> io::Result<Session<'a>> {
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let stream = match &script.tls {
            Some(Tls::Implicit(config)) => Stream::tls(sock, config)?,
            _ => Stream::Plain(sock),
        };
        Ok(Session { io: BufReader::new(stream), script, txs, pending_cr: false, raw: None, messages: 0 })
    }

    fn secure(&self) -> bool {
        matches!(self.io.get_ref(), Stream::Tls(_))
    }

    fn say(&mut self, line: &str) -> io::Result<()> {
        let w = self.io.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes())?;
        w.flush()
    }

    fn hang_up(&mut self) {
        let _ = self.io.get_ref().tcp().shutdown(Shutdown::Both);
    }

    /// One line with its ending: strict mode ends lines at LF only (the raw line, ending included); naive mode
    /// at CRLF, LF or CR (the ending dropped, then LF added). None at EOF.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if !self.script.naive_line_ends {
            let mut line = Vec::new();
            let got = self.io.read_until(b'\n', &mut line)? > 0;
            if let Some(raw) = self.raw.as_mut() {
                raw.extend_from_slice(&line);
            }
            return Ok(got.then_some(line));
        }
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if self.io.read(&mut b)? == 0 {
                return Ok((!line.is_empty()).then_some(line));
            }
            if let Some(raw) = self.raw.as_mut() {
                raw.push(b[0]);
            }
            if self.pending_cr {
                self.pending_cr = false;
                if b[0] == b'\n' {
                    continue; // the LF of a CRLF whose CR already ended the previous line
                }
            }
            match b[0] {
                b'\n' => break,
                b'\r' => {
                    self.pending_cr = true;
                    break;
                }
                c => line.push(c),
            }
        }
        line.push(b'\n');
        Ok(Some(line))
    }

    fn ehlo(&mut self) -> io::Result<()> {
        let mut lines = vec!["250-testkit.example".to_string()];
        lines.extend(self.script.ehlo.iter().map(|k| format!("250-{k}")));
        if matches!(self.script.tls, Some(Tls::StartTls(_))) && !self.secure() {
            lines.push("250-STARTTLS".into());
        }
        let last = lines.pop().unwrap().replacen("250-", "250 ", 1);
        lines.push(last);
        self.say(&lines.join("\r\n"))
    }

    /// RFC 3207: 220, then the handshake; what the client sent before it is dropped (a correct server does not
    /// carry plain-text input into the TLS session), and so is the transaction state.
    fn starttls(&mut self) -> io::Result<bool> {
        let config = match &self.script.tls {
            Some(Tls::StartTls(config)) if !self.secure() => Arc::clone(config),
            _ => {
                self.say("454 4.7.0 TLS not available")?;
                return Ok(false);
            }
        };
        self.say("220 2.0.0 Ready to start TLS")?;
        // A duplicate of the socket's descriptor: dropping the old reader (and its buffer) closes only its own.
        let tcp = self.io.get_ref().tcp().try_clone()?;
        self.io = BufReader::new(Stream::tls(tcp, &config)?);
        Ok(true)
    }

    /// DATA: 354, the payload up to the terminator, then the scripted reply (or drop). `Ok(false)`: the
    /// connection is over.
    fn data(&mut self, mut tx: Transaction) -> io::Result<bool> {
        let script = self.script;
        self.say("354 End data with <CR><LF>.<CR><LF>")?;
        self.raw = Some(Vec::new());
        let mut seen = 0usize;
        loop {
            let Some(l) = self.line()? else { return Ok(false) };
            seen += l.len();
            if script.drop_after_bytes.is_some_and(|n| seen >= n) {
                self.hang_up();
                return Ok(false);
            }
            let end = if script.naive_line_ends { l == b".\n" } else { l == b".\r\n" };
            if end {
                break;
            }
            tx.data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
        }
        tx.raw = self.raw.take().unwrap_or_default();
        let idx = {
            let mut g = self.txs.lock().unwrap();
            g.push(tx.clone());
            g.len() - 1
        };
        let replies: Vec<String> = match &script.after_data {
            AfterData::Drop => {
                self.hang_up();
                return Ok(false);
            }
            AfterData::Reply(r) => {
                let n = if script.lmtp { tx.rcpts.len() } else { 1 };
                vec![r.replace("TESTKIT", &format!("TESTKIT{idx}")); n]
            }
            AfterData::PerRcpt(f) => {
                let addrs = tx.rcpt_addrs();
                let n = if script.lmtp { addrs.len() } else { 1 };
                addrs.iter().take(n).map(|a| f(a)).collect()
            }
        };
        std::thread::sleep(script.delay);
        for r in &replies {
            self.say(r)?;
        }
        if replies.iter().any(|r| r.starts_with('2')) {
            self.txs.lock().unwrap()[idx].accepted = true;
        }
        self.messages += 1;
        if script.max_messages.is_some_and(|m| self.messages >= m) {
            self.hang_up();
            return Ok(false);
        }
        Ok(true)
    }

    fn serve(&mut self) -> io::Result<()> {
        let script = self.script;
        self.say(&script.greeting)?;
        let mut cur: Option<Transaction> = None;
        while let Some(raw) = self.line()? {
            let text = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
            let up = text.to_ascii_uppercase();
            let verb = up.split([' ', ':']).next().unwrap_or("").to_string();
            match verb.as_str() {
                "EHLO" | "LHLO" => self.ehlo()?,
                "HELO" => self.say("250 testkit.example")?,
                "STARTTLS" => {
                    if self.starttls()? {
                        cur = None;
                    }
                }
                "MAIL" => {
                    let arg = text.get(10..).unwrap_or("").to_string();
                    let reply = script.mail.clone();
                    if reply.starts_with('2') {
                        cur = Some(Transaction { mail: arg, tls: self.secure(), ..Default::default() });
                    }
                    self.say(&reply)?;
                }
                "RCPT" => {
                    let arg = text.get(8..).unwrap_or("").to_string();
                    let addr = bare(arg.split_whitespace().next().unwrap_or("")).to_string();
                    let reply = (script.rcpt)(&addr);
                    if reply.starts_with('2') {
                        if let Some(t) = cur.as_mut() {
                            t.rcpts.push(arg);
                        }
                    }
                    self.say(&reply)?;
                }
                "DATA" => {
                    let Some(tx) = cur.take().filter(|t| !t.rcpts.is_empty()) else {
                        self.say("554 5.5.1 No valid recipients")?;
                        continue;
                    };
                    if !self.data(tx)? {
                        return Ok(());
                    }
                }
                "RSET" => {
                    cur = None;
                    self.say("250 2.0.0 Ok")?;
                }
                "QUIT" => {
                    self.say("221 2.0.0 Bye")?;
                    return Ok(());
                }
                _ => self.say("250 2.0.0 Ok")?,
            }
        }
        Ok(())
    }
}

/// A client: sends one message over SMTP to 127.0.0.1:`port` and returns the queue id from the server's final
/// reply (`... queued as ID`). `data` has LF or CRLF line ends; it is sent with CRLF and dot-stuffed. Every reply
/// must be the expected one.
pub fn send(port: u16, from: &str, rcpts: &[&str], data: &[u8]) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let reply = |r: &mut BufReader<TcpStream>, want: &str| -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "short SMTP reply {line:?}");
            all.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                break;
            }
        }
        assert!(all.starts_with(want), "expected {want}, got {all:?}");
        all
    };
    reply(&mut r, "220");
    let cmd = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str, want: &str| {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        reply(r, want)
    };
    cmd(&mut w, &mut r, "EHLO client.test.invalid", "250");
    cmd(&mut w, &mut r, &format!("MAIL FROM:<{from}>"), "250");
    for rc in rcpts {
        cmd(&mut w, &mut r, &format!("RCPT TO:<{rc}>"), "250");
    }
    cmd(&mut w, &mut r, "DATA", "354");
    let mut body = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b".") {
            body.push(b'.');
        }
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    w.write_all(&body).unwrap();
    let done = reply(&mut r, "250");
    let _ = w.write_all(b"QUIT\r\n");
    done.split("queued as ").nth(1).map(|s| s.trim().to_string()).unwrap_or_else(|| panic!("no queue id in {done:?}"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on 127.0.0.1:`port`, failing the test after `limit`.
#[track_caller]
pub fn wait_listening(port: u16, limit: Duration) {
    crate::run::wait_for(limit, &format!("127.0.0.1:{port} to listen"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}
