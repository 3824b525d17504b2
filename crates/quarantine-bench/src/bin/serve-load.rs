//! `serve-load SOCKET WIRE_FILE SESSIONS MESSAGES FROM TO`: an LMTP load client for scripts/bench-serve that times
//! every transaction at the client, which smtp-source cannot: from the moment the final dot is written to the
//! moment the last per-recipient reply is read (what Postfix's lmtp client waits for). Like `smtp-source -L -d`,
//! each session is one connection reused for its share of the messages (LHLO once, then MAIL/RCPT/DATA per
//! message, RSET between them as Postfix's connection cache does, QUIT at the end).
//!
//! WIRE_FILE holds the message exactly as it should be stored (CRLF lines); it is dot-stuffed here. Prints one JSON
//! object on stdout: `{"secs": wall time of the whole run, "lat_ms": [one figure per message]}`. Any reply that is
//! not the expected one aborts with exit 1: a benchmark of failures measures nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        eprintln!("usage: serve-load SOCKET WIRE_FILE SESSIONS MESSAGES FROM TO");
        return ExitCode::from(2);
    }
    let (sock, from, to) = (a[0].clone(), a[4].clone(), a[5].clone());
    let wire = match std::fs::read(&a[1]) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("serve-load: {}: {e}", a[1]);
            return ExitCode::FAILURE;
        }
    };
    let (Ok(sessions), Ok(messages)) = (a[2].parse::<usize>(), a[3].parse::<usize>()) else {
        eprintln!("serve-load: SESSIONS and MESSAGES are numbers");
        return ExitCode::from(2);
    };
    let data = std::sync::Arc::new(stuff(&wire));
    let t = Instant::now();
    let workers: Vec<_> = (0..sessions.max(1))
        .map(|i| {
            // Messages shared out as evenly as smtp-source does: the first (messages % sessions) get one more.
            let n = messages / sessions.max(1) + usize::from(i < messages % sessions.max(1));
            let (sock, from, to, data) = (sock.clone(), from.clone(), to.clone(), data.clone());
            std::thread::spawn(move || session(&sock, &from, &to, &data, n))
        })
        .collect();
    let mut lat = Vec::with_capacity(messages);
    for w in workers {
        match w.join().expect("session thread") {
            Ok(l) => lat.extend(l),
            Err(e) => {
                eprintln!("serve-load: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let lat: Vec<String> = lat.iter().map(|ms| format!("{ms:.3}")).collect();
    println!("{{\"secs\": {secs:.6}, \"lat_ms\": [{}]}}", lat.join(", "));
    ExitCode::SUCCESS
}

/// The message as DATA carries it: a dot at a line start doubled, then the terminating CRLF `.` CRLF.
fn stuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len() + 8);
    let mut at_start = true;
    for &b in wire {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn session(sock: &str, from: &str, to: &str, data: &[u8], n: usize) -> Result<Vec<f64>, String> {
    let s = UnixStream::connect(sock).map_err(|e| format!("{sock}: {e}"))?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    expect(&mut r, "220", "greeting")?;
    w.write_all(b"LHLO serve-load\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, "250", "LHLO")?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            w.write_all(b"RSET\r\n").map_err(|e| e.to_string())?;
            expect(&mut r, "250", "RSET")?;
        }
        // Pipelined, as Postfix's lmtp client sends them.
        w.write_all(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        expect(&mut r, "250", "MAIL")?;
        expect(&mut r, "250", "RCPT")?;
        expect(&mut r, "354", "DATA")?;
        w.write_all(data).map_err(|e| e.to_string())?;
        let t = Instant::now();
        // One recipient: its one reply after the dot is the final one.
        expect(&mut r, "250", "the final dot")?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    w.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    expect(&mut r, "221", "QUIT")?;
    Ok(lat)
}

/// Reads one (possibly multi-line) reply and checks its code.
fn expect(r: &mut impl BufRead, code: &str, after: &str) -> Result<(), String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| format!("after {after}: {e}"))? == 0 {
            return Err(format!("after {after}: the server closed the connection"));
        }
        if !line.starts_with(code) {
            return Err(format!("after {after}: expected {code}, got {}", line.trim_end()));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}
