//! `quarantine serve`'s LMTP/ESMTP side, whole: the input is what a client sends on one connection (written at
//! once, then the write side shut), fed to a real `quarantine_serve::run` listening on a unix socket in this
//! process, over a scratch store on tmpfs. The session's own line framing, smtp-proto's command parser and its
//! DATA receiver all run as in production. An independent model of the protocol walks the input and the
//! replies in lockstep and checks:
//! - nothing panics (libfuzzer-sys aborts on a panic in any thread, the session threads included);
//! - every complete line gets exactly one reply (group), in order, and nothing more is said: a desync would
//!   mean a line was taken as something it is not;
//! - a line longer than `max_line_length` is answered `500 5.5.2 Line too long` and never run; a line within
//!   the limit never is;
//! - after `354`, the message ends at the first CRLF `.` CRLF (counting the CRLF before DATA's first line) and
//!   nowhere else: what is held (read back from the spool file named in the reply) is exactly the
//!   dot-unstuffed bytes up to there; a message past `max_message_size` gets 552 and nothing is held;
//! - after the dot, one reply per accepted recipient in LMTP, one in SMTP.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use quarantine_serve::{Listen, ServeConfig};

#[path = "serve_common.rs"]
mod common;
use common::scratch;

const MAX_LINE: usize = 512;
const MAX_MESSAGE: u64 = 2048;
const MAX_RCPTS: usize = 8;

struct Server {
    sock: PathBuf,
    spool: PathBuf,
    host: String,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let root = scratch("lmtp");
        let sock = root.join("lmtp.sock");
        let mut cfg = ServeConfig { lmtp: Some(Listen::Unix(sock.clone())), ..ServeConfig::default() };
        cfg.limits.max_line_length = MAX_LINE;
        cfg.limits.max_message_size = MAX_MESSAGE;
        cfg.limits.max_recipients = MAX_RCPTS;
        cfg.commit_delay = Duration::ZERO;
        cfg.hostname = "fuzz.test".into();
        let store = root.clone();
        std::thread::spawn(move || {
            quarantine_serve::run(cfg, &store, Box::new(|| Err("no reload".into()))).unwrap();
        });
        for _ in 0..500 {
            if UnixStream::connect(&sock).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { sock, spool: root.join("spool"), host: "fuzz.test".into() }
    })
}

/// The whole conversation: what the server said, to EOF.
fn converse(sock: &Path, input: &[u8]) -> Vec<u8> {
    let mut c = UnixStream::connect(sock).unwrap();
    let mut w = c.try_clone().unwrap();
    let data = input.to_vec();
    // Written from another thread so a server with a full send buffer never deadlocks against us.
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&data);
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    t.join().unwrap();
    out
}

/// Reply groups (a multi-line reply is one group), each line without its CRLF.
fn groups(out: &[u8]) -> Vec<Vec<String>> {
    assert!(out.is_empty() || out.ends_with(b"\r\n"), "reply stream does not end with CRLF");
    let text = String::from_utf8(out.to_vec()).expect("replies are UTF-8");
    let mut gs = Vec::new();
    let mut cur = Vec::new();
    for line in text.split_terminator("\r\n") {
        let b = line.as_bytes();
        assert!(b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit), "bad reply line {line:?}");
        assert!(!line.contains('\r') && !line.contains('\n'), "bare CR/LF in a reply: {line:?}");
        cur.push(line.to_string());
        match b[3] {
            b'-' => {}
            b' ' => gs.push(std::mem::take(&mut cur)),
            _ => panic!("bad reply line {line:?}"),
        }
    }
    assert!(cur.is_empty(), "unterminated multi-line reply {cur:?}");
    gs
}

/// Data up to the first CRLF . CRLF (the CRLF before DATA's first line counts), dot-unstuffed; and how many
/// input bytes that used, terminator included. `None` when the input ends first.
fn model_data(rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut wire = b"\r\n".to_vec();
    wire.extend_from_slice(rest);
    let end = wire.windows(5).position(|w| w == b"\r\n.\r\n")?;
    // wire[2..end+2] is the content, with its last CRLF.
    let content = &wire[2..end + 2];
    let mut out = Vec::with_capacity(content.len());
    let mut at_line_start = true;
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        if at_line_start && b == b'.' {
            at_line_start = false;
            i += 1;
            continue;
        }
        out.push(b);
        at_line_start = b == b'\n' && i > 0 && content[i - 1] == b'\r';
        i += 1;
    }
    Some((out, end + 5 - 2))
}

