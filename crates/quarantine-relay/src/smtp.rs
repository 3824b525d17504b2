//! One SMTP session to the relay, reused across messages, with a reply per recipient.
//!
//! # Why not lettre
//! The obvious client, lettre 0.11.23 (the newest served here), has three problems for release: its `send_raw`
//! does not dot-stuff after a bare LF or CR (RUSTSEC-2026-0561, fixed in 0.11.24); it never sets `TCP_NODELAY`,
//! and it writes the final `CRLF . CRLF` as a second small write after the body, so Nagle's algorithm holds it
//! until the relay's delayed ACK — 40 ms per message, measured here at 36 messages/s against smtp-sink on
//! loopback (lettre's pull request 1159, merged upstream, sets it; 0.11.23 does not have it); and it has no
//! PIPELINING. Release needs 1,000 messages/s, a reply per RCPT, the text of the final reply, RSET between
//! messages, and a sharp line between "the relay said no" and "the connection died after the final dot". So this
//! module speaks the little SMTP release needs itself (RFC 5321 client side, RFC 2920 PIPELINING, RFC 3207
//! STARTTLS, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8) over `std::net::TcpStream` with `TCP_NODELAY`, and TLS through
//! rustls (webpki roots plus the system CA bundle). The DATA payload is built by [`encode::smtp_data`]: CRLF
//! everywhere, dot-stuffed, terminator included, written in one piece.
//!
//! # Outcomes
//! Per recipient: a 2xx to the final dot is delivered; 4xx deferred; 5xx failed; a write that fails before the
//! terminator is out is deferred (the relay cannot have accepted a message it never saw end); no readable reply
//! after the terminator went out is *in doubt*.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::url::{RelayUrl, Security};
use quarantine_mail::encode;
use quarantine_store::{Down, Outcome, Transport};

/// How long the relay may take to answer the final `.` (RFC 5321 section 4.5.3.2.6 suggests 10 minutes).
const FINAL_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest reply line we accept (RFC 5321 says 512; Postfix allows 2048 by default).
const MAX_LINE: usize = 4096;

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
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

/// One reply: its code and its text (all lines, joined by spaces, code first).
#[derive(Clone, Debug)]
struct Reply {
    code: u16,
    text: String,
    lines: Vec<String>,
}

/// An open session.
struct Conn {
    io: BufReader<Stream>,
    /// EHLO keywords, upper case (`PIPELINING`, `8BITMIME`, `SMTPUTF8`, `STARTTLS`, ...).
    ext: Vec<String>,
}

impl Conn {
    fn has(&self, kw: &str) -> bool {
        self.ext.iter().any(|e| e == kw)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.io.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.io).take(MAX_LINE as u64).read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the relay"));
            }
            if !raw.ends_with(b"\n") {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long"));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&bytes[0]) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("malformed reply {line:?}")));
            }
            let this: u16 = line[..3].parse().expect("three digits");
            if code != 0 && this != code {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reply code changed mid-reply: {line:?}"),
                ));
            }
            code = this;
            let more = bytes.get(3) == Some(&b'-');
            let text: String =
                line.get(4..).unwrap_or("").chars().map(|c| if c.is_control() { '?' } else { c }).collect();
            lines.push(text);
            if !more {
                break;
            }
        }
        let text = format!("{code} {}", lines.join(" ")).trim_end().to_string();
        Ok(Reply { code, text, lines })
    }

    /// Sends one command line and reads its reply.
    fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    fn set_read_timeout(&self, t: Duration) {
        let _ = self.io.get_ref().tcp().set_read_timeout(Some(t));
    }
}

pub struct Smtp {
    url: RelayUrl,
    timeout: Duration,
    hello: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Trust anchors beyond the system's (tests).
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    conn: Option<Conn>,
    /// True until the first transaction on the current connection: no RSET needed before it.
    fresh: bool,
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

impl Smtp {
    pub fn new(url: RelayUrl, timeout: Duration) -> Smtp {
        Smtp { url, timeout, hello: hello_name(), tls: None, extra_roots: Vec::new(), conn: None, fresh: false }
    }

