//! `quarantine serve`'s HTTP intake for rspamd's metadata_exporter, whole: the input is one connection's bytes
//! (written at once, then the write side shut) to a real `quarantine_serve::run` with `--http unix:PATH` in this
//! process, over a scratch store on tmpfs. The request head (httparse), Content-Length and chunked bodies,
//! multipart/form-data, the `X-Rspamd-*` headers and the metadata JSON are all parsed as in production.
//! Checks: nothing panics (in any thread); a non-empty request gets exactly one well-formed response (after at
//! most one `100 Continue`), with a status the module documents and a Content-Length that matches; a 200 names
//! ids whose spool files exist with a non-empty message within `max_message_size`; anything else holds nothing.
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

const MAX_MESSAGE: u64 = 4096;

struct Server {
    sock: PathBuf,
    spool: PathBuf,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let root = common::scratch("http");
        let sock = root.join("http.sock");
        let mut cfg = ServeConfig { http: Some(Listen::Unix(sock.clone())), ..ServeConfig::default() };
        cfg.limits.max_message_size = MAX_MESSAGE;
        cfg.commit_delay = Duration::ZERO;
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
        Server { sock, spool: root.join("spool") }
    })
}

fn converse(sock: &Path, input: &[u8]) -> Vec<u8> {
    let mut c = UnixStream::connect(sock).unwrap();
    let mut w = c.try_clone().unwrap();
    let data = input.to_vec();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&data);
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    t.join().unwrap();
    out
}

fn spool_files(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let s = server();
    let out = converse(&s.sock, input);
    if input.is_empty() {
        assert!(out.is_empty(), "a response to nothing");
        return;
    }
    let mut rest: &[u8] = &out;
    if let Some(r) = rest.strip_prefix(b"HTTP/1.1 100 Continue\r\n\r\n".as_slice()) {
        rest = r;
    }
    let split = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("no response head");
    let head = std::str::from_utf8(&rest[..split]).expect("a UTF-8 head");
    let body = &rest[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    let code: u16 = status.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|c| c.parse().ok()).unwrap();
    assert!([200, 400, 401, 404, 405, 408, 411, 413, 415, 431, 503].contains(&code), "undocumented status {status:?}");
    let cl: usize = lines.find_map(|l| l.strip_prefix("Content-Length: ")).expect("no Content-Length").parse().unwrap();
    assert_eq!(cl, body.len(), "Content-Length does not match the body (or a second response)");
    let files = spool_files(&s.spool);
    if code == 200 {
        let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON 200");
        if v["status"] == "held" {
            let ids = v["ids"].as_array().expect("ids");
            assert!(!ids.is_empty());
            for id in ids {
                let id = id.as_str().unwrap();
                let mine: Vec<_> = files
                    .iter()
                    .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{id}.")))
                    .collect();
                assert!(!mine.is_empty(), "held as {id} but no spool file");
                for p in mine {
                    let f = std::fs::read(p).unwrap();
                    let h = u32::from_le_bytes(f[12..16].try_into().unwrap()) as usize;
                    let n = f.len() - 16 - h - 88;
                    assert!(n > 0 && n as u64 <= MAX_MESSAGE, "held {n} bytes");
                }
            }
        } else {
            assert_eq!(v["status"], "pong");
            assert!(files.is_empty(), "a ping held something");
        }
    } else {
        assert!(files.is_empty(), "{status:?} but {} spool file(s) written", files.len());
    }
    for p in files {
        let _ = std::fs::remove_file(p);
    }
});
