//! Shared by the serve_* targets: a scratch store on tmpfs (fsync is free there, and the figures are not the
//! point), removed when libFuzzer exits normally (it calls exit(3) at -max_total_time / -runs).
use std::path::PathBuf;
use std::sync::OnceLock;

static ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn cleanup() {
    if let Some(r) = ROOT.get() {
        let _ = std::fs::remove_dir_all(r);
    }
}

/// A fresh directory `/dev/shm/quarantine-fuzz-<what>-<pid>` with the file `Spool::open` checks for.
pub fn scratch(what: &str) -> PathBuf {
    // libFuzzer's main is not Rust's: a write to a closed socket would kill the process with SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let root = PathBuf::from(format!("{base}/quarantine-fuzz-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // Spool::open checks only that index.sqlite is a non-empty file; serve never opens the index.
    std::fs::write(root.join("index.sqlite"), b"x").unwrap();
    ROOT.set(root.clone()).unwrap();
    unsafe { libc::atexit(cleanup) };
    root
}

/// LeakSanitizer's built-in suppressions for these targets: a session thread's closure box and thread-locals (rand's ThreadRng,
/// the TLS destructor list) are freed when the thread exits, which can be just after the client saw EOF and
/// libFuzzer ran its leak check; they are not leaks. Anything else still is.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:__cxa_thread_atexit_impl\nleak:rngs/thread.rs\nleak:spawn_unchecked\n".as_ptr()
}
