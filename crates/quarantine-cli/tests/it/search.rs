//! Search, export, stats and log through the real binary: every selector alone and combined, time expressions
//! under real TZ values, the output formats (table, JSON Lines, CSV) with hostile headers, export round trips,
//! and the audit trail.

use std::path::Path;

use quarantine_testkit::{Input, Out, Store};

use crate::store as new_store;

/// One message to hold.
struct Msg<'a> {
    verdict: &'a str,
    from: &'a str,
    rcpts: &'a [&'a str],
    scanner: Option<&'a str>,
    bytes: &'a [u8],
}

/// `quarantine --store ROOT ARGS...` with `env` added to the hermetic environment (TZ=UTC, USER=tester unless
/// `env` says otherwise) and `stdin`.
fn run_env(s: &Store, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut c = s.cmd(args);
    for (k, v) in env {
        c.env(k, v);
    }
    quarantine_testkit::run::run(c, Input::Bytes(stdin), quarantine_testkit::HANG)
}

/// Holds one message through `quarantine hold`; returns its id.
fn hold(s: &Store, m: &Msg) -> String {
    let mut args = vec!["hold", "--verdict", m.verdict, "--from", m.from];
    if let Some(sc) = m.scanner {
        args.extend(["--scanner", sc]);
    }
    args.push("--");
    args.extend(m.rcpts);
    let id = run_env(s, &args, &[], m.bytes).ok().trim().to_string();
    assert_eq!(id.len(), 10, "hold printed {id:?}");
    id
}

/// Ids printed by `search --json ARGS`, in output order.
fn ids(s: &Store, args: &[&str]) -> Vec<String> {
    ids_env(s, args, &[])
}

fn ids_env(s: &Store, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut full = vec!["search", "--json"];
    full.extend(args);
    let out = run_env(s, &full, env, b"");
    json_lines(&out.ok()).iter().map(|v| v["id"].as_str().expect("id").to_string()).collect()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))).collect()
}

/// Sorted copy, for comparing sets of ids.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const M1: &[u8] = b"From: My Bank <alerts@bank.example>\r\nTo: alice@example.edu\r\nSubject: Your invoice 2024\r\n\
Message-ID: <inv-1@bank.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XX\r\nContent-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\n\
Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n\r\nMZ\r\n--XX--\r\n";
const M2: &[u8] = b"From: Mail Delivery System <MAILER-DAEMON@mx.example>\nTo: bob@example.edu\n\
Subject: Delivery Status Notification\nMessage-ID: <dsn-2@mx.example>\n\nbounced\n";
/// Envelope recipients alice and hidden; the To header names only alice, so hidden is a Bcc recipient.
const M3: &[u8] = b"From: Shop <promo@shop.example>\nTo: alice@example.edu\nSubject: Big SALE today\n\
Message-ID: <s3@shop.example>\n\nbuy\n";
const M4: &[u8] = b"From: x@evil.example\nTo: dave@example.edu\nSubject: ok\nMessage-ID: <p4@evil.example>\n\
MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=YY\n\n--YY\nContent-Type: text/plain\n\nsee\n--YY\n\
Content-Type: text/html\nContent-Disposition: attachment; filename=\"Report.HTML\"\n\n<a>\n--YY--\n";

/// Four messages with distinct verdicts, scanners, senders, recipients, subjects and attachments.
fn corpus() -> (Store, [String; 4]) {
    let s = new_store();
    let m1 = hold(
        &s,
        &Msg {
            verdict: "PMX:VIRUS",
            from: "Alerts@Bank.example",
            rcpts: &["Alice@Example.edu"],
            scanner: Some("pmx"),
            bytes: M1,
        },
    );
    let m2 = hold(
        &s,
        &Msg {
            verdict: "PMX:PHISH",
            from: "<>",
            rcpts: &["bob@example.edu", "carol@example.edu"],
            scanner: Some("pmx"),
            bytes: M2,
        },
    );
    let m3 = hold(
        &s,
        &Msg {
            verdict: "SPAM",
            from: "promo@shop.example",
            rcpts: &["alice@example.edu", "hidden@example.edu"],
            scanner: Some("rspamd"),
            bytes: M3,
        },
    );
    let m4 = hold(
        &s,
        &Msg {
            verdict: "Heuristics.Phishing.Email",
            from: "x@evil.example",
            rcpts: &["dave@example.edu"],
            scanner: Some("clamav"),
            bytes: M4,
        },
    );
    (s, [m1, m2, m3, m4])
}

fn set(ids: &[&String]) -> Vec<String> {
    sorted(ids.iter().map(|s| s.to_string()).collect())
}

