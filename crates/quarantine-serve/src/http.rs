//! HTTP/1.1 intake for rspamd's metadata_exporter (`http` backend), one request per connection.
//!
//! Two shapes, both read from rspamd's `src/plugins/lua/metadata_exporter.lua`:
//! - formatter `default` with `meta_headers = true`: the body is the raw message (`Content-Type: text/plain`, the
//!   plugin's default `mime_type`), and the metadata comes as `X-Rspamd-<key>` headers: `from` (a string,
//!   `unknown` when rspamd had none), `rcpt` (a JSON list, or the string `unknown`), `qid`, `action`, `score`,
//!   `symbols` (a JSON list of objects with `name`, `score`, `options`, ...), `ip`, `user`, `subject`, `fuzzy`,
//!   `scan_time`, `rspamd_server`. Header names are case-insensitive.
//! - formatter `multipart` (newer rspamd; 3.4 in Debian has only default/json): `multipart/form-data;
//!   boundary="HEX"` with a part `metadata` (`application/json`: the same keys, `score` a number) and a part
//!   `message` (`message/rfc822`, binary), in either order.
//!
//! Replies: 200 (with the ids) only once every spool file is durable; 400 for a malformed request or metadata;
//! 401 without the bearer token when one is required (a token is set, or the listener is not loopback/unix);
//! 404/405 for another path or method; 411 without a length; 413 past `max_message_size`; 415 for a content type
//! or encoding we do not read (gzip included: turn `gzip` off in the rule); 503 when the spool cannot take it (so
//! rspamd with `defer = true` soft-rejects and the MTA keeps the message).
//!
//! The request head is parsed by `httparse`; bodies (Content-Length or chunked) and multipart are ours, small,
//! bounded, and never stored before they are complete.

use std::io::Write;
use std::time::{Duration, Instant};

use quarantine_store::ScanMeta;
use serde_json::Value;

use crate::intake::{self, Incoming};
use crate::server::{ConnBox, Shared};

const TICK: Duration = Duration::from_millis(200);
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 96;

struct Reply {
    code: u16,
    text: String,
}

fn reply(code: u16, text: impl Into<String>) -> Reply {
    Reply { code, text: text.into() }
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

struct Conn<'a> {
    sh: &'a Shared,
    s: Box<dyn ConnBox>,
    buf: Vec<u8>,
    started: Instant,
    last: Instant,
}

impl Conn<'_> {
    /// More bytes into `buf`; `Err` with the reply to give (or none: the peer is gone).
    fn fill(&mut self) -> Result<(), Option<Reply>> {
        let lim = self.sh.config().limits.clone();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if self.started.elapsed() >= lim.session_timeout || self.last.elapsed() >= lim.idle_timeout {
                return Err(Some(reply(408, "request took too long")));
            }
            if self.sh.past_grace() {
                return Err(Some(reply(503, "shutting down")));
            }
            match crate::server::read_into(&mut *self.s, &mut chunk, &mut self.buf) {
                crate::server::ReadOutcome::Data => {
                    self.last = Instant::now();
                    return Ok(());
                }
                crate::server::ReadOutcome::Gone => return Err(None),
                crate::server::ReadOutcome::Again => {}
            }
        }
    }

    fn send(&mut self, r: &Reply, json: Option<&Value>) {
        let body = match json {
            Some(v) => format!("{v}\n"),
            None => format!("{}\n", r.text),
        };
        let ctype = if json.is_some() { "application/json" } else { "text/plain; charset=utf-8" };
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
            r.code,
            reason(r.code),
            body.len()
        );
        if r.code == 401 {
            head.push_str("WWW-Authenticate: Bearer\r\n");
        }
        if r.code == 503 {
            head.push_str("Retry-After: 5\r\n");
        }
        head.push_str("\r\n");
        let _ = self.s.write_all(head.as_bytes()).and_then(|()| self.s.write_all(body.as_bytes()));
        let _ = self.s.flush();
    }
}

/// Serves one connection (one request).
pub fn serve(sh: &Shared, s: Box<dyn ConnBox>) {
    let _ = s.set_read_timeout(Some(TICK));
    let _ = s.set_write_timeout(Some(sh.config().limits.idle_timeout));
    let now = Instant::now();
    let mut c = Conn { sh, s, buf: Vec::new(), started: now, last: now };
    match request(&mut c) {
        Ok((r, json)) => c.send(&r, Some(&json)),
        Err(Some(r)) => c.send(&r, None),
        Err(None) => {}
    }
}

