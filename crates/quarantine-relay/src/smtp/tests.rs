use super::*;
use crate::url::Security;
use quarantine_mail::encode;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;

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
            assert!(matches!(&out[0], Outcome::Delivered(t) if t == "250 2.0.0 Ok: queued 2.0.0 as FAKE1"), "{out:?}");
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
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
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
        smtp.dial.extra_roots.push(ca);
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
    let mut smtp =
        Smtp::new(RelayUrl { host: "localhost".into(), port, security: Security::Implicit }, Duration::from_secs(10));
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
    let mut smtp =
        Smtp::new(RelayUrl { host: "127.0.0.1".into(), port, security: Security::StartTls }, Duration::from_secs(5));
    let e = smtp.send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap_err();
    assert!(e.0.contains("STARTTLS") && e.0.contains("not offered"), "{}", e.0);
}