    fn down(&self, what: &str, e: impl fmt::Display) -> Down {
        Down(format!("relay {}: {what}: {e}", self.url))
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

    fn ehlo(&self, c: &mut Conn) -> Result<(), Down> {
        let r = c.command(&format!("EHLO {}", self.hello)).map_err(|e| self.down("EHLO", e))?;
        if r.code == 250 {
            c.ext = r
                .lines
                .iter()
                .skip(1)
                .map(|l| l.split_whitespace().next().unwrap_or("").to_ascii_uppercase())
                .collect();
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

    fn connect(&mut self) -> Result<(), Down> {
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
        let stream = match self.url.security {
            Security::Implicit => self.wrap_tls(tcp)?,
            _ => Stream::Plain(tcp),
        };
        let mut c = Conn { io: BufReader::with_capacity(16 * 1024, stream), ext: Vec::new() };
        let greeting = c.read_reply().map_err(|e| self.down("no greeting", e))?;
        if greeting.code != 220 {
            return Err(self.down("refused the session", greeting.text));
        }
        self.ehlo(&mut c)?;
        if self.url.security == Security::StartTls {
            if !c.has("STARTTLS") {
                return Err(self.down("STARTTLS", "not offered (--tls requires it)"));
            }
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
            let stream = self.wrap_tls(tcp)?;
            c = Conn { io: BufReader::with_capacity(16 * 1024, stream), ext: Vec::new() };
            self.ehlo(&mut c)?;
        }
        self.conn = Some(c);
        self.fresh = true;
        Ok(())
    }

    /// Ends the session politely.
    fn quit(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.command("QUIT");
        }
    }

    /// Sends one message (`parts`: its bytes in pieces, e.g. the trace header and the original, any line
    /// endings) from `from` (empty: the null sender) to `rcpts`, returning one outcome per recipient, in order.
    /// `Err` only when the relay cannot be reached at all; then nothing of this message was sent.
    fn send_message(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        // A reused connection gets RSET first: in the same write as the next MAIL group when the relay pipelines,
        // else on its own. If RSET fails the relay dropped the session (idle timeout, a limit on messages per
        // session): open a new one and send there. Nothing of the message can have been accepted by then.
        let mut rset = !self.fresh && self.conn.is_some();
        if rset && !self.conn.as_ref().is_some_and(|c| c.has("PIPELINING")) {
            let c = self.conn.as_mut().expect("checked");
            if !matches!(c.command("RSET"), Ok(r) if r.code == 250) {
                self.conn = None;
            }
            rset = false;
        }
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.connect()?;
                rset = false;
            }
            self.fresh = false;
            let conn = self.conn.as_mut().expect("connected above");
            match transaction(conn, from, rcpts, parts, self.timeout, rset) {
                Some((out, broken)) => {
                    if broken {
                        self.conn = None;
                    }
                    return Ok(out);
                }
                None if attempt == 0 => self.conn = None,
                None => break,
            }
        }
        unreachable!("a fresh connection never needs RSET")
    }
}

impl Transport for Smtp {
    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        self.send_message(from, rcpts, parts)
    }

