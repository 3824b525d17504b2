//! Deterministic test data and small file-tree helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce from the printed seed without a rand
/// dependency.
#[derive(Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A message with a recognisable header (`Subject: TAG`, `Message-ID: <TAG@torture.example>`) and `body_len`
/// bytes of pseudo-random base64-like text in 76-column CRLF lines.
pub fn message(tag: &str, rng: &mut XorShift, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Torture <torture@example.org>\r\nTo: rcpt@example.net\r\nSubject: {tag}\r\nMessage-ID: <{tag}@torture.example>\r\n\r\n"
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut col = 0;
    for _ in 0..body_len {
        if col == 76 {
            m.extend_from_slice(b"\r\n");
            col = 0;
        } else {
            m.push(ALPHABET[rng.below(64) as usize]);
            col += 1;
        }
    }
    m.extend_from_slice(b"\r\n");
    m
}

/// 10 characters of Crockford base32, as `hold` prints them.
pub fn is_id(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// Calls `f(path, is_dir)` for everything below `dir` (not `dir` itself), symlinks not followed.
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, bool)) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let is_dir = fs::symlink_metadata(&p).unwrap().is_dir();
        f(&p, is_dir);
        if is_dir {
            walk(&p, f);
        }
    }
}

/// Every file below `dir` (none if `dir` is missing), appended to `out`, which is then sorted.
pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk_files(&p, out)
        } else {
            out.push(p)
        }
    }
    out.sort();
}

/// Copies the tree `from` to the new directory `to`, keeping directory modes.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::metadata(from).unwrap().permissions()).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Runs `f` over `items` on `threads` threads (a work queue), so sweeps use every core.
pub fn par_for_each<T: Sync>(items: &[T], threads: usize, f: impl Fn(usize, &T) + Sync) {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= items.len() {
                    break;
                }
                f(i, &items[i]);
            });
        }
    });
}

/// Threads for the sweeps: the machine's cores, at most 4.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(4)
}

/// A command line split on whitespace, for readable test tables. `{sp}`, `{empty}` and `{crlf}` inside a word
/// stand for a space, an empty argument and CR LF.
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| match w {
            "{empty}" => "",
            w if w.contains('{') => &*Box::leak(w.replace("{sp}", " ").replace("{crlf}", "\r\n").into_boxed_str()),
            w => w,
        })
        .collect()
}

/// `bytes` with every line ending (CRLF, bare CR, bare LF) made LF.
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 2;
            }
            b'\r' | b'\n' => {
                out.push(b'\n');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