/// The bodies of every spool file of `id`.
fn held_bodies(spool: &Path, id: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(spool).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!("{id}.")) {
            let f = std::fs::read(e.path()).unwrap();
            let h = u32::from_le_bytes(f[12..16].try_into().unwrap()) as usize;
            out.push(f[16 + h..f.len() - 88].to_vec());
        }
    }
    out
}

fn clear_spool(spool: &Path) {
    for e in std::fs::read_dir(spool).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn upper4(line: &[u8]) -> Vec<u8> {
    line.iter().take(4).map(u8::to_ascii_uppercase).collect()
}

fuzz_target!(|input: &[u8]| {
    let s = server();
    let out = converse(&s.sock, input);
    let gs = groups(&out);
    let mut g = gs.into_iter();
    let greeting = g.next().expect("no greeting");
    assert!(greeting[0].starts_with("220 "), "greeting {greeting:?}");
    let (mut lmtp, mut rcpts) = (false, 0usize);
    // SERVE_FUZZ_DEBUG=1 prints the walk (cargo fuzz run serve_lmtp ARTIFACT).
    let debug = std::env::var_os("SERVE_FUZZ_DEBUG").is_some();
    let mut pos = 0;
    let mut ended = false;
    while let Some(lf) = input[pos..].iter().position(|&b| b == b'\n') {
        let line = &input[pos..=pos + lf];
        pos += lf + 1;
        let r = g.next().unwrap_or_else(|| panic!("no reply to line {:?}", String::from_utf8_lossy(line)));
        if debug {
            eprintln!("> {:?}\n< {r:?}", String::from_utf8_lossy(line));
        }
        let first = r[0].as_str();
        if line.len() > MAX_LINE {
            assert_eq!(r, ["500 5.5.2 Line too long"], "an over-long line ({} bytes) was not refused", line.len());
            continue;
        }
        assert_ne!(first, "500 5.5.2 Line too long", "a line of {} bytes was refused as too long", line.len());
        let code = &first[..3];
        match code {
            "221" | "421" | "554" => {
                ended = true;
                break;
            }
            "354" => {
                assert_eq!(upper4(line), b"DATA", "354 to {:?}", String::from_utf8_lossy(line));
                assert!(rcpts > 0, "DATA accepted without recipients");
                let Some((data, used)) = model_data(&input[pos..]) else {
                    ended = true; // the input ends inside DATA: nothing more to hear
                    break;
                };
                pos += used;
                if debug {
                    eprintln!("  (data: {:?})", String::from_utf8_lossy(&data));
                }
                for _ in 0..if lmtp { rcpts } else { 1 } {
                    let r = g.next().expect("no reply after the final dot");
                    assert_eq!(r.len(), 1, "multi-line reply after the dot {r:?}");
                    let r = &r[0];
                    match &r[..3] {
                        "250" => {
                            assert!(data.len() as u64 <= MAX_MESSAGE, "held past the size limit");
                            let ids = r.rsplit(' ').next().unwrap();
                            for id in ids.split(',') {
                                let bodies = held_bodies(&s.spool, id);
                                assert!(!bodies.is_empty(), "{r:?}: no spool file for {id}");
                                for b in bodies {
                                    assert!(b == data, "held bytes differ from the data up to CRLF.CRLF");
                                }
                            }
                        }
                        "552" => assert!(data.len() as u64 > MAX_MESSAGE, "552 for {} bytes", data.len()),
                        "451" => {}
                        _ => panic!("unexpected reply after the dot: {r:?}"),
                    }
                }
                rcpts = 0;
            }
            _ => {
                if matches!(first, "250 2.1.5 Recipient OK" | "250 Recipient OK") {
                    rcpts += 1;
                    assert!(rcpts <= MAX_RCPTS, "more recipients than the limit");
                } else if matches!(first, "250 2.0.0 Reset OK" | "250 Reset OK") {
                    rcpts = 0;
                } else if first.starts_with("250-") {
                    lmtp = upper4(line) == b"LHLO";
                    assert!(lmtp || upper4(line) == b"EHLO", "a greeting reply to {:?}", String::from_utf8_lossy(line));
                    rcpts = 0;
                } else if first == format!("250 {}", s.host) {
                    assert_eq!(upper4(line), b"HELO");
                    lmtp = false;
                    rcpts = 0;
                }
            }
        }
    }
    // Past the loop the input ended (a partial last line is never answered: the server heard EOF), or the
    // session did; either way nothing more may have been said.
    let _ = ended;
    let extra: Vec<_> = g.collect();
    assert!(extra.is_empty(), "replies the model did not expect (a desync): {extra:?}");
    clear_spool(&s.spool);
});
