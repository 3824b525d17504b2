//! The client against the workspace's one scriptable SMTP server (`quarantine_testkit::smtp`).

use super::*;
use crate::url::Security;
use quarantine_mail::encode;
use quarantine_testkit::smtp::{free_port, AfterData, Script, Server, TestCert, Tls};
use std::sync::Arc;

fn client(port: u16) -> Smtp {
    Smtp::new(RelayUrl { host: "127.0.0.1".into(), port, security: Security::None }, Duration::from_secs(10))
}

/// A relay that says `250-2.0.0 Ok: queued` / `250 2.0.0 as FAKE1` to the data: a multi-line final reply.
fn relay(ehlo: &[&str]) -> Script {
    Script::default().ehlo(ehlo).after_data(AfterData::Reply("250-2.0.0 Ok: queued\r\n250 2.0.0 as FAKE1".into()))
}

const WITH_PIPELINING: &[&str] = &["PIPELINING", "8BITMIME"];
const WITHOUT_PIPELINING: &[&str] = &["8BITMIME"];

/// What goes on the wire is exactly RFC 5321's encoding of the message: no early end, no double stuffing, no
/// extra blank line, for every awkward body we can think of; one connection, RSET between messages; with and
/// without PIPELINING.
#[test]
fn wire_bytes_match_the_reference_encoding() {
    for ehlo in [WITH_PIPELINING, WITHOUT_PIPELINING] {
        let server = Server::start(relay(ehlo));
        let mut smtp = client(server.port);
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
        for (n, body) in bodies.iter().enumerate() {
            let out = smtp.send("sender@example.com", &["a@example.org"], &[body]).unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(t) if t == "250 2.0.0 Ok: queued 2.0.0 as FAKE1"), "{out:?}");
            let txs = server.transactions();
            assert_eq!(txs.len(), n + 1, "one transaction per message, none smuggled");
            let wire = &txs[n].raw;
            assert_eq!(
                String::from_utf8_lossy(wire),
                String::from_utf8_lossy(&encode::smtp_data(body)),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
            assert!(!encode::has_bare_cr_or_lf(wire));
            assert_eq!(txs[n].sender(), "sender@example.com");
        }
        smtp.quit();
    }
}

#[test]
fn replies_are_per_recipient_and_utf8_needs_the_extension() {
    for ehlo in [WITH_PIPELINING, WITHOUT_PIPELINING] {
        let server = Server::start(relay(ehlo).rcpt(|a| {
            if a.starts_with("busy@") {
                "450 4.2.1 try later".into()
            } else if a.starts_with("gone@") {
                "550 5.1.1 no such user".into()
            } else {
                "250 2.1.5 Ok".into()
            }
        }));
        let mut smtp = client(server.port);
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
        assert_eq!(server.transactions()[0].rcpt_addrs(), ["ok@example.org"]);
        // Nobody accepted: no DATA goes through, and the session stays usable.
        let out = smtp.send("s@example.com", &["gone@example.org"], &[b"x\r\n"]).unwrap();
        assert!(matches!(&out[0], Outcome::Failed(t) if t.contains("550")), "{out:?}");
        let out = smtp.send("s@example.com", &["ok@example.org"], &[b"x\r\n"]).unwrap();
        assert!(matches!(&out[0], Outcome::Delivered(_)), "{out:?}");
        assert_eq!(server.transactions().len(), 2);
    }
}

/// A relay that hangs up after each message (a per-session limit, an idle timeout): the next message's
/// pipelined RSET finds the session dead, and the message goes out on a new one.
#[test]
fn a_dropped_session_is_reopened() {
    let server = Server::start(
        Script::default().ehlo(&["PIPELINING"]).after_data(AfterData::Reply("250 queued".into())).max_messages(1),
    );
    let mut smtp = client(server.port);
    for n in 0..3 {
        let body = format!("Subject: {n}\r\n\r\nx\r\n");
        let out = smtp.send("a@b.c", &["d@e.f"], &[body.as_bytes()]).unwrap();
        assert!(matches!(&out[0], Outcome::Delivered(t) if t == "250 queued"), "{n}: {out:?}");
        assert_eq!(server.transactions()[n].raw, encode::smtp_data(body.as_bytes()));
    }
}

fn tls_client(port: u16, security: Security, ca: Option<&TestCert>) -> Smtp {
    let mut smtp = Smtp::new(RelayUrl { host: "localhost".into(), port, security }, Duration::from_secs(10));
    smtp.dial.extra_roots.extend(ca.map(|c| c.ca.clone()));
    smtp
}