/// A request head, owned.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
    fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| String::from_utf8_lossy(v).trim().to_string())
    }
    /// Whether `name` occurs more than once with values that differ (RFC 9112 section 6.3: for the framing
    /// fields, an error, never "take the first").
    fn conflicting(&self, name: &str) -> bool {
        let mut values = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim_ascii());
        values.next().is_some_and(|first| values.any(|v| v != first))
    }
}

fn read_head(c: &mut Conn) -> Result<(Head, usize), Option<Reply>> {
    loop {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&c.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: req.path.unwrap_or("").to_string(),
                    headers: req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect(),
                };
                return Ok((head, n));
            }
            Ok(httparse::Status::Partial) => {
                if c.buf.len() > MAX_HEAD {
                    return Err(Some(reply(431, "request head too large")));
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Some(reply(431, "too many header fields"))),
            Err(e) => return Err(Some(reply(400, format!("malformed request head: {e}")))),
        }
        match c.fill() {
            Ok(()) => {}
            Err(None) if !c.buf.is_empty() => return Err(Some(reply(400, "truncated request head"))),
            Err(e) => return Err(e),
        }
    }
}

fn request(c: &mut Conn) -> Result<(Reply, Value), Option<Reply>> {
    let (head, used) = read_head(c)?;
    c.buf.drain(..used);
    let cfg = c.sh.config();
    let path = head.path.split('?').next().unwrap_or("");
    if head.method == "GET" && path == "/ping" {
        return Ok((reply(200, "pong"), serde_json::json!({ "status": "pong" })));
    }
    if path != "/rspamd" {
        return Err(Some(reply(404, "no such endpoint: POST /rspamd")));
    }
    if head.method != "POST" {
        return Err(Some(reply(405, "use POST")));
    }
    let token = cfg.http_token.as_deref().filter(|t| !t.is_empty());
    if token.is_some() || !c.sh.http_local {
        let given = head.text("Authorization").unwrap_or_default();
        let ok = token.is_some_and(|t| {
            let want = format!("Bearer {t}");
            // Compared without an early exit, so the time does not tell how much matched.
            want.len() == given.len() && want.bytes().zip(given.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        });
        if !ok {
            return Err(Some(reply(401, "a bearer token is required (Authorization: Bearer ...)")));
        }
    }
    if let Some(enc) = head.text("Content-Encoding").filter(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(Some(reply(415, format!("Content-Encoding {enc} is not read here (turn gzip off)"))));
    }
    let max = cfg.limits.max_message_size;
    // The multipart framing and metadata come on top of the message.
    let max_body = max + 1024 * 1024;
    // Two framings for one body: taking the first stored a truncated message and answered 200 for it.
    for framing in ["Content-Length", "Transfer-Encoding"] {
        if head.conflicting(framing) {
            return Err(Some(reply(400, format!("conflicting {framing} fields"))));
        }
    }
    let te = head.text("Transfer-Encoding");
    let cl = head.text("Content-Length");
    let body = match (te, cl) {
        (Some(_), Some(_)) => return Err(Some(reply(400, "both Transfer-Encoding and Content-Length"))),
        (Some(te), None) if te.eq_ignore_ascii_case("chunked") => {
            continue_100(c, &head);
            chunked(c, max_body)?
        }
        (Some(te), None) => return Err(Some(reply(400, format!("Transfer-Encoding {te} is not supported")))),
        (None, Some(cl)) => {
            let n: u64 = cl.parse().map_err(|_| Some(reply(400, "bad Content-Length")))?;
            if n > max_body {
                return Err(Some(reply(413, format!("the body is larger than the limit of {max} bytes"))));
            }
            continue_100(c, &head);
            while (c.buf.len() as u64) < n {
                c.fill().map_err(|e| e.or(Some(reply(400, "truncated body"))))?;
            }
            c.buf.truncate(n as usize);
            std::mem::take(&mut c.buf)
        }
        (None, None) => return Err(Some(reply(411, "a Content-Length or chunked body is required"))),
    };
    let ctype = head.text("Content-Type").unwrap_or_default();
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (meta, message) = match mime.as_str() {
        "multipart/form-data" => {
            let boundary = param(&ctype, "boundary").ok_or_else(|| Some(reply(400, "multipart without boundary")))?;
            let parts = multipart(&body, &boundary).ok_or_else(|| Some(reply(400, "malformed multipart body")))?;
            let mut meta = None;
            let mut message = None;
            for (name, data) in parts {
                // Two messages or two envelopes in one request: which one is meant cannot be known, and keeping the
                // last silently held whichever came second.
                if (name == "metadata" && meta.is_some()) || (name == "message" && message.is_some()) {
                    return Err(Some(reply(400, format!("more than one {name} part"))));
                }
                match name.as_str() {
                    "metadata" => {
                        let v: Value = serde_json::from_slice(&data)
                            .map_err(|e| Some(reply(400, format!("metadata part is not JSON: {e}"))))?;
                        meta = Some(Meta::from_json(&v)?);
                    }
                    "message" => message = Some(data),
                    _ => {}
                }
            }
            let meta = meta.ok_or_else(|| Some(reply(400, "multipart without a metadata part")))?;
            (meta, message.ok_or_else(|| Some(reply(400, "multipart without a message part")))?)
        }
        "" | "text/plain" | "message/rfc822" | "application/octet-stream" => (Meta::from_headers(&head)?, body),
        other => return Err(Some(reply(415, format!("Content-Type {other} is not a message or multipart/form-data")))),
    };
    if message.len() as u64 > max {
        return Err(Some(reply(413, format!("the message is larger than the limit of {max} bytes"))));
    }
    if message.is_empty() {
        return Err(Some(reply(400, "empty message")));
    }
    let started = Instant::now();
    let mut extra = Vec::new();
    if let Some(a) = &meta.scan.action {
        extra.push(("X-Rspamd-Action".to_string(), a.clone()));
    }
    let m = Incoming {
        via: "http",
        from: &meta.from,
        rcpts: &meta.rcpts,
        bytes: &message,
        scan: Some(meta.scan.clone()),
        queue_id: meta.qid.clone(),
        extra,
        started,
        session: None,
    };
    match intake::deliver(c.sh, &cfg, m) {
        Ok(ids) => Ok((reply(200, "held"), serde_json::json!({ "status": "held", "ids": ids }))),
        Err(e) => Err(Some(reply(503, format!("not held, try again later: {e}")))),
    }
}

fn continue_100(c: &mut Conn, head: &Head) {
    if head.text("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        let _ = c.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}

/// A chunked body, decoded; trailers are read and ignored.
fn chunked(c: &mut Conn, max: u64) -> Result<Vec<u8>, Option<Reply>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let truncated = || Some(reply(400, "truncated chunked body"));
    loop {
        let line_end = loop {
            if let Some(i) = c.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + i;
            }
            if c.buf.len() - pos > 4096 {
                return Err(Some(reply(400, "bad chunk size line")));
            }
            c.fill().map_err(|e| e.or_else(truncated))?;
        };
        let line = String::from_utf8_lossy(&c.buf[pos..line_end]).to_string();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16).map_err(|_| Some(reply(400, "bad chunk size")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                if let Some(i) = c.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    if i == 0 {
                        return Ok(out);
                    }
                    pos += i + 2;
                    continue;
                }
                if c.buf.len() - pos > MAX_HEAD {
                    return Err(Some(reply(400, "trailers too large")));
                }
                c.fill().map_err(|e| e.or_else(truncated))?;
            }
        }
        if out.len() as u64 + size > max {
            return Err(Some(reply(413, "the body is larger than the limit")));
        }
        while ((c.buf.len() - pos) as u64) < size + 2 {
            c.fill().map_err(|e| e.or_else(truncated))?;
        }
        let end = pos + size as usize;
        out.extend_from_slice(&c.buf[pos..end]);
        if &c.buf[end..end + 2] != b"\r\n" {
            return Err(Some(reply(400, "chunk not followed by CRLF")));
        }
        pos = end + 2;
        if pos > 1 << 20 {
            c.buf.drain(..pos);
            pos = 0;
        }
    }
}