    fn finish(&mut self) {
        self.quit();
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

/// One mail transaction on an open session. Returns the outcomes and whether the session is unusable after it;
/// `None` when `rset` was asked for (pipelined before MAIL) and failed: the session is dead, nothing was
/// accepted, the caller reconnects and tries again.
fn transaction(
    c: &mut Conn,
    from: &str,
    rcpts: &[&str],
    parts: &[&[u8]],
    timeout: Duration,
    rset: bool,
) -> Option<(Vec<Outcome>, bool)> {
    let mut out: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    let utf8 = c.has("SMTPUTF8");
    if !from.is_ascii() && !utf8 {
        let why = format!("not sent: the envelope sender <{from}> is not ASCII and the relay does not offer SMTPUTF8");
        return Some((vec![Outcome::Failed(why); rcpts.len()], false));
    }
    for (i, r) in rcpts.iter().enumerate() {
        if !r.is_ascii() && !utf8 {
            out[i] = Some(Outcome::Failed(
                "not sent: the address is not ASCII and the relay does not offer SMTPUTF8".into(),
            ));
        }
    }
    let todo: Vec<usize> = (0..rcpts.len()).filter(|&i| out[i].is_none()).collect();
    let finish = |out: Vec<Option<Outcome>>| -> Vec<Outcome> {
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred("not attempted: the session ended early".into())))
            .collect()
    };
    if todo.is_empty() {
        return Some((finish(out), false));
    }
    let fill = |out: &mut Vec<Option<Outcome>>, idx: &[usize], o: Outcome| {
        for &i in idx {
            out[i] = Some(o.clone());
        }
    };

    let mut mail = format!("MAIL FROM:<{from}>");
    if parts.iter().any(|p| encode::is_8bit(p)) && c.has("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if !from.is_ascii() || todo.iter().any(|&i| !rcpts[i].is_ascii()) {
        mail.push_str(" SMTPUTF8");
    }
    let mut cmds = vec![mail];
    cmds.extend(todo.iter().map(|&i| format!("RCPT TO:<{}>", rcpts[i])));
    cmds.push("DATA".into());

    // With PIPELINING the whole group goes in one write and the replies are read in order (RFC 2920); without
    // it, one command at a time, stopping at a refused MAIL.
    let pipelining = c.has("PIPELINING");
    let mut replies: Vec<io::Result<Reply>> = Vec::with_capacity(cmds.len());
    if pipelining {
        let mut group: String = if rset { "RSET\r\n".into() } else { String::new() };
        group.extend(cmds.iter().map(|l| format!("{l}\r\n")));
        if let Err(e) = c.send(group.as_bytes()) {
            if rset {
                return None;
            }
            fill(&mut out, &todo, Outcome::Deferred(format!("connection lost at MAIL FROM: {e}")));
            return Some((finish(out), true));
        }
        if rset && !matches!(c.read_reply(), Ok(r) if r.code == 250) {
            // Dropping the session without sending a message ends whatever the relay made of the rest.
            return None;
        }
        for _ in &cmds {
            let r = c.read_reply();
            let stop = r.is_err();
            replies.push(r);
            if stop {
                break;
            }
        }
    } else {
        for (n, l) in cmds.iter().enumerate() {
            if n == cmds.len() - 1 && !replies[1..].iter().any(|r| matches!(r, Ok(r) if r.code < 300)) {
                break; // no recipient accepted: no DATA
            }
            let r = c.command(l);
            let stop = match &r {
                Err(_) => true,
                Ok(r) => n == 0 && r.code >= 300,
            };
            replies.push(r);
            if stop {
                break;
            }
        }
    }
    // A pipelining relay that answered 354 to a DATA we are not going to follow with a message (MAIL or every
    // RCPT refused) is waiting for data: end it empty, so nothing half-done is left in the session.
    let data_open = pipelining && matches!(replies.get(cmds.len() - 1), Some(Ok(r)) if r.code == 354);
    let mail_ok = matches!(replies.first(), Some(Ok(r)) if r.code < 300);
    let any_rcpt = replies.iter().skip(1).take(todo.len()).any(|r| matches!(r, Ok(r) if r.code < 300));
    if data_open && !(mail_ok && any_rcpt) {
        let ok = c.send(b".\r\n").is_ok() && c.read_reply().is_ok();
        if !ok {
            fill(&mut out, &todo, Outcome::Deferred("relay accepted DATA with no valid recipient".into()));
            return Some((finish(out), true));
        }
    }