#[test]
fn every_selector_alone() {
    let (s, [m1, m2, m3, m4]) = corpus();
    let q = |args: &[&str]| sorted(ids(&s, args));
    assert_eq!(ids(&s, &[]), vec![m4.clone(), m3.clone(), m2.clone(), m1.clone()], "newest first");
    assert_eq!(q(&["--id", &m1.to_lowercase()]), set(&[&m1]));
    assert_eq!(q(&["--rcpt", "bob@example.edu"]), set(&[&m2]));
    assert_eq!(q(&["--from", "promo@shop.example"]), set(&[&m3]));
    assert_eq!(q(&["--from", "<>"]), set(&[&m2]), "the null sender");
    assert_eq!(q(&["--header-from", "my bank"]), set(&[&m1]));
    assert_eq!(q(&["--header-from", "MAILER-daemon"]), set(&[&m2]));
    assert_eq!(q(&["--subject", "INVOICE"]), set(&[&m1]));
    assert_eq!(q(&["--subject", "sale to"]), set(&[&m3]));
    assert_eq!(q(&["--subject", "ok"]), set(&[&m4]), "two characters: the scan path");
    assert_eq!(q(&["--message-id", "<inv-1@bank.example>"]), set(&[&m1]));
    assert_eq!(q(&["--message-id", "dsn-2@mx.example"]), set(&[&m2]), "without brackets");
    assert_eq!(q(&["--verdict", "SPAM"]), set(&[&m3]));
    assert_eq!(q(&["--scanner", "pmx"]), set(&[&m1, &m2]));
    assert_eq!(q(&["--attachment", ".exe"]), set(&[&m1]));
    assert_eq!(q(&["--attachment", "report.html"]), set(&[&m4]), "case-insensitive");
    assert_eq!(q(&["--since", "1h"]), set(&[&m1, &m2, &m3, &m4]));
    assert_eq!(q(&["--until", "1h"]), Vec::<String>::new());
    assert_eq!(q(&["--state", "held"]), set(&[&m1, &m2, &m3, &m4]));
    assert_eq!(q(&["--state", "released"]), Vec::<String>::new());

    // Recipient states and tombstones, set directly in the index.
    let ok = s.sqlite("UPDATE recipients SET state = 'released' WHERE address_lc = 'bob@example.edu'");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let ok = s.sqlite(&format!("UPDATE messages SET purged_us = 1 WHERE id = '{m4}'"));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(q(&["--state", "released"]), set(&[&m2]));
    assert_eq!(q(&["--state", "held"]), set(&[&m1, &m2, &m3]), "carol is still held; purged are not live");
    assert_eq!(q(&["--state", "purged"]), set(&[&m4]));
    assert_eq!(q(&[]), set(&[&m1, &m2, &m3]), "purged messages are hidden by default");
    let v = json_lines(&s.q(&["search", "--json", "--id", &m2]).ok());
    assert_eq!(v[0]["state"], "mixed");
    assert_eq!(q(&["--state", "failed"]), Vec::<String>::new());
    let bad = s.q(&["search", "--state", "gone"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

#[test]
fn selectors_combine_with_and_and_repeat_with_or() {
    let (s, [m1, m2, m3, m4]) = corpus();
    let q = |args: &[&str]| sorted(ids(&s, args));
    assert_eq!(q(&["--rcpt", "alice@example.edu", "--verdict", "SPAM"]), set(&[&m3]));
    assert_eq!(q(&["--rcpt", "alice@example.edu", "--subject", "invoice"]), set(&[&m1]));
    assert_eq!(q(&["--rcpt", "alice@example.edu", "--subject", "2024", "--header-from", "bank"]), set(&[&m1]));
    assert_eq!(q(&["--verdict", "PMX:*", "--scanner", "pmx", "--from", "<>"]), set(&[&m2]));
    assert_eq!(q(&["--rcpt", "dave@example.edu", "--rcpt", "bob@example.edu"]), set(&[&m2, &m4]));
    assert_eq!(
        q(&["--verdict", "SPAM", "--verdict", "PMX:*", "--rcpt", "alice@example.edu"]),
        set(&[&m1, &m3]),
        "OR within --verdict (exact and glob), AND with --rcpt"
    );
    assert_eq!(q(&["--subject", "invoice", "--subject", "sale"]), set(&[&m1, &m3]));
    assert_eq!(q(&["--subject", "invoice", "--subject", "ok"]), set(&[&m1, &m4]), "trigram and scan mixed");
    assert_eq!(q(&["--id", &m1, "--id", &m2, "--scanner", "pmx", "--since", "1h"]), set(&[&m1, &m2]));
    assert_eq!(q(&["--verdict", "SPAM", "--since", "1h"]), set(&[&m3]));
    assert_eq!(q(&["--verdict", "SPAM", "--until", "1h"]), Vec::<String>::new());
    assert_eq!(
        q(&["--rcpt", "alice@example.edu", "--attachment", "exe", "--message-id", "inv-1@bank.example"]),
        set(&[&m1])
    );
    assert_eq!(q(&["--rcpt", "bob@example.edu", "--subject", "invoice"]), Vec::<String>::new());
}

#[test]
fn bcc_recipient_is_found_by_envelope() {
    let (s, [_, _, m3, _]) = corpus();
    assert_eq!(ids(&s, &["--rcpt", "hidden@example.edu"]), vec![m3.clone()]);
    let v = json_lines(&s.q(&["search", "--json", "--rcpt", "hidden@example.edu"]).ok());
    assert_eq!(v[0]["header_to"], "alice@example.edu", "the header does not name the Bcc recipient");
}

#[test]
fn addresses_compare_case_insensitively() {
    let (s, [m1, _, m3, _]) = corpus();
    assert_eq!(sorted(ids(&s, &["--rcpt", "ALICE@example.EDU"])), set(&[&m1, &m3]));
    assert_eq!(sorted(ids(&s, &["--rcpt", "<alice@example.edu>"])), set(&[&m1, &m3]));
    assert_eq!(ids(&s, &["--from", "alerts@bank.example"]), vec![m1.clone()]);
    assert_eq!(ids(&s, &["--from", "ALERTS@BANK.EXAMPLE"]), vec![m1.clone()]);
    // The address is shown as the MTA gave it.
    let v = json_lines(&s.q(&["search", "--json", "--id", &m1]).ok());
    assert_eq!(v[0]["from"], "Alerts@Bank.example");
    assert_eq!(v[0]["recipients"][0]["address"], "Alice@Example.edu");
}

#[test]
fn verdict_globs() {
    let (s, [m1, m2, m3, m4]) = corpus();
    let q = |v: &str| sorted(ids(&s, &["--verdict", v]));
    assert_eq!(q("PMX:*"), set(&[&m1, &m2]));
    assert_eq!(q("*Phish*"), set(&[&m4]), "globs are case-sensitive, like the verdicts scanners write");
    assert_eq!(q("*PHISH"), set(&[&m2]));
    assert_eq!(q("Heuristics.*"), set(&[&m4]));
    assert_eq!(q("PMX:VIRU?"), set(&[&m1]));
    assert_eq!(q("[PS]*"), set(&[&m1, &m2, &m3]));
    assert_eq!(q("PMX"), Vec::<String>::new(), "no glob: exact");
    assert_eq!(q("*"), set(&[&m1, &m2, &m3, &m4]));
}

#[test]
fn until_1h_excludes_what_was_just_held() {
    let (s, _) = corpus();
    assert!(ids(&s, &["--until", "1h"]).is_empty());
    assert!(ids(&s, &["--until", "90m"]).is_empty());
    assert_eq!(ids(&s, &["--since", "1h"]).len(), 4);
    assert_eq!(ids(&s, &["--since", "2d", "--until", "now"]).len(), 4);
}

/// Every time form through the real binary, under several TZ values: the day-relative forms follow TZ.
#[test]
fn time_forms_follow_tz() {
    let s = new_store();
    let id = hold(&s, &Msg { verdict: "SPAM", from: "a@b.example", rcpts: &["c@d.example"], scanner: None, bytes: M3 });
    let now = chrono::Utc::now();
    let with = |tz: &str, args: &[&str]| ids_env(&s, args, &[("TZ", tz)]);
    let one = vec![id.clone()];
    let none: Vec<String> = Vec::new();
    for tz in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago"] {
        assert_eq!(with(tz, &["--since", "today"]), one, "TZ={tz}");
        assert_eq!(with(tz, &["--since", "00:00"]), one, "TZ={tz}");
        assert_eq!(with(tz, &["--since", "yesterday"]), one, "TZ={tz}");
        assert_eq!(with(tz, &["--since", "yesterday", "--until", "today"]), none, "TZ={tz}");
        assert_eq!(with(tz, &["--until", "today"]), none, "TZ={tz}");
    }
    // TZ is honoured: the wall-clock time ten minutes ago in Kiritimati (UTC+14, no DST) is 14 hours in the
    // future when read as UTC.
    let kiri = |t: chrono::DateTime<chrono::Utc>| t + chrono::Duration::hours(14);
    let wall = kiri(now - chrono::Duration::minutes(10));
    let stamp = wall.format("%Y-%m-%d %H:%M").to_string();
    assert_eq!(with("Pacific/Kiritimati", &["--since", &stamp]), one);
    assert_eq!(with("Pacific/Kiritimati", &["--until", &stamp]), none);
    assert_eq!(with("UTC", &["--since", &stamp]), none);
    let stamp_t = wall.format("%Y-%m-%dT%H:%M:%S").to_string();
    assert_eq!(with("Pacific/Kiritimati", &["--since", &stamp_t]), one);
    if wall.date_naive() == kiri(now).date_naive() {
        let hhmm = wall.format("%H:%M").to_string();
        assert_eq!(with("Pacific/Kiritimati", &["--since", &hhmm]), one, "HH:MM is today, local time");
        assert_eq!(with("Pacific/Kiritimati", &["--until", &hhmm]), none);
    }
    let date = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d").to_string();
    assert_eq!(with("UTC", &["--since", &date(now)]), one);
    assert_eq!(with("UTC", &["--since", &date(now + chrono::Duration::days(1))]), none);
    assert_eq!(with("UTC", &["--until", &date(now + chrono::Duration::days(1))]), one);
    let rfc = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono::FixedOffset::east_opt(-5 * 3600).unwrap()).to_rfc3339()
    };
    assert_eq!(with("Asia/Kolkata", &["--since", &rfc(now - chrono::Duration::hours(1))]), one, "RFC 3339 ignores TZ");
    assert_eq!(with("Asia/Kolkata", &["--since", &rfc(now + chrono::Duration::hours(1))]), none);
    for d in ["90m", "6h", "2d", "1w"] {
        assert_eq!(with("Europe/Berlin", &["--since", d]), one, "--since {d}");
        assert_eq!(with("Europe/Berlin", &["--until", d]), none, "--until {d}");
    }
}