/// A parameter of a header value (`boundary="x"` or `boundary=x`).
fn param(v: &str, name: &str) -> Option<String> {
    v.split(';').skip(1).find_map(|p| {
        let (k, val) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| val.trim().trim_matches('"').to_string())
    })
}

/// The parts of a `multipart/form-data` body: (name, bytes). `None` when it does not parse.
fn multipart(body: &[u8], boundary: &str) -> Option<Vec<(String, Vec<u8>)>> {
    if boundary.is_empty() || boundary.len() > 200 {
        return None;
    }
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let find = |hay: &[u8], from: usize| hay[from..].windows(d.len()).position(|w| w == d).map(|i| i + from);
    let mut at = find(body, 0)?;
    let mut parts = Vec::new();
    loop {
        let after = at + d.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        if body.get(after..after + 2) != Some(b"\r\n") {
            return None;
        }
        let start = after + 2;
        // The next delimiter must follow a CRLF.
        let mut next = find(body, start)?;
        let real = |n: usize| {
            n >= start + 2
                && &body[n - 2..n] == b"\r\n"
                && matches!(body.get(n + d.len()..n + d.len() + 2), Some(b"\r\n") | Some(b"--"))
        };
        while !real(next) {
            next = find(body, next + 1)?;
        }
        let part = &body[start..next - 2];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]);
        let data = part[split + 4..].to_vec();
        let name = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-disposition").then(|| param(v, "name")).flatten()
        })?;
        parts.push((name, data));
        at = next;
    }
}