    // MAIL FROM.
    match replies.first() {
        Some(Ok(r)) if r.code < 300 => {}
        Some(Ok(r)) => {
            let broken = r.code == 421;
            fill(&mut out, &todo, negative(r.code, format!("MAIL FROM: {}", r.text)));
            // Without pipelining nothing more was sent; with it, the RCPTs and DATA were refused too (503).
            return Some((finish(out), broken));
        }
        Some(Err(e)) => {
            fill(&mut out, &todo, Outcome::Deferred(format!("connection lost at MAIL FROM: {e}")));
            return Some((finish(out), true));
        }
        None => unreachable!("at least one reply was read"),
    }
    // RCPT TO, one per recipient.
    let mut accepted: Vec<usize> = Vec::new();
    for (n, &i) in todo.iter().enumerate() {
        match replies.get(1 + n) {
            Some(Ok(r)) if r.code < 300 => accepted.push(i),
            Some(Ok(r)) => {
                out[i] = Some(negative(r.code, format!("RCPT TO: {}", r.text)));
                if r.code == 421 {
                    fill(&mut out, &todo[n + 1..], Outcome::Deferred(format!("relay closed the session: {}", r.text)));
                    return Some((finish(out), true));
                }
            }
            Some(Err(e)) => {
                fill(&mut out, &todo[n..], Outcome::Deferred(format!("connection lost at RCPT TO: {e}")));
                return Some((finish(out), true));
            }
            None => {
                fill(&mut out, &todo[n..], Outcome::Deferred("connection lost at RCPT TO".into()));
                return Some((finish(out), true));
            }
        }
    }
    // DATA. Without pipelining, DATA is only sent when a recipient was accepted.
    let data_reply = match replies.get(1 + todo.len()) {
        Some(r) => r,
        None if accepted.is_empty() => return Some((finish(out), false)),
        None => {
            fill(&mut out, &accepted, Outcome::Deferred("connection lost at DATA".into()));
            return Some((finish(out), true));
        }
    };
    match data_reply {
        Ok(r) if r.code == 354 => {}
        Ok(r) => {
            if !accepted.is_empty() {
                fill(&mut out, &accepted, negative(r.code, format!("DATA: {}", r.text)));
            }
            return Some((finish(out), r.code == 421 || r.code < 400));
        }
        Err(e) => {
            fill(&mut out, &accepted, Outcome::Deferred(format!("connection lost at DATA: {e}")));
            return Some((finish(out), true));
        }
    }
    if accepted.is_empty() {
        return Some((finish(out), false)); // the empty DATA was ended above
    }
    // The message, dot-stuffed and terminated, in one write. A failed write means the terminator never went out:
    // the relay cannot have accepted the message. After it did, anything but a clear reply is in doubt.
    let mut w = encode::DataWriter::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        w.push(p);
    }
    let wire = w.finish();
    if let Err(e) = c.send(&wire) {
        fill(&mut out, &accepted, Outcome::Deferred(format!("connection lost while sending the message: {e}")));
        return Some((finish(out), true));
    }
    c.set_read_timeout(FINAL_REPLY_TIMEOUT);
    let final_reply = c.read_reply();
    c.set_read_timeout(timeout);
    let (outcome, broken) = match final_reply {
        Ok(r) if r.code < 300 => (Outcome::Delivered(r.text), false),
        Ok(r) if r.code >= 400 => (negative(r.code, r.text.clone()), r.code == 421),
        Ok(r) => (Outcome::InDoubt(format!("in doubt: unexpected reply to the final '.': {}", r.text)), true),
        Err(e) => (Outcome::InDoubt(format!("in doubt: no reply to the final '.' ({e})")), true),
    };
    fill(&mut out, &accepted, outcome);
    Some((finish(out), broken))
}