#[test]
fn smtps_and_starttls_deliver_over_a_verified_tls_session() {
    let cert = TestCert::localhost();
    for (security, tls) in [
        (Security::Implicit, Tls::Implicit(Arc::clone(&cert.config))),
        (Security::StartTls, Tls::StartTls(Arc::clone(&cert.config))),
    ] {
        let server = Server::start(
            Script::default().tls(tls).after_data(AfterData::Reply("250 2.0.0 Ok: queued over TLS".into())),
        );
        let mut smtp = tls_client(server.port, security, Some(&cert));
        let out = smtp.send("a@b.c", &["d@e.f"], &[b"Subject: tls\n\nbody\n"]).unwrap();
        assert!(matches!(&out[0], Outcome::Delivered(t) if t.contains("over TLS")), "{security:?}: {out:?}");
        let tx = &server.transactions()[0];
        assert!(tx.tls, "{security:?}: the message went over TLS");
        assert_eq!(tx.raw, encode::smtp_data(b"Subject: tls\n\nbody\n"));
        smtp.quit();
    }
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let cert = TestCert::localhost();
    let server = Server::start(Script::default().tls(Tls::Implicit(Arc::clone(&cert.config))));
    let mut smtp = tls_client(server.port, Security::Implicit, None);
    let e = smtp.send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap_err();
    assert!(e.0.contains("TLS handshake"), "{}", e.0);
    assert!(server.transactions().is_empty());
}

#[test]
fn an_unreachable_relay_is_down() {
    let mut smtp = client(free_port());
    let e = smtp.send("", &["a@example.org"], &[b"x\r\n"]).unwrap_err();
    assert!(e.0.contains("cannot connect"), "{}", e.0);
}

#[test]
fn starttls_is_required_when_asked_for() {
    let server = Server::start(Script::default().ehlo(&["PIPELINING"]));
    let mut smtp = Smtp::new(
        RelayUrl { host: "127.0.0.1".into(), port: server.port, security: Security::StartTls },
        Duration::from_secs(5),
    );
    let e = smtp.send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap_err();
    assert!(e.0.contains("STARTTLS") && e.0.contains("not offered"), "{}", e.0);
}

/// What [`mini_relay`] saw: each command's verb and its reply code, and each message it accepted.
#[derive(Default)]
struct Seen {
    log: Vec<String>,
    accepted: Vec<Vec<u8>>,
}

/// A relay of its own for the session-state tests (the testkit server forgives anything): `MAIL` inside an
/// open transaction is 503 (nested MAIL, as Postfix says it); with `strict`, so is a `MAIL` right after a
/// completed transaction with no `RSET` between, which RFC 5321 section 4.1.4 allows and some relays refuse
/// anyway. `RCPT TO:<gone@...>` is 550, and a `DATA` with no recipient is 554 with the transaction left open.
fn mini_relay(pipelining: bool, strict: bool) -> (u16, Arc<std::sync::Mutex<Seen>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let (mut open, mut rcpts, mut completed) = (false, 0, false);
            let _ = w.write_all(b"220 mini ESMTP\r\n");
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let verb = line.split([' ', ':', '\r', '\n']).next().unwrap_or("").to_ascii_uppercase();
                let reply: &str = match verb.as_str() {
                    "EHLO" if pipelining => "250-mini\r\n250 PIPELINING",
                    "EHLO" => "250 mini",
                    "MAIL" if open || (strict && completed) => "503 5.5.1 Error: nested MAIL command",
                    "MAIL" => {
                        (open, rcpts, completed) = (true, 0, false);
                        "250 2.1.0 Ok"
                    }
                    "RCPT" if !open => "503 5.5.1 Error: need MAIL command",
                    "RCPT" if line.contains("<gone@") => "550 5.1.1 no such user",
                    "RCPT" => {
                        rcpts += 1;
                        "250 2.1.5 Ok"
                    }
                    "DATA" if !open || rcpts == 0 => "554 5.5.1 Error: no valid recipients",
                    "DATA" => {
                        let _ = w.write_all(b"354 go ahead\r\n");
                        let mut msg = Vec::new();
                        loop {
                            let mut l = Vec::new();
                            if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            if l == b".\r\n" {
                                break;
                            }
                            msg.extend_from_slice(&l);
                        }
                        shared.lock().unwrap().accepted.push(msg);
                        (open, completed) = (false, true);
                        "250 2.0.0 Ok: queued"
                    }
                    "RSET" => {
                        (open, completed) = (false, false);
                        "250 2.0.0 Ok"
                    }
                    "QUIT" => "221 2.0.0 Bye",
                    _ => "502 5.5.2 Error: command not recognized",
                };
                shared.lock().unwrap().log.push(format!("{verb} {}", &reply[..3]));
                let _ = w.write_all(format!("{reply}\r\n").as_bytes());
                if verb == "QUIT" {
                    break;
                }
                line.clear();
            }
        }
    });
    (port, seen)
}