/// rspamd's metadata, from either shape.
struct Meta {
    from: String,
    rcpts: Vec<String>,
    qid: Option<String>,
    scan: ScanMeta,
}

fn unknown(s: &str) -> bool {
    s.is_empty() || s == "unknown"
}

impl Meta {
    fn from_headers(h: &Head) -> Result<Meta, Option<Reply>> {
        // Read lossily, an envelope address that is not UTF-8 would be held (and later released) with U+FFFD in
        // place of its bytes, an address rspamd never gave.
        for name in ["X-Rspamd-Rcpt", "X-Rspamd-From"] {
            if h.get(name).is_some_and(|v| std::str::from_utf8(v).is_err()) {
                return Err(Some(reply(400, format!("{name} is not valid UTF-8"))));
            }
        }
        let rcpt = h.text("X-Rspamd-Rcpt").ok_or_else(|| Some(reply(400, "no X-Rspamd-Rcpt header")))?;
        let rcpt: Value = serde_json::from_str(&rcpt).unwrap_or(Value::String(rcpt));
        let symbols = match h.text("X-Rspamd-Symbols") {
            Some(s) => Some(
                serde_json::from_str::<Value>(&s)
                    .map_err(|e| Some(reply(400, format!("X-Rspamd-Symbols is not JSON: {e}"))))?,
            ),
            None => None,
        };
        let score = match h.text("X-Rspamd-Score") {
            Some(s) => Some(s.parse::<f64>().map_err(|_| Some(reply(400, format!("bad X-Rspamd-Score {s:?}"))))?),
            None => None,
        };
        let v = serde_json::json!({
            "from": h.text("X-Rspamd-From"),
            "rcpt": rcpt,
            "qid": h.text("X-Rspamd-Qid"),
            "action": h.text("X-Rspamd-Action"),
            "score": score,
            "symbols": symbols,
        });
        Meta::from_json(&v)
    }

    fn from_json(v: &Value) -> Result<Meta, Option<Reply>> {
        let bad = |why: &str| Some(reply(400, format!("metadata: {why}")));
        let from = match v.get("from") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if unknown(s) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("from is not a string")),
        };
        let rcpts: Vec<String> = match v.get("rcpt") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("rcpt is not a list of strings"))?,
            _ => return Err(bad("no recipients (rcpt is not a JSON list; is rspamd given the envelope?)")),
        };
        if rcpts.is_empty() {
            return Err(bad("no recipients"));
        }
        let score = match v.get("score") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => Some(s.parse::<f64>().map_err(|_| bad("score is not a number"))?),
            _ => None,
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !unknown(s)).map(str::to_string);
        let symbols = v.get("symbols").filter(|s| !s.is_null()).cloned();
        if symbols.as_ref().is_some_and(|s| !s.is_array()) {
            return Err(bad("symbols is not a list"));
        }
        for a in rcpts.iter() {
            quarantine_mail::address::envelope_recipient(a).map_err(|e| bad(&format!("recipient: {e}")))?;
        }
        quarantine_mail::address::envelope_sender(&from).map_err(|e| bad(&format!("sender: {e}")))?;
        Ok(Meta { from, rcpts, qid: text("qid"), scan: ScanMeta { action: text("action"), score, symbols } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_as_rspamd_writes_it() {
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"message\"; filename=\"message.eml\"\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n\r\nSubject: x\r\n\r\n--b1 not a delimiter\r\n\r\n--b1\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\nContent-Transfer-Encoding: binary\r\n\r\n{\"a\":1}\r\n--b1--\r\n";
        let p = multipart(body, "b1").unwrap();
        assert_eq!(p[0].0, "message");
        assert_eq!(p[0].1, b"Subject: x\r\n\r\n--b1 not a delimiter\r\n");
        assert_eq!(p[1], ("metadata".to_string(), b"{\"a\":1}".to_vec()));
        assert!(multipart(b"--b1\r\ngarbage", "b1").is_none());
        assert_eq!(param("multipart/form-data; boundary=\"abc\"", "boundary").as_deref(), Some("abc"));
    }
}