/// 4xx → deferred, 5xx → failed.
fn negative(code: u16, text: String) -> Outcome {
    if code >= 500 {
        Outcome::Failed(text)
    } else {
        Outcome::Deferred(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// A scripted relay for one connection: answers EHLO with `ehlo`, RCPT per `rcpt_reply`, records each DATA
    /// payload exactly as it came off the wire (terminator included) and sends it back through the channel.
    fn fake_relay(ehlo: &'static str, rcpt_reply: fn(&str) -> &'static str) -> (u16, mpsc::Receiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 fake ESMTP\r\n").unwrap();
            let mut line = String::new();
            let mut accepted = 0;
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                let up = line.to_ascii_uppercase();
                let answer: String = if up.starts_with("EHLO") {
                    ehlo.into()
                } else if up.starts_with("MAIL") {
                    accepted = 0;
                    "250 2.1.0 Ok\r\n".into()
                } else if up.starts_with("RCPT") {
                    let a = rcpt_reply(&line);
                    if a.starts_with('2') {
                        accepted += 1;
                    }
                    format!("{a}\r\n")
                } else if up.starts_with("DATA") {
                    if accepted == 0 {
                        "554 5.5.1 Error: no valid recipients\r\n".into()
                    } else {
                        w.write_all(b"354 go on\r\n").unwrap();
                        let mut data = Vec::new();
                        let mut b = [0u8; 1];
                        while !(data.ends_with(b"\r\n.\r\n") || data == b".\r\n") {
                            r.read_exact(&mut b).unwrap();
                            data.push(b[0]);
                        }
                        tx.send(data).unwrap();
                        "250-2.0.0 Ok: queued\r\n250 2.0.0 as FAKE1\r\n".into()
                    }
                } else if up.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").unwrap();
                    return;
                } else {
                    "250 2.0.0 Ok\r\n".into()
                };
                w.write_all(answer.as_bytes()).unwrap();
            }
        });
        (port, rx)
    }

    fn client(port: u16) -> Smtp {
        Smtp::new(RelayUrl { host: "127.0.0.1".into(), port, security: Security::None }, Duration::from_secs(10))
    }

    /// What goes on the wire is exactly RFC 5321's encoding of the message: no early end, no double stuffing, no
    /// extra blank line, for every awkward body we can think of; one connection, RSET between messages; with and
    /// without PIPELINING.
    #[test]
    fn wire_bytes_match_the_reference_encoding() {
        for ehlo in ["250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n", "250-fake\r\n250 8BITMIME\r\n"] {
            let (port, rx) = fake_relay(ehlo, |_| "250 2.1.5 Ok");
            let mut smtp = client(port);
            let bodies: Vec<&[u8]> = vec![
                b"Subject: a\r\n\r\nplain\r\n",
                b"Subject: a\n\n.\nlf dot lf\n",
                b"Subject: a\r\n\r\n.\r\ncrlf dot crlf\r\n",
                b"Subject: a\r\rbare\rcr\r",
                b"x\n.\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nevil\r\n.\r\n",
                b"x\r.\r\nMAIL FROM:<evil@example.net>\r\n",
                b"x\r\n.\nMAIL FROM:<evil@example.net>\r\n",
                b".starts with a dot\r\n..two dots\r\n",
                b"no final newline",
                b"ends with a bare cr\r",
                b"\xc3\xa9\xff 8-bit\r\n\r\n\r\n",
                b"",
                b"\r\n",
                b".",
            ];
            for body in &bodies {
                let out = smtp.send("sender@example.com", &["a@example.org"], &[body]).unwrap();
                assert!(
                    matches!(&out[0], Outcome::Delivered(t) if t == "250 2.0.0 Ok: queued 2.0.0 as FAKE1"),
                    "{out:?}"
                );
                let wire = rx.recv().unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&wire),
                    String::from_utf8_lossy(&encode::smtp_data(body)),
                    "body {:?}",
                    String::from_utf8_lossy(body)
                );
                assert!(!encode::has_bare_cr_or_lf(&wire));
            }
            smtp.quit();
        }
    }

    #[test]
    fn replies_are_per_recipient_and_utf8_needs_the_extension() {
        for ehlo in ["250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n", "250-fake\r\n250 8BITMIME\r\n"] {
            let (port, _rx) = fake_relay(ehlo, |l| {
                if l.contains("busy@") {
                    "450 4.2.1 try later"
                } else if l.contains("gone@") {
                    "550 5.1.1 no such user"
                } else {
                    "250 2.1.5 Ok"
                }
            });
            let mut smtp = client(port);
            let out = smtp
                .send(
                    "s@example.com",
                    &["ok@example.org", "busy@example.org", "gone@example.org", "jürgen@example.org"],
                    &[b"x\r\n"],
                )
                .unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(t) if t.starts_with("250 ")), "{out:?}");
            assert!(matches!(&out[1], Outcome::Deferred(t) if t.contains("450 4.2.1 try later")), "{out:?}");
            assert!(matches!(&out[2], Outcome::Failed(t) if t.contains("550 5.1.1 no such user")), "{out:?}");
            assert!(matches!(&out[3], Outcome::Failed(t) if t.contains("SMTPUTF8")), "{out:?}");
            // Nobody accepted: no DATA goes through, and the session stays usable.
            let out = smtp.send("s@example.com", &["gone@example.org"], &[b"x\r\n"]).unwrap();
            assert!(matches!(&out[0], Outcome::Failed(t) if t.contains("550")), "{out:?}");
            let out = smtp.send("s@example.com", &["ok@example.org"], &[b"x\r\n"]).unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(_)), "{out:?}");
        }
    }

    /// A relay that hangs up after each message (a per-session limit, an idle timeout): the next message's
    /// pipelined RSET finds the session dead, and the message goes out on a new one.
    #[test]
    fn a_dropped_session_is_reopened() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming().take(3) {
                let s = s.unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                w.write_all(b"220 fake\r\n").unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line.starts_with("EHLO") {
                        w.write_all(b"250-fake\r\n250 PIPELINING\r\n").unwrap();
                    } else if line.starts_with("DATA") {
                        w.write_all(b"354 go\r\n").unwrap();
                        let mut data = Vec::new();
                        let mut b = [0u8; 1];
                        while !data.ends_with(b"\r\n.\r\n") {
                            r.read_exact(&mut b).unwrap();
                            data.push(b[0]);
                        }
                        tx.send(data).unwrap();
                        w.write_all(b"250 queued\r\n").unwrap();
                        break; // hang up after one message
                    } else {
                        w.write_all(b"250 Ok\r\n").unwrap();
                    }
                }
            }
        });
        let mut smtp = client(port);
        for n in 0..3 {
            let body = format!("Subject: {n}\r\n\r\nx\r\n");
            let out = smtp.send("a@b.c", &["d@e.f"], &[body.as_bytes()]).unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(t) if t == "250 queued"), "{n}: {out:?}");
            assert_eq!(rx.recv().unwrap(), encode::smtp_data(body.as_bytes()));
        }
    }

    /// A TLS relay for one connection: a throw-away CA signs a certificate for `localhost`; with `starttls` the
    /// session starts in plain text and upgrades on STARTTLS, else TLS starts at once (smtps). Records the DATA
    /// payload and whether it came over TLS.
    fn tls_relay(starttls: bool) -> (u16, rustls::pki_types::CertificateDer<'static>, mpsc::Receiver<(Vec<u8>, bool)>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let tls = |tcp: TcpStream| {
                let conn = rustls::ServerConnection::new(Arc::clone(&cfg)).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            };
            let mut plain: Option<TcpStream> = None;
            let mut secure = None;
            if starttls {
                plain = Some(tcp);
            } else {
                secure = Some(tls(tcp));
            }
            // One byte at a time, so nothing is buffered across the STARTTLS switch.
            fn line(s: &mut dyn Read) -> Option<String> {
                let mut v = Vec::new();
                let mut b = [0u8; 1];
                while !v.ends_with(b"\n") {
                    if s.read(&mut b).ok()? == 0 {
                        return None;
                    }
                    v.push(b[0]);
                }
                Some(String::from_utf8_lossy(&v).to_string())
            }
            macro_rules! io {
                () => {
                    match secure.as_mut() {
                        Some(s) => s as &mut dyn ReadWrite,
                        None => plain.as_mut().unwrap() as &mut dyn ReadWrite,
                    }
                };
            }
            trait ReadWrite: Read + Write {}
            impl<T: Read + Write> ReadWrite for T {}
            io!().write_all(b"220 tls relay\r\n").unwrap();
            while let Some(l) = line(io!()) {
                let up = l.to_ascii_uppercase();
                if up.starts_with("EHLO") {
                    let ext = if secure.is_none() {
                        "250-tls relay\r\n250 STARTTLS\r\n"
                    } else {
                        "250-tls relay\r\n250 PIPELINING\r\n"
                    };
                    io!().write_all(ext.as_bytes()).unwrap();
                } else if up.starts_with("STARTTLS") {
                    io!().write_all(b"220 go ahead\r\n").unwrap();
                    secure = Some(tls(plain.take().unwrap()));
                } else if up.starts_with("DATA") {
                    io!().write_all(b"354 go\r\n").unwrap();
                    let mut data = Vec::new();
                    let mut b = [0u8; 1];
                    while !data.ends_with(b"\r\n.\r\n") {
                        io!().read_exact(&mut b).unwrap();
                        data.push(b[0]);
                    }
                    tx.send((data, secure.is_some())).unwrap();
                    io!().write_all(b"250 2.0.0 Ok: queued over TLS\r\n").unwrap();
                } else if up.starts_with("QUIT") {
                    io!().write_all(b"221 bye\r\n").unwrap();
                    let _ = io!().flush();
                    return;
                } else {
                    io!().write_all(b"250 Ok\r\n").unwrap();
                }
                io!().flush().unwrap();
            }
        });
        (port, ca.der().clone(), rx)
    }

    #[test]
    fn smtps_and_starttls_deliver_over_a_verified_tls_session() {
        for (security, starttls) in [(Security::Implicit, false), (Security::StartTls, true)] {
            let (port, ca, rx) = tls_relay(starttls);
            let mut smtp = Smtp::new(RelayUrl { host: "localhost".into(), port, security }, Duration::from_secs(10));
            smtp.extra_roots.push(ca);
            let out = smtp.send("a@b.c", &["d@e.f"], &[b"Subject: tls\n\nbody\n"]).unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(t) if t.contains("over TLS")), "{security:?}: {out:?}");
            let (data, secure) = rx.recv().unwrap();
            assert!(secure, "{security:?}: the message went over TLS");
            assert_eq!(data, encode::smtp_data(b"Subject: tls\n\nbody\n"));
            smtp.quit();
        }
    }

    #[test]
    fn an_untrusted_certificate_is_refused() {
        let (port, _ca, _rx) = tls_relay(false);
        let mut smtp = Smtp::new(
            RelayUrl { host: "localhost".into(), port, security: Security::Implicit },
            Duration::from_secs(10),
        );
        let e = smtp.send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap_err();
        assert!(e.0.contains("TLS handshake"), "{}", e.0);
    }

    #[test]
    fn an_unreachable_relay_is_down() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut smtp = client(port);
        let e = smtp.send("", &["a@example.org"], &[b"x\r\n"]).unwrap_err();
        assert!(e.0.contains("cannot connect"), "{}", e.0);
    }

    #[test]
    fn starttls_is_required_when_asked_for() {
        let (port, _rx) = fake_relay("250-fake\r\n250 PIPELINING\r\n", |_| "250 Ok");
        let mut smtp = Smtp::new(
            RelayUrl { host: "127.0.0.1".into(), port, security: Security::StartTls },
            Duration::from_secs(5),
        );
        let e = smtp.send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap_err();
        assert!(e.0.contains("STARTTLS") && e.0.contains("not offered"), "{}", e.0);
    }
}