fn verbs(seen: &std::sync::Mutex<Seen>) -> Vec<String> {
    seen.lock().unwrap().log.iter().filter(|l| !l.starts_with("EHLO")).cloned().collect()
}

/// After a completed transaction the next MAIL follows directly (RFC 5321 section 4.1.4): no RSET per message,
/// and every message is delivered once.
#[test]
fn mail_follows_a_completed_transaction_without_rset() {
    for pipelining in [true, false] {
        let (port, seen) = mini_relay(pipelining, false);
        let mut smtp = client(port);
        for n in 0..3 {
            let body = format!("Subject: {n}\r\n\r\nx\r\n");
            let out = smtp.send("a@b.c", &["d@e.f"], &[body.as_bytes()]).unwrap();
            assert!(matches!(&out[0], Outcome::Delivered(t) if t.contains("queued")), "{n}: {out:?}");
        }
        smtp.quit();
        let log = verbs(&seen);
        assert!(!log.iter().any(|l| l.starts_with("RSET")), "pipelining {pipelining}: {log:?}");
        assert_eq!(log.iter().filter(|l| *l == "MAIL 250").count(), 3, "{log:?}");
        assert_eq!(seen.lock().unwrap().accepted.len(), 3);
    }
}

/// A transaction that ended without our final dot (no recipient accepted: the relay still holds the MAIL) is
/// followed by RSET, so the next message does not run into "nested MAIL".
#[test]
fn an_unfinished_transaction_is_reset_before_the_next() {
    for pipelining in [true, false] {
        let (port, seen) = mini_relay(pipelining, false);
        let mut smtp = client(port);
        let out = smtp.send("a@b.c", &["gone@e.f"], &[b"x\r\n"]).unwrap();
        assert!(matches!(&out[0], Outcome::Failed(t) if t.contains("550")), "{out:?}");
        let out = smtp.send("a@b.c", &["d@e.f"], &[b"y\r\n"]).unwrap();
        assert!(matches!(&out[0], Outcome::Delivered(_)), "{out:?}");
        let log = verbs(&seen);
        assert!(!log.iter().any(|l| l.ends_with(" 503")), "pipelining {pipelining}: {log:?}");
        let rset = log.iter().position(|l| l == "RSET 250").expect("an RSET");
        assert!(rset > 0 && log[rset + 1] == "MAIL 250", "{log:?}");
        assert_eq!(seen.lock().unwrap().accepted, vec![b"y\r\n".to_vec()]);
    }
}

/// A relay that refuses MAIL after a completed transaction unless RSET came between: the message is sent
/// again behind an RSET on the same session, and every later one gets RSET first. Each message is accepted
/// exactly once, and no outcome shows the 503.
#[test]
fn a_relay_that_insists_on_rset_gets_it_and_each_message_once() {
    for pipelining in [true, false] {
        let (port, seen) = mini_relay(pipelining, true);
        let mut smtp = client(port);
        for n in 0..4 {
            let body = format!("Subject: {n}\r\n\r\nx\r\n");
            let out = smtp.send("a@b.c", &["d@e.f", "g@e.f"], &[body.as_bytes()]).unwrap();
            assert!(out.iter().all(|o| matches!(o, Outcome::Delivered(_))), "{n}: {out:?}");
        }
        smtp.quit();
        let accepted = seen.lock().unwrap().accepted.clone();
        let want: Vec<Vec<u8>> = (0..4).map(|n| format!("Subject: {n}\r\n\r\nx\r\n").into_bytes()).collect();
        assert_eq!(accepted, want, "pipelining {pipelining}");
        let log = verbs(&seen);
        // One refusal only: the session remembers.
        assert_eq!(log.iter().filter(|l| *l == "MAIL 503").count(), 1, "{log:?}");
        assert_eq!(log.iter().filter(|l| *l == "RSET 250").count(), 3, "{log:?}");
    }
}
