//! `quarantine serve`: the LMTP/ESMTP and HTTP intake, driven by raw sockets (hostile input, limits, the per-
//! recipient LMTP replies, rspamd's HTTP request shapes replayed byte for byte), and by a private Postfix
//! delivering through its `lmtp` transport (with SIGKILLs mid-DATA and between the dot and the reply).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quarantine_testkit::postfix::{self, Postfix};
use quarantine_testkit::rspamd::Rspamd;
use quarantine_testkit::run::wait_for;
use quarantine_testkit::smtp::send;

use crate::BIN;

/// A running `serve` on a scratch store; killed on drop.
struct Serve {
    child: Option<Child>,
    pub sock: PathBuf,
    pub http: u16,
    store: quarantine_testkit::Store,
    stderr: PathBuf,
    cfg: PathBuf,
}

impl Serve {
    fn start(config: &str) -> Serve {
        let store = crate::store();
        let sock = store.scratch.path().join("lmtp.sock");
        let http = quarantine_testkit::smtp::free_port();
        let cfg = store.scratch.file("serve.toml", config);
        let stderr = store.scratch.path().join("serve.err");
        let mut s = Serve { child: None, sock, http, store, stderr, cfg: cfg.clone() };
        s.spawn(&cfg);
        s
    }

    fn spawn(&mut self, cfg: &Path) {
        let err = std::fs::File::create(&self.stderr).unwrap();
        let child = self
            .store
            .scratch
            .program(BIN)
            .arg("--config")
            .arg(cfg)
            .arg("--store")
            .arg(&self.store.root)
            .arg("serve")
            .arg("--lmtp")
            .arg(format!("unix:{}", self.sock.display()))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http))
            .stdin(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (sock, port) = (self.sock.clone(), self.http);
        wait_for(Duration::from_secs(10), "serve listening", || {
            UnixStream::connect(&sock).is_ok() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn lmtp(&self) -> Client {
        Client::new(UnixStream::connect(&self.sock).unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Held messages as `search --json` objects (ingesting the spool first).
    fn held(&self) -> Vec<serde_json::Value> {
        let out = self.store.q(&["search", "--json"]);
        out.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn pending(&self) -> usize {
        std::fs::read_dir(self.store.root.join("spool"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count()
    }

    /// Kills serve and reaps it; the store stays.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-s", sig, &pid]).status().unwrap().success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A line-oriented client that reads whole replies.
struct Client {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(s: UnixStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client { s, buf: Vec::new() };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// One reply (all its lines).
    fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return out;
            }
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&l).into_owned();
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.reply()
    }
}

const CFG: &str = "[serve]\nmax_message_size = \"64k\"\nmax_recipients = 5\nmax_line_length = 1024\n\
    idle_timeout = \"30s\"\nrules = [\"clamav\", \"rspamd\"]\n";

#[test]
fn serve_lmtp_per_recipient_replies_verdicts_and_hostile_input() {
    let sv = Serve::start(CFG);
    let mut c = sv.lmtp();
    let ehlo = c.cmd("LHLO client.test");
    for ext in ["PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 65536", "ENHANCEDSTATUSCODES"] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    // DATA without RCPT, RCPT without MAIL.
    assert!(c.cmd("DATA").starts_with("503 5.5.1"), "DATA without MAIL");
    assert!(c.cmd("RCPT TO:<a@example.edu>").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"), "DATA without RCPT");
    // Bare CR, bare LF, NUL in a command line; a 1 MB line (its tail must not run as a command).
    c.send(b"RCPT TO:<a@example.edu>\rRSET\r\n");
    assert!(c.reply().starts_with("500 5.5.2"));
    c.send(b"RCPT TO:<a@example.edu>\n");
    assert!(c.reply().starts_with("500 5.5.2"));
    c.send(b"RCPT TO:<a\0@example.edu>\r\n");
    assert!(c.reply().starts_with("500 5.5.2"));
    // An address that is not UTF-8 is refused, not held with U+FFFD in place of its bytes (a release would go to
    // an address the MTA never gave); UTF-8 (SMTPUTF8) is accepted.
    {
        let mut u = sv.lmtp();
        u.cmd("LHLO client.test");
        u.send(b"MAIL FROM:<s\xe9@example.org>\r\n");
        assert!(u.reply().starts_with("553 5.1.7"));
        assert!(u.cmd("MAIL FROM:<sé@example.org>").starts_with("250"));
        u.send(b"RCPT TO:<r\xfe@example.edu>\r\n");
        assert!(u.reply().starts_with("553 5.1.3"));
        assert!(u.cmd("RCPT TO:<ré@example.edu>").starts_with("250"));
        // A space inside a quoted local part is legal SMTP: accepted (one outside it is not).
        assert!(u.cmd("RCPT TO:<\"odd quoted\"@example.edu>").starts_with("250"));
    }
    let mut long = vec![b'X'; 1 << 20];
    long.extend_from_slice(b"RSET\r\n");
    c.send(&long);
    assert!(c.reply().starts_with("500 5.5.2 Line too long"));
    // Pipelined past the recipient limit: 5 accepted, the rest 452, in one write.
    let mut batch = String::new();
    for i in 0..7 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.edu>\r\n"));
    }
    c.send(batch.as_bytes());
    let replies: Vec<String> = (0..7).map(|_| c.reply()).collect();
    assert!(replies[..5].iter().all(|r| r.starts_with("250 2.1.5")), "{replies:?}");
    assert!(replies[5..].iter().all(|r| r.starts_with("452 4.5.3")), "{replies:?}");
    assert!(c.cmd("DATA").starts_with("354"));
    // Content with the SMTP-smuggling shapes, 8-bit, NUL and a stuffed dot: kept as sent, ended only by CRLF.CRLF.
    let body: &[u8] = b"Subject: s\r\nX-Virus-Status: Infected (Eicar-Test-Signature)\r\n\r\n\xc3\xa9\0\n.\r\nMAIL FROM:<x@y>\r\n\r.\r\n...stuffed\r\n";
    c.send(body);
    c.send(b".\r\n");
    let per_rcpt: Vec<String> = (0..5).map(|_| c.reply()).collect();
    assert!(per_rcpt.iter().all(|r| r.starts_with("250 2.0.0 <r")), "{per_rcpt:?}");
    // Over-size message: 552 per recipient, nothing stored.
    assert!(c.cmd("MAIL FROM:<s@example.org> SIZE=100000").starts_with("552 5.3.4"));
    c.cmd("MAIL FROM:<s@example.org>");
    c.cmd("RCPT TO:<a@example.edu>");
    c.cmd("RCPT TO:<b@example.edu>");
    assert!(c.cmd("DATA").starts_with("354"));
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b"0123456789abcde\r\n".to_vec(), 6000).flatten());
    c.send(&big);
    c.send(b".\r\n");
    assert!(c.reply().starts_with("552 5.3.4") && c.reply().starts_with("552 5.3.4"));
    // 10,000 RCPTs pipelined: the session stays usable.
    c.cmd("RSET");
    c.cmd("MAIL FROM:<s@example.org>");
    let many: String = (0..10_000).map(|i| format!("RCPT TO:<m{i}@example.edu>\r\n")).collect();
    c.send(many.as_bytes());
    let mut ok = 0;
    for _ in 0..10_000 {
        ok += c.reply().starts_with("250") as usize;
    }
    assert_eq!(ok, 5);
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("BDAT 10 LAST").starts_with("554"), "BDAT refused and the session closed");
    // Its one closing line says why it ended and what it carried (the 552s above were not held, not tempfailed).
    wait_for(Duration::from_secs(10), "the session's closing line", || {
        sv.log().lines().any(|l| l.contains("closed (BDAT refused), via=lmtp, held=1, tempfailed=0, rsets=2"))
    });

    // A client sending a byte a second does not hold up another session.
    let mut slow = sv.lmtp();
    slow.send(b"L");
    let mut d = sv.lmtp();
    d.cmd("EHLO x");
    d.cmd("MAIL FROM:<s@example.org>");
    d.cmd("RCPT TO:<quarantine+spam@example.edu>");
    d.cmd("DATA");
    d.send(b"Subject: ext\r\n\r\nx\r\n.\r\n");
    // Had it waited for the slow one, this read would give up first (the client's 20 s read timeout is shorter
    // than serve's 30 s idle limit, the only thing that would free it): no clock needed.
    let r = d.reply();
    assert!(r.starts_with("250 2.0.0 Held as"), "another session waited for the slow one: {r:?}");
    slow.send(b"H");
    drop(slow);

    let held = sv.held();
    assert_eq!(held.len(), 2, "{held:?}\n{}", sv.log());
    let virus = held.iter().find(|m| m["verdict"] == "VIRUS").expect("the header rule");
    assert_eq!(virus["from"], "");
    assert_eq!(virus["recipients"].as_array().unwrap().len(), 5);
    assert_eq!(virus["reason"], "X-Virus-Status: Infected (Eicar-Test-Signature)");
    let raw = sv.store.q(&[
        "export",
        virus["id"].as_str().unwrap(),
        "--to",
        sv.store.scratch.path().join("x").to_str().unwrap(),
    ]);
    assert!(raw.success(), "{}", raw.all());
    let exported =
        std::fs::read(sv.store.scratch.path().join("x").join(format!("{}.eml", virus["id"].as_str().unwrap())))
            .unwrap();
    let mut want = body.to_vec();
    want.remove(want.len() - 11); // the stuffed dot: "...stuffed" arrives as "..stuffed"
    assert_eq!(exported, want, "byte-exact, unstuffed once");
    assert!(held.iter().any(|m| m["verdict"] == "SPAM"), "address extension");
    assert!(sv.log().contains("status=held"), "{}", sv.log());
}

fn http(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// rspamd 3.4's request with formatter `default` and `meta_headers = true`, as its metadata_exporter builds it.
fn rspamd_request(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /rspamd HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
         Host: 127.0.0.1\r\nX-Rspamd-from: sender@example.org\r\nX-Rspamd-rcpt: [\"a@example.edu\",\"b@example.edu\"]\r\n\
         X-Rspamd-qid: 4QxYz1AbCd\r\nX-Rspamd-action: reject\r\nX-Rspamd-score: 20.000000\r\n\
         X-Rspamd-symbols: [{{\"name\":\"BAD_SENDER\",\"score\":20.0,\"metric_score\":20.0,\"options\":[\"sender@example.org\"]}}]\r\n\
         X-Rspamd-ip: 192.0.2.7\r\nX-Rspamd-user: unknown\r\nX-Rspamd-subject: hi\r\nX-Rspamd-fuzzy: []\r\n\
         X-Rspamd-scan_time: 12\r\nX-Rspamd-rspamd_server: gw\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn serve_http_rspamd_shapes_and_bad_requests() {
    let sv = Serve::start(CFG);
    let msg = b"Subject: hi\r\nFrom: sender@example.org\r\n\r\nbuy now\r\n";
    let r = http(sv.http, &rspamd_request(msg, ""));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // multipart (a later rspamd's formatter), parts in the other order, chunked.
    let meta = r#"{"from":"","rcpt":["c@example.edu"],"qid":"Q2","action":"add header","score":7.5,"symbols":[{"name":"X","score":7.5}]}"#;
    let mp = format!("--0f3a\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\nContent-Transfer-Encoding: binary\r\n\r\n{meta}\r\n--0f3a\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.eml\"\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n\r\nSubject: mp\r\n\r\nx\r\n\r\n--0f3a--\r\n");
    let (a, b) = mp.as_bytes().split_at(100);
    let mut req = b"POST /rspamd HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=\"0f3a\"\r\n\r\n".to_vec();
    for part in [a, b] {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = http(sv.http, &req);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Bad requests: a clear status, nothing stored.
    let before = sv.pending();
    let message_part =
        "--0f3a\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nSubject: two\r\n\r\nx\r\n\r\n";
    let twice = |first: &str, second: &str| {
        let body = format!("{first}{second}--0f3a--\r\n");
        let mut req = format!(
            "POST /rspamd HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=0f3a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        req
    };
    let meta_part = format!("--0f3a\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{meta}\r\n");
    for (req, want) in [
        // Two messages or two envelopes in one request: neither is guessed at.
        (twice(&format!("{meta_part}{message_part}"), message_part), "400"),
        (twice(&format!("{meta_part}{meta_part}"), message_part), "400"),
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nContent-Len".to_vec(), "400"),
        (rspamd_request(msg, "")[..200].to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nX-Rspamd-Rcpt: [\"a@example.edu\"]\r\n\r\n".to_vec(), "411"),
        (b"POST /rspamd HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n".to_vec(), "413"),
        (b"POST /rspamd HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 1\r\nX-Rspamd-Rcpt: [\"a@example.edu\"]\r\n\r\nx".to_vec(), "415"),
        (b"POST /rspamd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab".to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nContent-Length: 3\r\nX-Rspamd-Rcpt: unknown\r\n\r\nabc".to_vec(), "400"),
        (b"GET /rspamd HTTP/1.1\r\n\r\n".to_vec(), "405"),
        // Two lengths for one body: neither may be trusted (the first would store "abc" of "abcde").
        (b"POST /rspamd HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\nX-Rspamd-Rcpt: [\"a@example.edu\"]\r\n\r\nabcde".to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nX-Rspamd-Rcpt: [\"a@example.edu\"]\r\n\r\n5\r\nabcde\r\n0\r\n\r\n".to_vec(), "400"),
        // An envelope address that is not UTF-8: refused, not held with U+FFFD in its place.
        (b"POST /rspamd HTTP/1.1\r\nContent-Length: 3\r\nX-Rspamd-Rcpt: [\"a\xfe@example.edu\"]\r\n\r\nabc".to_vec(), "400"),
        (b"POST /rspamd HTTP/1.1\r\nContent-Length: 3\r\nX-Rspamd-From: s\xe9@example.org\r\nX-Rspamd-Rcpt: [\"a@example.edu\"]\r\n\r\nabc".to_vec(), "400"),
        (b"POST /other HTTP/1.1\r\n\r\n".to_vec(), "404"),
    ] {
        let r = http(sv.http, &req);
        assert!(r.starts_with(&format!("HTTP/1.1 {want}")), "want {want} for {:?}: {r}", String::from_utf8_lossy(&req));
    }
    assert_eq!(sv.pending(), before, "nothing partial stored");
    let held = sv.held();
    assert_eq!(held.len(), 2);
    let m = held.iter().find(|m| m["queue_id"] == "4QxYz1AbCd").unwrap();
    assert_eq!(m["verdict"], "SPAM", "rspamd preset on the action");
    assert_eq!(m["scan"]["action"], "reject");
    assert_eq!(m["scan"]["score"], 20.0);
    assert_eq!(m["scan"]["symbols"][0]["name"], "BAD_SENDER");
    let m = held.iter().find(|m| m["queue_id"] == "Q2").unwrap();
    assert_eq!(m["from"], "");
    assert_eq!(m["scan"]["action"], "add header");
    let show = sv.store.q(&["show", m["id"].as_str().unwrap()]).text();
    assert!(show.contains("scan          add header, score 7.5, symbols X"), "{show}");
}

#[test]
fn serve_token_off_loopback_sigterm_and_sighup() {
    // A token is required when set; SIGHUP reloads limits; SIGTERM exits 0.
    let mut sv = Serve::start("[serve]\nhttp_token = \"s3cret\"\n");
    let msg = b"Subject: t\r\n\r\nx\r\n";
    assert!(http(sv.http, &rspamd_request(msg, "")).starts_with("HTTP/1.1 401"));
    assert!(http(sv.http, &rspamd_request(msg, "Authorization: Bearer wrong\r\n")).starts_with("HTTP/1.1 401"));
    assert!(http(sv.http, &rspamd_request(msg, "Authorization: Bearer s3cret\r\n")).starts_with("HTTP/1.1 200"));
    std::fs::write(&sv.cfg, "[serve]\nhttp_token = \"other\"\n").unwrap();
    sv.signal("HUP");
    wait_for(Duration::from_secs(5), "reload", || sv.log().contains("configuration reloaded"));
    assert!(http(sv.http, &rspamd_request(msg, "Authorization: Bearer other\r\n")).starts_with("HTTP/1.1 200"));
    // Config check refuses a non-loopback HTTP listener without a token.
    let bad = sv.store.scratch.file("bad.toml", "[serve]\nhttp = \"0.0.0.0:1\"\n");
    let out = sv.store.q(&["--config", bad.to_str().unwrap(), "config", "check"]);
    assert!(!out.success() && out.all().contains("serve.http"), "{}", out.all());
    let bad = sv.store.scratch.file(
        "bad2.toml",
        "[serve]\nrules = [\"nope\"]\n[[serve.rule]]\nheader = \"X A\"\nmatch = \"x\"\nverdict = \"V\"\n",
    );
    let out = sv.store.q(&["--config", bad.to_str().unwrap(), "config", "check"]);
    assert!(
        !out.success() && out.all().contains("unknown rule preset") && out.all().contains("not a header field name"),
        "{}",
        out.all()
    );
    // SIGTERM with an idle session open: it is told 421, serve exits 0.
    let mut c = sv.lmtp();
    sv.signal("TERM");
    assert!(c.reply().starts_with("421 4.3.2"));
    let status = sv.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", sv.log());
    let _ = &mut sv;
}

// ----- behind a real Postfix: its `lmtp` transport delivering to `serve` on a unix socket

/// `serve` as the store's owner ([`postfix::USER`]) on the Postfix instance's store, listening on `sock`,
/// optionally under `strace` with `inject` (`-e inject=SPEC`, tracing only `fsync`). Killed on drop.
struct PfServe {
    child: Child,
    /// The pid of serve itself (setpriv and strace exec or trace it; without strace the child is serve).
    pid: u32,
}

impl PfServe {
    fn start(pf: &Postfix, cfg: &Path, sock: &Path, err: &Path, inject: Option<&str>) -> PfServe {
        let setpriv = quarantine_testkit::require("setpriv", "util-linux");
        let mut c = match inject {
            None => pf.scratch.program(&setpriv),
            Some(spec) => {
                let mut c = pf.scratch.program(quarantine_testkit::strace::require());
                c.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e"]).arg(format!("inject={spec}"));
                c.arg("--").arg(&setpriv);
                c
            }
        };
        c.args([format!("--reuid={}", postfix::USER), format!("--regid={}", postfix::GROUP)])
            .args(["--clear-groups", "--"])
            .arg(&pf.bin)
            .arg("--config")
            .arg(cfg)
            .arg("--store")
            .arg(&pf.store)
            .arg("serve")
            .arg("--lmtp")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(err).unwrap());
        let child = c.spawn().unwrap();
        let sock = sock.to_path_buf();
        wait_for(Duration::from_secs(20), "serve listening", || UnixStream::connect(&sock).is_ok());
        // The process whose socket that is: the child itself, or strace's traced descendant.
        let pid = if inject.is_none() { child.id() } else { descendant_serve(child.id()) };
        PfServe { child, pid }
    }

    fn kill(&mut self) {
        let _ = Command::new("kill").args(["-s", "KILL", &self.pid.to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }

    /// Waits until it has exited by itself (killed by an injected signal).
    fn wait_dead(&mut self) {
        let pid = self.pid;
        wait_for(Duration::from_secs(60), "serve killed by strace's injected SIGKILL", || {
            !Path::new(&format!("/proc/{pid}/exe")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
        });
        let _ = self.child.wait();
    }
}

impl Drop for PfServe {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "KILL", &self.pid.to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `quarantine` process below `pid` (strace → setpriv, exec'd into quarantine).
fn descendant_serve(pid: u32) -> u32 {
    let mut found = None;
    wait_for(Duration::from_secs(10), "serve under strace", || {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        found = children.split_whitespace().next().and_then(|c| c.parse().ok());
        found.is_some()
    });
    found.unwrap()
}

/// A one-connection LMTP relay on `at` to serve's socket `to`: once more than `after` bytes went from Postfix to
/// serve (far more than the commands: it is in the middle of the message's DATA), it SIGKILLs `pid` and drops
/// both connections. Returns when that is done.
fn kill_mid_data(at: &Path, to: &Path, after: usize, pid: u32) -> std::thread::JoinHandle<usize> {
    let _ = std::fs::remove_file(at);
    let listener = std::os::unix::net::UnixListener::bind(at).unwrap();
    std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let to = to.to_path_buf();
    std::thread::spawn(move || {
        let (mut pfx, _) = listener.accept().unwrap();
        let mut up = UnixStream::connect(&to).unwrap();
        let (mut up_r, mut pfx_w) = (up.try_clone().unwrap(), pfx.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut up_r, &mut pfx_w);
            let _ = pfx_w.shutdown(std::net::Shutdown::Both);
        });
        let mut sent = 0usize;
        let mut buf = [0u8; 16384];
        loop {
            let n = pfx.read(&mut buf).unwrap_or(0);
            if n == 0 || up.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n;
            if sent > after {
                assert!(Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status().unwrap().success());
                break;
            }
        }
        let _ = up.shutdown(std::net::Shutdown::Both);
        let _ = pfx.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
        sent
    })
}

/// `message` as Postfix's smtpd stored and its lmtp client sent it: every line ending CRLF.
fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn pf_held(pf: &Postfix) -> Vec<serde_json::Value> {
    let ingest = pf.q_as_user(&["ingest"]);
    assert!(ingest.status.success(), "ingest: {ingest:?}");
    let out = pf.q_as_user(&["search", "--json"]);
    assert!(out.status.success(), "search: {out:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn rcpts_of(m: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> =
        m["recipients"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// The held messages whose Message-ID is `<mid>`.
fn by_mid<'a>(held: &'a [serde_json::Value], mid: &str) -> Vec<&'a serde_json::Value> {
    held.iter().filter(|m| m["message_id"].as_str().is_some_and(|x| x.trim_matches(['<', '>']) == mid)).collect()
}

fn pf_nothing_bounced(pf: &Postfix) {
    let log = pf.maillog();
    for bad in ["status=bounced", "sender non-delivery notification", "status=expired", "fatal:", "panic:"] {
        assert!(!log.contains(bad), "the maillog has {bad:?}:\n{log}");
    }
}

fn deferred(pf: &Postfix, qid: &str) -> bool {
    pf.maillog().lines().any(|l| l.contains(qid) && l.contains("status=deferred"))
        && pf.queue().iter().any(|m| m["queue_id"] == qid && m["queue_name"] == "deferred")
}

#[test]
fn serve_behind_postfix_lmtp_holds_every_recipient_byte_exact_and_survives_sigkill() {
    quarantine_testkit::env::require_root("a private Postfix instance");
    quarantine_testkit::postfix::postfix_bin();
    quarantine_testkit::sink::smtp_sink();
    quarantine_testkit::strace::require();
    let pf = Postfix::start(BIN);
    let root = pf.dir.path().to_path_buf();
    // At most 3 recipients per message: Postfix's fourth gets serve's per-recipient 452 and is retried later.
    let cfg = root.join("conf/serve.toml");
    std::fs::write(&cfg, "[serve]\nmax_recipients = 3\n").unwrap();
    let err = root.join("log/serve.err");
    let sock = pf.lmtp_sock.clone();
    let serve_log = || std::fs::read_to_string(&err).unwrap_or_default();
    const WAIT: Duration = Duration::from_secs(60);

    // ----- 1. several recipients (one refused), a null sender, 8-bit, LF, CRLF and mixed line ends
    let mut sv = PfServe::start(&pf, &cfg, &sock, &err, None);
    let m1: &[u8] = b"From: s@example.org\nTo: a@example.edu\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
        Message-ID: <lmtp1@example.org>\nSubject: four recipients\nX-Test-Verdict: lmtp\n\n\
        LF body, UTF-8 \xc3\xa9t\xc3\xa9\n.leading dot\nend\n";
    let m2: &[u8] = b"From: MAILER-DAEMON@example.org\r\nTo: a@example.edu\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
        Message-ID: <lmtp2@example.org>\r\nSubject: a bounce\r\nX-Test-Verdict: lmtp\r\n\r\nCRLF body\r\n\r\n..two dots\r\n";
    let m3: &[u8] = b"From: s@example.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <lmtp3@example.org>\n\
        Subject: mixed\r\nX-Test-Verdict: lmtp\n\r\nlatin-1 \xe9\xe8\r\nLF line\nlast\r\n";
    let all4 = ["a@example.edu", "b@example.edu", "c@example.edu", "d@example.edu"];
    let q1 = send(pf.smtp_port, "s@example.org", &all4, m1);
    let q2 = send(pf.smtp_port, "", &["a@example.edu"], m2);
    let q3 = send(pf.smtp_port, "s@example.org", &["b@example.edu", "c@example.edu"], m3);
    wait_for(WAIT, "three messages held, the refused recipient deferred", || {
        pf_held(&pf).len() == 3 && pf.queue().len() == 1 && deferred(&pf, &q1)
    });
    let log = pf.maillog();
    assert!(
        log.lines().any(|l| l.contains(&q1) && l.contains("<d@example.edu>") && l.contains("452 4.5.3")),
        "d@ refused with serve's 452, per recipient:\n{log}"
    );
    for r in &all4[..3] {
        assert!(
            log.lines().any(|l| l.contains(&q1) && l.contains(&format!("to=<{r}>")) && l.contains("status=sent")),
            "{r} delivered over LMTP:\n{log}"
        );
    }
    let held = pf_held(&pf);
    for (mid, qid, message, from, rcpts) in [
        ("lmtp1@example.org", &q1, m1, "s@example.org", &all4[..3]),
        ("lmtp2@example.org", &q2, m2, "", &all4[..1]),
        ("lmtp3@example.org", &q3, m3, "s@example.org", &all4[1..3]),
    ] {
        let found = by_mid(&held, mid);
        assert_eq!(found.len(), 1, "{mid}: {held:?}");
        let m = found[0];
        assert_eq!(m["from"], from, "{mid}");
        assert_eq!(m["queue_id"], qid.as_str(), "the queue id from Postfix's Received line");
        assert_eq!(rcpts_of(m), rcpts, "{mid}");
        let raw = pf.q(&["show", m["id"].as_str().unwrap(), "--raw"]);
        assert!(raw.status.success(), "{raw:?}");
        let (raw, want) = (raw.stdout, crlf(message));
        assert!(
            raw.ends_with(&want),
            "{mid}: held bytes are not what Postfix sent:\n{}",
            String::from_utf8_lossy(&raw)
        );
        // Before the message: only Postfix's Received header (its first line and continuation lines).
        let head = std::str::from_utf8(&raw[..raw.len() - want.len()]).unwrap();
        assert!(head.starts_with("Received: from ") && head.contains(&format!("with ESMTP id {qid}")), "{head}");
        assert!(head.split("\r\n").skip(1).all(|l| l.is_empty() || l.starts_with([' ', '\t'])), "{head}");
    }
    pf_nothing_bounced(&pf);

    // ----- 2. SIGKILL in the middle of DATA: a 4 MB message, killed after 1 MB reached serve (through a relay
    // on Postfix's socket that counts the bytes)
    sv.kill();
    let inner = root.join("lmtp/inner.sock");
    let mut sv = PfServe::start(&pf, &cfg, &inner, &err, None);
    let relay = kill_mid_data(&sock, &inner, 1 << 20, sv.pid);
    let mut big = b"From: s@example.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <lmtp4@example.org>\n\
        Subject: big\nX-Test-Verdict: lmtp\n\n"
        .to_vec();
    for i in 0..60_000 {
        big.extend_from_slice(format!("line {i:08} of a large message, 8-bit \u{e9} and padding......\n").as_bytes());
    }
    let q4 = send(pf.smtp_port, "s@example.org", &["a@example.edu", "b@example.edu"], &big);
    let relayed = relay.join().unwrap();
    assert!(relayed > 1 << 20 && relayed < big.len(), "killed mid-DATA after {relayed} bytes");
    sv.wait_dead();
    wait_for(WAIT, "the big message deferred", || deferred(&pf, &q4));
    let log = pf.maillog();
    assert!(
        log.lines().any(|l| l.contains(&q4) && l.contains("status=deferred") && l.contains("message body")),
        "deferred while sending the body:\n{log}"
    );
    assert!(by_mid(&pf_held(&pf), "lmtp4@example.org").is_empty(), "nothing partial held");

    // ----- 3. SIGKILL after the dot, before the reply: at the spool file's fsync (not durable yet), and at the
    // spool directory's fsync (the file renamed into spool/: durable once serve is gone, as far as a process
    // death goes). strace counts per thread: a session's first fsync is its file's, its second the directory's
    // (commit.rs: the leader of a lone session's round is that session).
    let mut killed = Vec::new();
    for (when, mid) in [(1, "lmtp5@example.org"), (2, "lmtp6@example.org")] {
        let mut sv = PfServe::start(&pf, &cfg, &sock, &err, Some(&format!("fsync:signal=KILL:when={when}")));
        let m = format!(
            "From: s@example.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{mid}>\nSubject: killed at fsync \
             {when}\nX-Test-Verdict: lmtp\n\nbody \u{e9}\n"
        );
        let q = send(pf.smtp_port, "s@example.org", &all4[..3], m.as_bytes());
        sv.wait_dead();
        wait_for(WAIT, "deferred after serve died before its reply", || deferred(&pf, &q));
        assert!(
            pf.maillog()
                .lines()
                .any(|l| l.contains(&q) && l.contains("status=deferred") && l.contains("lost connection")),
            "{}",
            pf.maillog()
        );
        killed.push((mid, q, m));
    }
    let held = pf_held(&pf);
    assert!(by_mid(&held, "lmtp5@example.org").is_empty(), "killed before its file was renamed: not held");
    let durable = by_mid(&held, "lmtp6@example.org");
    assert_eq!(durable.len(), 1, "renamed into spool/ before the kill: held already");
    assert_eq!(rcpts_of(durable[0]), &all4[..3]);
    pf_nothing_bounced(&pf);

    // ----- 4. restart, flush: every message held for every recipient exactly once
    let _sv = PfServe::start(&pf, &cfg, &sock, &err, None);
    pf.flush();
    wait_for(WAIT, "the queue empty after the flush", || pf.queue().is_empty());
    let held = pf_held(&pf);
    assert_eq!(held.len(), 6, "{held:#?}\n{}", serve_log());
    let one = |mid: &str| -> serde_json::Value {
        let f = by_mid(&held, mid);
        assert_eq!(f.len(), 1, "{mid} held once: {f:#?}");
        f[0].clone()
    };
    assert_eq!(rcpts_of(&one("lmtp1@example.org")), all4, "the refused recipient merged into the same message");
    let m4 = one("lmtp4@example.org");
    assert_eq!(rcpts_of(&m4), &all4[..2]);
    let raw = pf.q(&["show", m4["id"].as_str().unwrap(), "--raw"]).stdout;
    assert!(raw.ends_with(&crlf(&big)), "the big message byte-exact after the redelivery");
    for (mid, q, m) in &killed {
        let h = one(mid);
        assert_eq!(rcpts_of(&h), &all4[..3], "{mid}");
        let sent = pf.maillog().lines().filter(|l| l.contains(q.as_str()) && l.contains("status=sent")).count();
        assert_eq!(sent, 3, "{mid} redelivered to serve after the flush, for each recipient");
        assert_eq!(h["queue_id"], q.as_str());
        let raw = pf.q(&["show", h["id"].as_str().unwrap(), "--raw"]).stdout;
        assert!(raw.ends_with(&crlf(m.as_bytes())), "{mid}");
    }
    pf_nothing_bounced(&pf);
    let deep = pf.q(&["verify", "--deep"]);
    assert!(deep.status.success(), "{deep:?}");
}

/// docs/integration/amavis.md's recipe, replayed: amavis's `smtp:` quarantine method sends a copy addressed to the
/// quarantine mailbox with the original envelope in `X-Envelope-From`/`X-Envelope-To`; swaks plays amavis (plain
/// ESMTP on serve's listener). The `[serve]` snippet is the doc's, but for the listener, which the test owns.
#[test]
fn serve_takes_an_amavis_quarantine_copy_replayed_by_swaks() {
    let swaks = quarantine_testkit::require("swaks", "swaks");
    let s = Serve::start("[serve]\nrules = [\"amavis\", \"spamassassin\"]\nenvelope_headers = true\n");
    let copy = b"X-Envelope-From: <orig@sender.example>\r\n\
        X-Envelope-To: <r1@example.edu>,\r\n <r2@example.edu>\r\n\
        X-Quarantine-ID: <AbC123xyz>\r\n\
        X-Amavis-Alert: INFECTED, message contains virus: Eicar-Test-Signature\r\n\
        From: orig@sender.example\r\nTo: r1@example.edu, r2@example.edu\r\nSubject: invoice\r\n\
        Message-ID: <amavis-replay@sender.example>\r\n\r\nthe original body\r\n.leading dot\r\n";
    let data = s.store.scratch.file("amavis-copy.eml", copy);
    let mut c = s.store.scratch.program(swaks);
    c.arg("--socket")
        .arg(&s.sock)
        .args(["--from", "virusalert@localhost", "--to", "virus-quarantine@localhost", "--ehlo", "amavis.test"])
        .arg("--data")
        .arg(&data);
    let out = quarantine_testkit::run::run(c, quarantine_testkit::Input::Null, quarantine_testkit::HANG);
    out.code_is(0, "swaks as amavis");
    assert!(out.text().contains("250"), "{}", out.brief());
    s.store.ingest();
    let held = s.held();
    assert_eq!(held.len(), 1, "{held:?}");
    let m = &held[0];
    assert_eq!(m["verdict"], "VIRUS");
    assert_eq!(m["scanner"], "amavis");
    assert_eq!(m["from"], "orig@sender.example", "the real envelope, not the quarantine mailbox's");
    let rcpts: Vec<&str> = m["recipients"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(rcpts, ["r1@example.edu", "r2@example.edu"]);
    // Byte-exact: what went over the wire, the dot-stuffing undone once. swaks sends its terminator as CRLF . CRLF
    // after the file's own final CRLF, so the message on the wire ends with one empty line more than the file.
    let raw = s.store.raw(m["id"].as_str().unwrap());
    assert_eq!(raw, [&copy[..], b"\r\n"].concat());
}

/// docs/integration/rspamd.md's metadata_exporter rule, verbatim but for serve's port.
fn exporter_conf(port: u16) -> String {
    format!(
        "rules {{\n  QUARANTINE {{\n    backend = \"http\";\n    url = \"http://127.0.0.1:{port}/rspamd\";\n    \
         formatter = \"default\";\n    meta_headers = true;\n    selector = \"is_reject\";\n    defer = true;\n  }}\n}}\n"
    )
}

/// A score-based rule (not a prefilter action: see PEERS / the doc) rejecting the test sender's mail.
const BAD_SENDER_MULTIMAP: &str = "QUARANTINE_TEST_SENDER {\n  type = \"from\";\n  filter = \"email:addr\";\n  \
    map = \"@DIR@/local/local.d/bad_senders.map\";\n  score = 20;\n  description = \"the test's rejected sender\";\n}\n";

/// A real rspamd 3.4 (private instance) with docs/integration/rspamd.md's metadata_exporter rule in front of serve:
/// rspamc scans a message from a sender a score-based multimap rule rejects; the exporter POSTs it to serve, which
/// holds it with rspamd's action, score and symbols, byte-exact. With serve down, the same scan answers `soft
/// reject` (`defer = true`: the MTA keeps the message) and nothing reaches the store; once serve is back, the
/// MTA's retry is held.
#[test]
fn rspamd_metadata_exporter_posts_to_serve_and_defers_when_serve_is_down() {
    quarantine_testkit::env::require_root("a private rspamd drops to _rspamd");
    let mut sv = Serve::start(CFG);
    let rs = Rspamd::start(&[
        ("metadata_exporter.conf", &exporter_conf(sv.http)),
        ("multimap.conf", BAD_SENDER_MULTIMAP),
        ("bad_senders.map", "bad@sender.test\n"),
    ]);
    let envelope = ["--from", "bad@sender.test", "--rcpt", "a@example.edu", "--ip", "192.0.2.1"];
    let message = |mid: &str| -> Vec<u8> {
        format!(
            "From: Bad <bad@sender.test>\nTo: a@example.edu\nSubject: =?UTF-8?Q?caf=C3=A9?= offer\n\
             Message-ID: <{mid}@sender.test>\nDate: Tue, 01 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\n\
             Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
             caf\u{e9} \u{2014} buy now\r\n.a leading dot\n\ttab, trailing space \n"
        )
        .into_bytes()
    };

    // Serve up: rejected by score, exported, held.
    let first = message("rspamd-1");
    let file = sv.store.scratch.file("first.eml", &first);
    let (action, out) = rs.scan(&envelope, &file);
    assert_eq!(action, "reject", "{out}");
    let spool = |sv: &Serve| sv.store.spool_files().len();
    wait_for(Duration::from_secs(30), "serve to spool rspamd's POST", || spool(&sv) == 1);
    sv.store.ingest();
    let held = sv.held();
    assert_eq!(held.len(), 1, "{held:?}");
    let m = &held[0];
    assert_eq!(m["verdict"], "SPAM", "rspamd preset on X-Rspamd-Action\n{m}");
    assert_eq!(m["from"], "bad@sender.test");
    assert_eq!(rcpts_of(m), ["a@example.edu"]);
    assert_eq!(m["scan"]["action"], "reject", "{m}");
    assert!(m["scan"]["score"].as_f64().unwrap() >= 20.0, "{m}");
    let symbols: Vec<&str> =
        m["scan"]["symbols"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(symbols.contains(&"QUARANTINE_TEST_SENDER"), "{symbols:?}");
    let id = m["id"].as_str().unwrap();
    assert_eq!(sv.store.show_json(id)["scan"], m["scan"]);
    assert_eq!(sv.store.raw(id), first, "byte-exact");

    // Serve down: the exporter cannot deliver, so rspamd soft-rejects (the MTA keeps the message) and the store
    // gets nothing.
    sv.stop();
    assert!(TcpStream::connect(("127.0.0.1", sv.http)).is_err(), "serve is down");
    let second = message("rspamd-2");
    let file = sv.store.scratch.file("second.eml", &second);
    let (action, out) = rs.scan(&envelope, &file);
    assert_eq!(action, "soft reject", "{out}\nrspamd log:\n{}", rs.log());
    assert!(rs.log().contains("deferring message"), "{}", rs.log());
    assert_eq!(spool(&sv), 0, "nothing was acknowledged, nothing spooled");
    sv.store.ingest();
    assert_eq!(sv.held().len(), 1, "nothing new in the index");

    // The MTA's retry once serve is back: held, nothing lost.
    let cfg = sv.cfg.clone();
    sv.spawn(&cfg);
    let (action, out) = rs.scan(&envelope, &file);
    assert_eq!(action, "reject", "{out}");
    wait_for(Duration::from_secs(30), "serve to spool the retry", || spool(&sv) == 1);
    sv.store.ingest();
    let held = sv.held();
    assert_eq!(held.len(), 2, "{held:?}");
    let retry = by_mid(&held, "rspamd-2@sender.test");
    assert_eq!(retry.len(), 1, "{held:?}");
    assert_eq!(sv.store.raw(retry[0]["id"].as_str().unwrap()), second, "byte-exact");
}

/// DESIGN section 10: a success reply only once durable. When the spool cannot take a message (here `spool/` is a
/// regular file), LMTP answers 451 for every recipient after the dot and HTTP answers 503, nothing is held; once the
/// spool is back, the same deliveries succeed.
#[test]
fn serve_tempfails_what_the_spool_cannot_take_and_holds_it_once_repaired() {
    let sv = Serve::start(CFG);
    let (real, away) = (sv.store.root.join("spool"), sv.store.root.join("spool.away"));
    std::fs::rename(&real, &away).unwrap();
    std::fs::write(&real, b"not a directory").unwrap();
    let session = |c: &mut Client| -> Vec<String> {
        assert!(c.cmd("LHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<a@example.edu>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<b@example.edu>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: while the spool is broken\r\n\r\nbody\r\n.\r\n");
        vec![c.reply(), c.reply()]
    };
    let replies = session(&mut sv.lmtp());
    assert!(replies.iter().all(|r| r.starts_with("451")), "LMTP after the dot: {replies:?}");
    let msg = b"Subject: hi\r\nFrom: sender@example.org\r\n\r\nbuy now\r\n";
    let r = http(sv.http, &rspamd_request(msg, ""));
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert_eq!(std::fs::read(&real).unwrap(), b"not a directory", "serve overwrote spool");
    std::fs::remove_file(&real).unwrap();
    std::fs::rename(&away, &real).unwrap();
    assert!(sv.held().is_empty(), "nothing is held from a tempfailed delivery");
    // The MTA's retries.
    let replies = session(&mut sv.lmtp());
    assert!(replies.iter().all(|r| r.starts_with("250")), "LMTP after repair: {replies:?}");
    assert!(http(sv.http, &rspamd_request(msg, "")).starts_with("HTTP/1.1 200"));
    assert_eq!(sv.held().len(), 2);
}

/// The headers the border must strip, as a sender outside would forge them (one folded, some in lower case:
/// Postfix's regexp tables and serve's rules both ignore case). Each would pick a verdict or an envelope.
const FORGED: &[u8] = b"X-Spam-Flag: YES\r\n\
    X-Spam-Status: Yes, score=99.0 required=5.0\r\n\ttests=FORGED_BY_THE_SENDER\r\n\
    x-virus-status: Infected (Forged-Signature)\r\n\
    X-Amavis-Alert: INFECTED, message contains virus: Forged-Signature\r\n\
    X-Envelope-From: <forged@evil.example>\r\n\
    X-Envelope-To: <victim@example.edu>,\r\n <other@example.edu>\r\n\
    X-Rspamd-Action: reject\r\n\
    x-rspamd-score: 99\r\n";

/// docs/integration/postfix-lmtp.md, "Strip at the border", against a real Postfix: a message from outside with
/// every verdict header forged goes in at the border smtpd, whose cleanup runs the doc's header_checks (read out of
/// the doc by the testkit), through the content filter stand-in to the re-injection port, and over LMTP to serve.
/// It arrives without them, so it gets the default verdict and its real envelope. The control: the same headers
/// handed to the re-injection port directly (as the filter would pass its own) do pick the verdict, so the rules
/// were on and the stripping is what made the difference.
#[test]
fn serve_behind_the_border_never_sees_a_verdict_header_the_sender_forged() {
    quarantine_testkit::env::require_root("a private Postfix instance");
    quarantine_testkit::postfix::postfix_bin();
    quarantine_testkit::sink::smtp_sink();
    let pf = Postfix::start(BIN);
    let doc = quarantine_testkit::doc::fenced_blocks("docs/integration/postfix-lmtp.md", "Strip at the border");
    let installed = std::fs::read_to_string(pf.conf.join("border_header_checks")).unwrap();
    assert_eq!(installed, doc[0], "the border runs the doc's header_checks, verbatim");
    // The doc's master.cf: the border_cleanup wiring is the instance's (its paths and service lines aside).
    let master = std::fs::read_to_string(pf.conf.join("master.cf")).unwrap();
    let conf = pf.conf.to_str().unwrap();
    let wiring: Vec<String> = doc[1]
        .lines()
        .filter(|l| l.contains("cleanup_service_name") || l.contains("header_checks="))
        .map(|l| l.replace("/etc/postfix", conf))
        .collect();
    assert_eq!(wiring.len(), 2, "{}", doc[1]);
    for l in &wiring {
        assert!(master.lines().any(|m| m == l), "the instance's master.cf lacks the doc's {l:?}:\n{master}");
    }
    let root = pf.dir.path().to_path_buf();
    let cfg = root.join("conf/serve.toml");
    // Every preset the doc's [serve] snippet turns on, and the amavis envelope headers honoured.
    std::fs::write(
        &cfg,
        "[serve]\nrules = [\"clamav\", \"spamassassin\", \"amavis\", \"rspamd\"]\nenvelope_headers = true\n\
         default_verdict = \"QUARANTINE\"\n",
    )
    .unwrap();
    let err = root.join("log/serve.err");
    let _sv = PfServe::start(&pf, &cfg, &pf.lmtp_sock, &err, None);
    let kept = |mid: &str| -> Vec<u8> {
        format!(
            "From: s@example.org\r\nTo: a@example.edu\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
             Message-ID: <{mid}>\r\nSubject: pick my own verdict\r\nX-Test-Verdict: lmtp\r\n\r\nbody \u{e9}\r\n"
        )
        .into_bytes()
    };
    let (outside, inside) = (kept("border-forged@example.org"), kept("border-control@example.org"));
    send(pf.border_port, "s@example.org", &["a@example.edu"], &[FORGED, &outside].concat());
    send(pf.smtp_port, "s@example.org", &["a@example.edu"], &[FORGED, &inside].concat());
    wait_for(Duration::from_secs(60), "both messages held", || pf_held(&pf).len() == 2 && pf.queue().is_empty());
    let held = pf_held(&pf);
    let log = pf.maillog();

    let m = by_mid(&held, "border-forged@example.org");
    assert_eq!(m.len(), 1, "{held:#?}");
    let m = m[0];
    assert_eq!(m["verdict"], "QUARANTINE", "the default verdict, not a forged one: {m}\n{log}");
    assert_eq!(m["from"], "s@example.org", "the real envelope sender, not X-Envelope-From");
    assert_eq!(rcpts_of(m), ["a@example.edu"], "the real recipient, not X-Envelope-To");
    assert!(m["scan"].is_null() || m["scan"]["action"].is_null(), "no forged rspamd action: {m}");
    let raw = pf.q(&["show", m["id"].as_str().unwrap(), "--raw"]).stdout;
    assert!(raw.ends_with(&outside), "the rest byte-exact:\n{}", String::from_utf8_lossy(&raw));
    // Before it only Postfix's own Received headers (the border's, then the re-injection port's).
    let head = std::str::from_utf8(&raw[..raw.len() - outside.len()]).unwrap();
    let fields: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(fields, ["Received", "Received"], "{head}");
    let lower = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    for name in [
        "x-spam-",
        "x-virus-status",
        "x-amavis-alert",
        "x-envelope-",
        "x-rspamd-",
        "forged_by_the_sender",
        "forged-signature",
        "evil.example",
    ] {
        assert!(!lower.contains(name), "{name} reached serve:\n{}", String::from_utf8_lossy(&raw));
    }

    let c = by_mid(&held, "border-control@example.org");
    assert_eq!(c.len(), 1, "{held:#?}");
    let c = c[0];
    assert_ne!(c["verdict"], "QUARANTINE", "the control: unstripped, the same headers pick the verdict: {c}");
    assert_eq!(c["from"], "forged@evil.example", "the control: X-Envelope-From is honoured when it gets through");
    let raw = pf.q(&["show", c["id"].as_str().unwrap(), "--raw"]).stdout;
    assert!(raw.ends_with(&[FORGED, &inside].concat()), "the control keeps its headers");
    pf_nothing_bounced(&pf);
}

/// Postfix's LMTP connection cache against serve (the `lmtpcache` transport of the test instance: the cache on for
/// serve's socket, one delivery at a time). A burst of messages queued while serve was down is flushed at once and
/// goes over one reused connection, with Postfix's RSET between transactions: serve's log says which session each
/// message came over (`session=N`), and each session's closing line what it carried. Every message is held once, byte-exact, for its recipients; the idle
/// cached connection is then closed by Postfix (its `lmtp_connection_cache_time_limit`), which serve logs, and the
/// next message opens a new session.
#[test]
fn serve_behind_postfix_takes_a_burst_over_one_cached_lmtp_connection() {
    quarantine_testkit::env::require_root("a private Postfix instance");
    quarantine_testkit::postfix::postfix_bin();
    quarantine_testkit::sink::smtp_sink();
    let pf = Postfix::start(BIN);
    let root = pf.dir.path().to_path_buf();
    let cfg = root.join("conf/serve.toml");
    std::fs::write(&cfg, "[serve]\n").unwrap();
    let err = root.join("log/serve.err");
    let serve_log = || std::fs::read_to_string(&err).unwrap_or_default();
    const BURST: usize = 8;
    const WAIT: Duration = Duration::from_secs(60);
    let message = |i: usize| -> Vec<u8> {
        format!(
            "From: s@example.org\nTo: a@example.edu\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
             Message-ID: <reuse{i}@example.org>\nSubject: burst {i}\nX-Test-Verdict: lmtp-reuse\n\n\
             message {i}, 8-bit \u{e9}\n.leading dot\n{}",
            // Sizes that differ, in lines Postfix leaves alone (its lmtp client folds lines past 998 bytes).
            format!("{}\n", "x".repeat(76)).repeat(i * 13 + 1)
        )
        .into_bytes()
    };
    let rcpts = |i: usize| -> Vec<String> { (0..1 + i % 3).map(|r| format!("r{r}@example.edu")).collect() };

    // serve is not listening yet: Postfix defers each message (connect fails) and keeps it.
    let mut sent = Vec::new();
    for i in 0..BURST {
        let r = rcpts(i);
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        sent.push(send(pf.smtp_port, "s@example.org", &r, &message(i)));
    }
    wait_for(WAIT, "the burst deferred while serve is down", || {
        let q = pf.queue();
        q.len() == BURST && q.iter().all(|m| m["queue_name"] == "deferred")
    });

    let _sv = PfServe::start(&pf, &cfg, &pf.lmtp_sock, &err, None);
    pf.flush();
    wait_for(WAIT, "the burst delivered", || pf.queue().is_empty());
    let held = pf_held(&pf);
    assert_eq!(held.len(), BURST, "{held:#?}\n{}", serve_log());
    for (i, qid) in sent.iter().enumerate() {
        let m = by_mid(&held, &format!("reuse{i}@example.org"));
        assert_eq!(m.len(), 1, "message {i} held once: {held:#?}");
        let mut want = rcpts(i);
        want.sort();
        assert_eq!(rcpts_of(m[0]), want, "message {i}");
        assert_eq!(m[0]["queue_id"], qid.as_str());
        let raw = pf.q(&["show", m[0]["id"].as_str().unwrap(), "--raw"]).stdout;
        assert!(raw.ends_with(&crlf(&message(i))), "message {i} byte-exact");
    }

    // Which session each message came over, from serve's own log line per message.
    let session_of = |line: &str| -> Option<u64> {
        line.split(", ").find_map(|f| f.strip_prefix("session=")).and_then(|n| n.parse().ok())
    };
    let wait_closed = |ids: &[u64]| -> String {
        let mut log = String::new();
        wait_for(WAIT, "serve logs the cached sessions closed", || {
            log = serve_log();
            ids.iter().all(|n| log.contains(&format!("session={n} closed")))
        });
        log
    };
    let log = serve_log();
    let mut per: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
    for l in log.lines().filter(|l| l.contains("status=held")) {
        *per.entry(session_of(l).unwrap_or_else(|| panic!("no session= in {l}"))).or_default() += 1;
    }
    assert_eq!(per.values().sum::<usize>(), BURST, "{log}");
    let busiest = per.values().max().copied().unwrap_or(0);
    assert!(
        per.len() < BURST && busiest >= BURST / 2,
        "the cached connection carried several messages: messages per session {per:?}\n{log}"
    );
    let maillog = pf.maillog();
    assert!(
        maillog.lines().any(|l| l.contains("relay=") && l.contains("conn_use=") && l.contains("status=sent")),
        "Postfix logs a reused connection (conn_use=):\n{maillog}"
    );
    // The idle cached connection: Postfix closes it after its cache time limit; serve logs each session once,
    // with what it carried, nothing tempfailed, and the RSETs Postfix sent between transactions.
    let ids: Vec<u64> = per.keys().copied().collect();
    let log = wait_closed(&ids);
    for (n, count) in &per {
        let close = log.lines().find(|l| l.contains(&format!("session={n} closed"))).unwrap();
        assert!(close.contains(&format!("held={count}, tempfailed=0")), "{close}");
        assert!(close.contains("via=lmtp"), "{close}");
        // Postfix resets a cached connection before each transaction it reuses it for; each RSET was followed by
        // a transaction that was held (held= above), so RSET left the session ready for the next MAIL.
        let rsets: usize = close.rsplit("rsets=").next().unwrap().trim().parse().unwrap();
        assert!(rsets + 1 >= *count, "an RSET between transactions: {close}");
    }

    // After the cache let go of it: the next message opens a new session and is held.
    let next = message(BURST);
    let q = send(pf.smtp_port, "s@example.org", &["a@example.edu"], &next);
    wait_for(WAIT, "the message after the idle close held", || pf_held(&pf).len() == BURST + 1);
    let log = serve_log();
    let last = log.lines().rfind(|l| l.contains("status=held")).unwrap();
    assert!(!ids.contains(&session_of(last).unwrap()), "a new session after the close: {last}\n{log}");
    assert!(pf.maillog().lines().any(|l| l.contains(&q) && l.contains("status=sent")));
    pf_nothing_bounced(&pf);
}

#[test]
fn serve_keeps_the_free_space_reserve_hold_keeps() {
    // A reserve no filesystem here has free: hold defers, and serve must too (451 per recipient, HTTP 503),
    // before it writes anything, rather than fill the disk the index and purge need.
    let sv = Serve::start("min_free_space = \"1000000T\"\n[serve]\n");
    let before = sv.pending();
    let msg = b"Subject: full\r\n\r\nx\r\n";
    let cfg = sv.cfg.to_str().unwrap();
    let hold = sv.store.run(
        &["--config", cfg, "hold", "--verdict", "V", "--from", "s@example.org", "--", "r@example.edu"],
        quarantine_testkit::Input::Bytes(msg),
    );
    assert_eq!(hold.code, 75, "{}", hold.brief());
    let mut c = sv.lmtp();
    assert!(c.cmd("LHLO gw").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<a@example.edu>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.edu>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: full\r\n\r\nx\r\n.\r\n");
    for r in ["a", "b"] {
        let reply = c.reply();
        assert!(reply.starts_with("451 "), "{r}: {reply}");
        assert!(reply.contains("reserve"), "{r}: {reply}");
    }
    let r = http(sv.http, &rspamd_request(msg, ""));
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert_eq!(sv.pending(), before, "nothing written, not even a temp file");
    // A reload that lowers the reserve applies to the next message (the sessions share the spool's reserve).
    std::fs::write(&sv.cfg, "min_free_space = \"1M\"\n[serve]\n").unwrap();
    sv.signal("HUP");
    wait_for(Duration::from_secs(5), "reload", || sv.log().contains("configuration reloaded"));
    let mut c = sv.lmtp();
    assert!(c.cmd("LHLO gw").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<a@example.edu>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: room\r\n\r\nx\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 "), "after the reload: {reply}\n{}", sv.log());
    assert_eq!(sv.pending(), before + 1, "the message is in the spool");
}
