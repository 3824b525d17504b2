//! `maildir-deliver DIR < message`: the baseline of the hold benchmark, a minimal compiled Maildir delivery.
//!
//! It does what a careful local delivery agent must do for the message to survive a crash, and nothing else:
//! read stdin to EOF into `DIR/tmp/<unique>` (plain 64 KiB read/write loop, as an MDA reading a pipe does), fsync
//! the file, rename it to `DIR/new/<unique>`, fsync `DIR/new/`. One process per message, like a Postfix `pipe`
//! delivery. `DIR/tmp` and `DIR/new` must exist. Exit 0 on success, 75 (EX_TEMPFAIL) on any failure.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const EX_TEMPFAIL: u8 = 75;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: maildir-deliver DIR < message");
        return ExitCode::from(EX_TEMPFAIL);
    };
    match deliver(Path::new(&dir)) {
        Ok(name) => {
            let _ = writeln!(io::stdout(), "{}", name.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("maildir-deliver: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}

fn deliver(dir: &Path) -> io::Result<PathBuf> {
    let name = unique_name();
    let tmp = dir.join("tmp").join(&name);
    let new_dir = dir.join("new");
    let new = new_dir.join(&name);

    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    if let Err(e) = copy_stdin(&mut file).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(file);
    fs::rename(&tmp, &new)?;
    File::open(&new_dir)?.sync_all()?;
    Ok(new)
}

/// A plain read/write loop on purpose: `io::copy` would use `copy_file_range`/`splice` when stdin is a file,
/// which no MDA reading a pipe gets.
fn copy_stdin(out: &mut File) -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
    }
}

/// The classic Maildir name `<secs>.M<usecs>P<pid>.<host>`: unique for one process per delivery on one host.
fn unique_name() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    format!("{}.M{}P{}.{host}", now.as_secs(), now.subsec_micros(), std::process::id())
}