#[test]
fn bad_time_is_a_usage_error_naming_the_value() {
    let s = new_store();
    for (args, value) in [
        (vec!["search", "--since", "next tuesday"], "next tuesday"),
        (vec!["search", "--until", "25:99"], "25:99"),
        (vec!["export", "--since", "soonish", "--to", "/nonexistent/x"], "soonish"),
        (vec!["log", "--since", "1 fortnight"], "1 fortnight"),
    ] {
        let out = s.q(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "one line: {:?}", out.stderr);
        assert!(out.stderr.contains(&format!("\"{value}\"")), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let out = s.q(&["search", "--since", "1h", "--until", "2h"]);
    assert_eq!(out.code, 2, "since after until: {}", out.stderr);
}

#[test]
fn json_lines_parse_with_all_recipients() {
    let (s, [m1, m2, _, _]) = corpus();
    let text = s.q(&["search", "--json"]).ok();
    assert_eq!(text.lines().count(), 4);
    let v = json_lines(&text);
    let rec = v.iter().find(|r| r["id"] == m2.as_str()).unwrap();
    let rcpts: Vec<(&str, &str)> = rec["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["address"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(rcpts, vec![("bob@example.edu", "held"), ("carol@example.edu", "held")]);
    assert_eq!(rec["from"], "", "the null sender is empty");
    assert_eq!(rec["verdict"], "PMX:PHISH");
    for field in
        ["id", "received", "hash", "size", "verdict", "scanner", "subject", "message_id", "state", "attachments"]
    {
        assert!(rec.get(field).is_some(), "stable field {field} is missing: {rec}");
    }
    let r1 = v.iter().find(|r| r["id"] == m1.as_str()).unwrap();
    assert_eq!(r1["attachments"], serde_json::json!(["invoice.pdf.exe"]));
    assert!(chrono::DateTime::parse_from_rfc3339(r1["received"].as_str().unwrap()).is_ok());
    // --limit caps JSON too.
    assert_eq!(s.q(&["search", "--json", "--limit", "1"]).ok().lines().count(), 1);
}

#[test]
fn no_match_exits_0() {
    let (s, _) = corpus();
    let table = s.q(&["search", "--rcpt", "nobody@example.edu"]);
    assert_eq!(table.code, 0);
    assert_eq!(table.text().trim(), "no messages match");
    let json = s.q(&["search", "--json", "--rcpt", "nobody@example.edu"]);
    assert_eq!(json.code, 0);
    assert!(json.stdout.is_empty(), "nothing on stdout for --json");
    assert!(json.stderr.contains("no messages match"));
    let csv = s.q(&["search", "--csv", "--subject", "no such subject"]);
    assert_eq!(csv.code, 0);
    assert_eq!(csv.text().lines().count(), 1, "just the header row");
}

#[test]
fn csv_quotes_commas_quotes_and_newlines() {
    let s = new_store();
    let subjects = [
        (&b"Subject: one, two, three\n\nx\n"[..], "one, two, three"),
        (b"Subject: she said \"hi\"\n\nx\n", "she said \"hi\""),
        (b"Subject: =?UTF-8?Q?line_one=0Aline_two?=\n\nx\n", "line one\nline two"),
        (b"Subject: =?UTF-8?Q?cr=0D=0Alf,_\"both\"?=\n\nx\n", "cr\r\nlf, \"both\""),
    ];
    let mut ids = Vec::new();
    for (bytes, _) in &subjects {
        ids.push(hold(
            &s,
            &Msg { verdict: "SPAM", from: "a@b.example", rcpts: &["x@y.example", "z@y.example"], scanner: None, bytes },
        ));
    }
    let out = s.q(&["search", "--csv"]).ok();
    assert!(out.contains("\"she said \"\"hi\"\"\""), "{out}");
    let mut rd = csv::Reader::from_reader(out.as_bytes());
    let headers = rd.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), subjects.len());
    for (i, (_, subject)) in subjects.iter().enumerate() {
        let row = rows.iter().find(|r| r[col("id")] == ids[i]).unwrap();
        assert_eq!(&row[col("subject")], *subject);
        assert_eq!(&row[col("recipients")], "x@y.example, z@y.example");
        assert_eq!(&row[col("recipient_states")], "held, held");
        assert_eq!(&row[col("verdict")], "SPAM");
    }
}

/// Hostile subjects: screen clear, a window-title OSC, NUL (through an encoded word) and a right-to-left
/// override. None may reach stdout raw in the table, cut or not, nor in `show`.
#[test]
fn hostile_subjects_never_reach_stdout_raw() {
    let s = new_store();
    let hostile: [&[u8]; 5] = [
        b"Subject: \x1b[2J cleared\n\nx\n",
        b"Subject: title \x1b]0;pwned\x07 set\n\nx\n",
        b"Subject: =?UTF-8?B?bnVsAGJ5dGUbWzMxbQ==?=\n\nx\n", // "nul\0byte\x1b[31m"
        "Subject: invoice\u{202e}fdp.exe\n\nx\n".as_bytes(),
        b"From: =?UTF-8?Q?Evil=1B]52;c;aGk=07?= <e@x>\nSubject: osc 52\n\nx\n",
    ];
    let mut ids = Vec::new();
    for bytes in hostile {
        ids.push(hold(
            &s,
            &Msg { verdict: "SPAM", from: "a@b.example", rcpts: &["x@y.example"], scanner: None, bytes },
        ));
    }
    let clean = |what: &str, out: &[u8]| {
        for bad in [&b"\x1b"[..], b"\x07", b"\x00", "\u{202e}".as_bytes(), b"\x9b"] {
            assert!(
                !out.windows(bad.len()).any(|w| w == bad),
                "{what}: raw {bad:?} in {}",
                String::from_utf8_lossy(out)
            );
        }
    };
    for columns in [None, Some("60"), Some("200")] {
        let env: Vec<(&str, &str)> = columns.iter().map(|c| ("COLUMNS", *c)).collect();
        let out = run_env(&s, &["search"], &env, b"");
        assert_eq!(out.code, 0, "{}", out.stderr);
        clean("table", &out.stdout);
        if columns.is_none() {
            let text = out.text();
            assert!(text.contains("\\x1b[2J cleared"), "{text}");
            assert!(text.contains("\\x1b]0;pwned\\x07"), "{text}");
            assert!(text.contains("nul\\x00byte\\x1b[31m"), "{text}");
            assert!(text.contains("invoice\\u{202e}fdp.exe"), "{text}");
        }
    }
    for id in &ids {
        let out = s.q(&["show", id]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        clean("show", &out.stdout);
    }
    let show = s.q(&["show", &ids[4]]).ok();
    assert!(show.contains("Evil\\x1b]52;c;aGk\\x07"), "{show}");
    // JSON escapes control characters itself (U+202E is not one: JSON is data, not a terminal view).
    let json = s.q(&["search", "--json"]).stdout;
    for bad in [0x1b_u8, 0x07, 0x00] {
        assert!(!json.contains(&bad), "raw {bad:#x} in JSON");
    }
    assert!(json_lines(&String::from_utf8(json).unwrap()).iter().any(|v| v["subject"] == "nul\0byte\x1b[31m"));
}

#[test]
fn table_fits_columns_and_says_how_many_more() {
    let s = new_store();
    let long = format!("Subject: {}\n\nx\n", "a very long subject line that goes on ".repeat(5));
    for i in 0..5 {
        let rcpt = format!("someone.with.a.long.name.{i}@departement.example.edu");
        hold(
            &s,
            &Msg {
                verdict: "Heuristics.Phishing.Email.Long",
                from: "sender.with.long.name@marketing.example.com",
                rcpts: &[&rcpt, "second@example.edu"],
                scanner: None,
                bytes: long.as_bytes(),
            },
        );
    }
    for cols in [80usize, 120, 160] {
        let out = run_env(&s, &["search"], &[("COLUMNS", &cols.to_string())], b"").ok();
        assert_eq!(out.lines().count(), 6, "{out}");
        for line in out.lines() {
            assert!(line.chars().count() <= cols, "wider than {cols}: {line:?}");
        }
        assert!(out.contains('…'), "long fields are cut: {out}");
        assert!(out.contains(" +1"), "first recipient and a count: {out}");
    }
    let whole = s.q(&["search"]).ok();
    assert!(
        whole.contains(&"a very long subject line that goes on ".repeat(5).trim_end().to_string()),
        "piped without COLUMNS: whole fields"
    );
    let out = s.q(&["search", "--limit", "2"]).ok();
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().last().unwrap().contains("3 more match"), "{out}");
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn export_eml_is_byte_exact_and_never_overwrites() {
    let s = new_store();
    let raw1: &[u8] = b"From: a@b\r\nSubject: crlf and 8bit \xe9\xff\r\n\r\nbody\r\nFrom here\r\n";
    let raw2: &[u8] = b"Subject: no final newline\n\nlast line";
    let id1 = hold(
        &s,
        &Msg {
            verdict: "SPAM",
            from: "s@x.example",
            rcpts: &["r1@y.example", "R2@y.example"],
            scanner: Some("rspamd"),
            bytes: raw1,
        },
    );
    let id2 = hold(&s, &Msg { verdict: "PMX:VIRUS", from: "<>", rcpts: &["r3@y.example"], scanner: None, bytes: raw2 });
    let dir = s.work().join("out/nested");
    let out = s.q(&["export", &id1, &id2.to_lowercase(), "--to", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.text().contains("exported 2 of 2"), "{}", out.text());
    assert_eq!(read(&dir.join(format!("{id1}.eml"))), raw1);
    assert_eq!(read(&dir.join(format!("{id2}.eml"))), raw2);
    let meta: serde_json::Value = serde_json::from_slice(&read(&dir.join(format!("{id1}.json")))).unwrap();
    assert_eq!(meta["id"], id1.as_str());
    assert_eq!(meta["verdict"], "SPAM");
    assert_eq!(meta["from"], "s@x.example");
    assert_eq!(meta["recipients"][1]["address"], "R2@y.example");
    assert_eq!(meta["recipients"][1]["state"], "held");
    assert!(meta["received"].as_str().is_some());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(format!("{id1}.eml"))).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Again into the same directory: nothing is overwritten, both are reported, exit 1.
    std::fs::write(dir.join(format!("{id2}.json")), b"mine").unwrap();
    let again = s.q(&["export", "--verdict", "*", "--to", dir.to_str().unwrap()]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert!(again.stderr.contains(&id1) && again.stderr.contains(&id2), "{}", again.stderr);
    assert_eq!(read(&dir.join(format!("{id1}.eml"))), raw1);
    assert_eq!(read(&dir.join(format!("{id2}.json"))), b"mine");
    // Selectors with no match: exit 0, nothing written.
    let none = s.q(&["export", "--rcpt", "nobody@x", "--to", s.work().join("empty").to_str().unwrap()]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(!s.work().join("empty").exists());
    // No selection at all is refused.
    let all = s.q(&["export", "--to", s.work().join("all").to_str().unwrap()]);
    assert_eq!(all.code, 2, "{}", all.stderr);
}

const PY_MBOX: &str = r#"
import mailbox, re, sys, os
mb = mailbox.mbox(sys.argv[1], create=False)
out = sys.argv[2]
for i, key in enumerate(mb.keys()):
    raw = mb.get_bytes(key)
    raw = re.sub(rb'(?m)^>(>*From )', rb'\1', raw)   # mboxrd: one '>' less on quoted From lines
    open(os.path.join(out, '%d.eml' % i), 'wb').write(raw)
    open(os.path.join(out, '%d.from' % i), 'w').write(mb.get_message(key).get_from())
print(len(mb))
"#;

#[test]
fn export_mbox_reads_back_with_python_mailbox() {
    let s = new_store();
    let originals: Vec<&[u8]> = vec![
        b"Subject: quoting\n\nFrom here\n>From there\n>>From afar\nFromage\n",
        b"Subject: crlf\r\n\r\nline\r\nFrom crlf\r\n\r\n",
        b"From old-style@mbox Thu Jan  1 00:00:00 1970\nSubject: starts with a From_ line\n\nbody\n",
        b"Subject: no final newline\n\nlast",
    ];
    let mut ids = Vec::new();
    for (i, bytes) in originals.iter().enumerate() {
        let from = if i == 1 { "<>" } else { "sender@x.example" };
        ids.push(hold(&s, &Msg { verdict: "SPAM", from, rcpts: &["r@y.example"], scanner: None, bytes }));
    }
    let dir = s.work().join("mbox");
    let out = s.q(&["export", "--verdict", "SPAM", "--to", dir.to_str().unwrap(), "--format", "mbox"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files: Vec<String> =
        out.text().lines().filter(|l| l.ends_with(".mbox") || l.ends_with(".jsonl")).map(String::from).collect();
    assert_eq!(files.len(), 2, "{}", out.text());
    let mbox = Path::new(&files[0]);
    let order: Vec<String> = json_lines(&String::from_utf8(read(Path::new(&files[1]))).unwrap())
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted(order.clone()), sorted(ids.clone()));

    let back = s.work().join("back");
    std::fs::create_dir(&back).unwrap();
    let py = quarantine_testkit::run::run(
        {
            let mut c = s.program(quarantine_testkit::require("python3", "python3"));
            c.arg("-c").arg(PY_MBOX).arg(mbox).arg(&back);
            c
        },
        Input::Null,
        quarantine_testkit::HANG,
    );
    assert_eq!(py.code, 0, "python3: {}", py.stderr);
    assert_eq!(py.text().trim(), "4");
    for (i, id) in order.iter().enumerate() {
        let k = ids.iter().position(|x| x == id).unwrap();
        let mut want = originals[k].to_vec();
        if !want.ends_with(b"\n") {
            want.push(b'\n'); // mbox entries end in a newline; export adds one where the message had none
        }
        assert_eq!(
            String::from_utf8_lossy(&read(&back.join(format!("{i}.eml")))),
            String::from_utf8_lossy(&want),
            "message {id}"
        );
        let from = String::from_utf8(read(&back.join(format!("{i}.from")))).unwrap();
        let sender = if k == 1 { "MAILER-DAEMON " } else { "sender@x.example " };
        assert!(from.starts_with(sender), "From_ line {from:?}");
    }
    // The same second's export again would collide: never overwritten.
    let again = s.q(&["export", "--verdict", "SPAM", "--to", dir.to_str().unwrap(), "--format", "mbox"]);
    assert!(again.code == 0 || again.stderr.contains("already exists"), "{}", again.stderr);
}

#[test]
fn export_reports_a_corrupt_blob_and_goes_on() {
    let s = new_store();
    let good = hold(
        &s,
        &Msg {
            verdict: "SPAM",
            from: "a@x.example",
            rcpts: &["r@y.example"],
            scanner: None,
            bytes: b"Subject: good\n\nok\n",
        },
    );
    let bad = hold(
        &s,
        &Msg {
            verdict: "SPAM",
            from: "a@x.example",
            rcpts: &["r@y.example"],
            scanner: None,
            bytes: b"Subject: bad\n\nok\n",
        },
    );
    std::fs::write(s.blob_of(&bad), b"not a zstd frame").unwrap();
    for format in ["eml", "mbox"] {
        let dir = s.work().join(format);
        let out = s.q(&["export", "--verdict", "SPAM", "--to", dir.to_str().unwrap(), "--format", format]);
        assert_eq!(out.code, 1, "{format}: {}", out.stderr);
        assert!(out.stderr.contains(&bad) && out.stderr.contains("corrupt"), "{}", out.stderr);
        assert!(out.text().contains("exported 1 of 2") && out.text().contains("1 failed"), "{}", out.text());
        if format == "eml" {
            assert!(dir.join(format!("{good}.eml")).exists());
            assert!(!dir.join(format!("{bad}.eml")).exists() && !dir.join(format!("{bad}.json")).exists());
        }
    }
    let log = json_lines(&s.q(&["log", "--json"]).ok());
    let exports: Vec<&serde_json::Value> = log.iter().filter(|r| r["action"] == "export").collect();
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0]["counts"]["failed"], 1);
    assert_eq!(exports[0]["counts"]["exported"], 1);
}

#[test]
fn audit_rows_for_export_are_written_and_append_only() {
    let (s, [m1, _, _, _]) = corpus();
    let dir = s.work().join("x");
    let out =
        s.q(&["export", &m1, "--to", dir.to_str().unwrap(), "--actor", "helpdesk-anna", "--reason", "ticket 4711"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_env(
        &s,
        &["export", "--verdict", "SPAM", "--since", "1h", "--to", dir.to_str().unwrap()],
        &[("SUDO_USER", "root-via-sudo")],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out =
        s.q(&["export", "--rcpt", "alice@example.edu", "--to", dir.join("more").to_str().unwrap(), "--format", "mbox"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let rows = json_lines(&s.q(&["log", "--json"]).ok());
    let exports: Vec<&serde_json::Value> = rows.iter().filter(|r| r["action"] == "export").collect();
    assert_eq!(exports.len(), 3, "{rows:?}");
    let first = exports[0];
    assert_eq!(first["actor"], "helpdesk-anna");
    assert_eq!(first["reason"], "ticket 4711");
    assert_eq!(first["counts"]["exported"], 1);
    assert_eq!(first["counts"]["format"], "eml");
    assert_eq!(first["selection"]["selector"]["ids"], serde_json::json!([m1]));
    assert!(chrono::DateTime::parse_from_rfc3339(first["at"].as_str().unwrap()).is_ok());
    assert_eq!(exports[1]["actor"], "root-via-sudo", "SUDO_USER before USER");
    assert_eq!(exports[1]["selection"]["since"], "1h", "the selection as given");
    assert_eq!(exports[2]["actor"], "tester", "USER");
    assert_eq!(exports[2]["counts"]["format"], "mbox");
    assert_eq!(exports[2]["counts"]["exported"], 2);

    let text = s.q(&["log"]).ok();
    assert!(text.contains("helpdesk-anna") && text.contains("export") && text.contains("ticket 4711"), "{text}");
    assert_eq!(s.q(&["log", "--action", "export", "--json"]).ok().lines().count(), 3);
    assert_eq!(s.q(&["log", "--since", "1h", "--json"]).ok().lines().count(), rows.len());
    assert_eq!(s.q(&["log", "--until-not-a-flag"]).code, 2);
    assert!(s.q(&["log", "--since", "2099-01-01", "--json"]).ok().is_empty());

    for sql in
        ["UPDATE audit SET actor = 'someone else'", "DELETE FROM audit", "DELETE FROM audit WHERE action = 'export'"]
    {
        let out = s.sqlite(sql);
        assert_ne!(out.code, 0, "{sql} succeeded");
        assert!(out.stderr.contains("append-only"), "{sql}: {}", out.stderr);
    }
    assert_eq!(json_lines(&s.q(&["log", "--json"]).ok()), rows, "the log is unchanged");
}

#[test]
fn stats_counts_verdicts_days_states_and_storage() {
    let s = new_store();
    let same =
        b"Subject: same\n\n".iter().chain("repeated body line\n".repeat(100).as_bytes()).copied().collect::<Vec<u8>>();
    for (verdict, rcpts) in [
        ("PMX:VIRUS", &["a@x.example", "b@x.example"][..]),
        ("PMX:VIRUS", &["c@x.example"]),
        ("SPAM", &["a@x.example"]),
    ] {
        hold(&s, &Msg { verdict, from: "s@y.example", rcpts, scanner: None, bytes: &same });
    }
    hold(
        &s,
        &Msg {
            verdict: "SPAM",
            from: "s@y.example",
            rcpts: &["d@x.example"],
            scanner: None,
            bytes: b"Subject: other\n\nx\n",
        },
    );
    let st: serde_json::Value = serde_json::from_str(&s.q(&["stats", "--json"]).ok()).unwrap();
    assert_eq!(st["messages"], 4);
    assert_eq!(st["bytes"], 3 * same.len() as u64 + 18);
    assert_eq!(st["by_verdict"][0]["verdict"], "PMX:VIRUS");
    assert_eq!(st["by_verdict"][0]["messages"], 2);
    assert_eq!(st["by_verdict"][0]["today"], 2);
    assert_eq!(st["by_verdict"][1]["verdict"], "SPAM");
    assert_eq!(st["by_day"].as_array().unwrap().len(), 1);
    assert_eq!(st["by_day"][0]["messages"], 4);
    assert_eq!(st["recipients"]["held"], 5);
    assert_eq!(st["recipients"]["failed"], 0);
    assert_eq!(st["storage"]["blobs"], 2);
    assert_eq!(st["storage"]["unique_bytes"], same.len() as u64 + 18);
    assert!(st["storage"]["dedup_ratio"].as_f64().unwrap() > 2.0);
    assert!(st["storage"]["stored_bytes"].as_u64().unwrap() < st["storage"]["unique_bytes"].as_u64().unwrap());
    let shared = s.shared_index().is_some();
    assert_eq!(st["storage"]["index_shared"], shared);
    if shared {
        // Not on this machine's disk: the database's size, not the local marker file's.
        assert!(st["storage"]["index_bytes"].as_u64().unwrap() > 100_000, "{}", st["storage"]);
    } else {
        assert!(st["storage"]["disk_bytes"].as_u64().unwrap() > st["storage"]["index_bytes"].as_u64().unwrap());
    }
    assert_eq!(st["frozen"], serde_json::Value::Null);

    let text = s.q(&["stats"]).ok();
    assert_eq!(text.contains("index: the shared PostgreSQL database, "), shared, "{text}");
    assert!(text.contains("4 message(s) held") && text.contains("PMX:VIRUS") && text.contains("dedup"), "{text}");
    assert!(!text.contains("FROZEN"));
    let freeze = r#"INSERT INTO settings (key, value) VALUES ('frozen', '{"reason":"PMX signature incident","actor":"sec","at":"2026-11-23T06:30:00+01:00"}')"#;
    assert_eq!(s.sqlite(freeze).code, 0);
    let st: serde_json::Value = serde_json::from_str(&s.q(&["stats", "--json"]).ok()).unwrap();
    assert_eq!(st["frozen"]["reason"], "PMX signature incident");
    let text = s.q(&["stats"]).ok();
    assert!(text.contains("PURGE IS FROZEN: PMX signature incident (by sec"), "{text}");
}
