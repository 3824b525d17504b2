//! PostgreSQL under the [`super::Conn`] calls: placeholder and dialect rewriting, a statement cache, and
//! parameter and column conversion through `rusqlite::types::Value`.
//!
//! Parameters are encoded by the type the server inferred for them, not by the Rust type: the store's SQL binds
//! `i64` where a column is `INT4` and typed NULLs everywhere, which `postgres`'s own `ToSql` impls refuse.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::HashMap;
use std::error::Error as StdError;

use postgres::error::SqlState;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use rusqlite::types::Value;

use super::pg_error;

/// Every write transaction takes this advisory lock (module docs of `db`, *Locking*): 'QRNT' as a key. Release
/// claims take it shared, every other writer exclusive.
pub(crate) const WRITE_LOCK: i64 = 0x5152_4e54;

/// How a transaction holds [`WRITE_LOCK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteLock {
    /// A read transaction: no lock.
    None,
    /// A release's claims and outcomes: compatible with each other (row locks keep them apart), excluded from
    /// every exclusive writer.
    Shared,
    /// Ingest, purge and its GC, audit appends, migrations: one at a time across every gateway.
    Exclusive,
}

/// The first shared database this process connected to, for error messages (db::shared_target).
pub(crate) static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub struct PgConn {
    client: RefCell<Client>,
    stmts: RefCell<HashMap<String, Statement>>,
    /// Kept to reconnect: a long-running `ingest --watch` outlives a database restart.
    config: postgres::Config,
    in_tx: Cell<bool>,
}

impl PgConn {
    pub fn connect(url: &str) -> Result<PgConn, postgres::Error> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                config.password(pw);
            }
        }
        if config.get_user().is_none() {
            if let Some(name) = std::env::var("PGUSER").ok().or_else(|| user_name(rustix::process::getuid().as_raw())) {
                config.user(&name);
            }
        }
        config.application_name("quarantine");
        config.connect_timeout(std::time::Duration::from_secs(10));
        // Local time for `stats --by hour` is the client's, as SQLite's 'localtime' is. Sent with the startup
        // packet rather than as a `SET` afterwards: one round trip fewer for every command.
        if let Some(tz) = std::env::var("TZ").ok().as_deref().and_then(session_time_zone) {
            config.options(&format!("-c TimeZone={tz}"));
        }
        let target = describe_target(&config);
        let _ = TARGET.set(target);
        let client = open(&config)?;
        Ok(PgConn {
            client: RefCell::new(client),
            stmts: RefCell::new(HashMap::new()),
            config,
            in_tx: Cell::new(false),
        })
    }

    /// The client, connected again if the server closed the connection between transactions (a restart, an
    /// outage that ended). Inside a transaction a lost connection is an error: the transaction is gone with it.
    fn client(&self) -> rusqlite::Result<RefMut<'_, Client>> {
        if self.client.borrow().is_closed() && !self.in_tx.get() {
            let fresh = open(&self.config).map_err(pg_error)?;
            *self.client.borrow_mut() = fresh;
            self.stmts.borrow_mut().clear();
        }
        Ok(self.client.borrow_mut())
    }

    fn statement(&self, sql: &str) -> rusqlite::Result<Statement> {
        // Reconnect (which empties the cache) before looking in it: a statement prepared on the closed session
        // does not exist on the new one.
        let mut client = self.client()?;
        if let Some(s) = self.stmts.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = translate(sql);
        let st = client.prepare(&text).map_err(pg_error)?;
        self.stmts.borrow_mut().insert(sql.to_string(), st.clone());
        Ok(st)
    }

    pub fn execute(&self, sql: &str, params: Vec<Value>) -> rusqlite::Result<usize> {
        if is_pragma(sql) {
            return Ok(0);
        }
        let st = self.statement(sql)?;
        let params = bind(&st, params);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let n = self.client()?.execute(&st, &refs).map_err(pg_error)?;
        Ok(n as usize)
    }

    pub fn query(&self, sql: &str, params: Vec<Value>) -> rusqlite::Result<Vec<Vec<Value>>> {
        if is_pragma(sql) {
            return Ok(Vec::new());
        }
        let st = self.statement(sql)?;
        let params = bind(&st, params);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.client()?.query(&st, &refs).map_err(pg_error)?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| r.try_get::<_, PgValue>(i).map(|v| v.0).map_err(pg_error)).collect())
            .collect()
    }

    /// Runs statements without parameters. PRAGMAs are SQLite's and are skipped.
    pub fn batch(&self, sql: &str) -> rusqlite::Result<()> {
        if is_pragma(sql) {
            return Ok(());
        }
        let t = sql.trim();
        if t.eq_ignore_ascii_case("COMMIT") || t.eq_ignore_ascii_case("ROLLBACK") {
            let r = self.client.borrow_mut().batch_execute(sql).map_err(pg_error);
            self.in_tx.set(false);
            return r;
        }
        self.client()?.batch_execute(sql).map_err(pg_error)
    }

    pub(crate) fn begin(&self, lock: WriteLock) -> rusqlite::Result<()> {
        let sql = match lock {
            WriteLock::None => "BEGIN".into(),
            WriteLock::Shared => format!("BEGIN; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})"),
            WriteLock::Exclusive => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"),
        };
        let begun = self.client()?.batch_execute(&sql);
        if let Err(e) = begun {
            // BEGIN may have run and the lock failed: leave no aborted transaction behind for the next statement.
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
            return Err(pg_error(e));
        }
        self.in_tx.set(true);
        Ok(())
    }
}

/// Connects; the session settings travel in the startup packet (`connect`). A zone the server does not know
/// fails the startup ("invalid value for parameter TimeZone"): a `TZ` the server cannot use must never stop a
/// command, so it connects again without it (UTC for `stats --by hour`, as before when the `SET` failed).
fn open(config: &postgres::Config) -> Result<Client, postgres::Error> {
    match config.connect(NoTls) {
        Err(e) if config.get_options().is_some() && e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => {
            let mut plain = config.clone();
            plain.options("");
            plain.connect(NoTls)
        }
        other => other,
    }
}

/// `TZ` as a PostgreSQL `TimeZone` for the startup options, or None when it cannot be one: empty, a file path
/// (`TZ=:/etc/localtime`), or characters the options string would have to escape (no zone name has them).
fn session_time_zone(tz: &str) -> Option<&str> {
    let tz = tz.trim_start_matches(':');
    let first = tz.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let plain = tz.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-.".contains(&b)) && !tz.contains("..");
    (first && plain).then_some(tz)
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _ = f.next();
        (f.next()? == uid.to_string()).then(|| name.to_string())
    })
}

/// PostgreSQL's own words (message, detail, hint), or how the connection failed.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        if db.code() == &postgres::error::SqlState::INVALID_PASSWORD {
            s.push_str("; check the password in the `index` URL or PGPASSWORD");
        }
        if db.code() == &postgres::error::SqlState::UNDEFINED_FILE && db.message().contains("pg_trgm") {
            s.push_str("; install the PostgreSQL contrib package (postgresql-contrib) on the server");
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = StdError::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    if is_outage(e) {
        s.push_str(" (is the PostgreSQL server running and reachable?)");
    }
    s
}

/// The server is down or unreachable, or the connection broke: not a setting or a bug.
pub(crate) fn is_outage(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) => {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || c.code().starts_with("08")
        }
        None => {
            e.is_closed()
                || StdError::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().contains("connect")
        }
    }
}

/// `user@host:port/dbname` or `user@socketdir/dbname`, for messages (never the password).
pub(crate) fn describe_target(c: &postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => format!("{h}:{}", c.get_ports().first().copied().unwrap_or(5432)),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!("postgresql://{}@{host}/{}", c.get_user().unwrap_or("?"), c.get_dbname().unwrap_or("?"))
}

fn is_pragma(sql: &str) -> bool {
    sql.trim_start().get(..6).is_some_and(|p| p.eq_ignore_ascii_case("PRAGMA"))
}

/// SQLite SQL → PostgreSQL: `?N` and `?` become `$N`, `GLOB` the glob operator `#~#`, and an FTS5
/// `message_text MATCH ?N` an index-driven `LIKE` on the trigram-indexed table ([`fts_like`]).
/// String literals and quoted identifiers are copied as they are.
pub(crate) fn translate(sql: &str) -> String {
    let fts_row = if sql.contains("message_text f") { "f" } else { "message_text" };
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '?' => {
                out.push('$');
                out.push_str(&placeholder(&mut chars, &mut next));
            }
            c if c.is_ascii_alphabetic() && !sql[..i].ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_') => {
                let word_end =
                    sql[i..].find(|p: char| !(p.is_ascii_alphanumeric() || p == '_')).map_or(sql.len(), |n| i + n);
                let word = &sql[i..word_end];
                if word.eq_ignore_ascii_case("GLOB") {
                    out.push_str("#~#");
                } else if word == "message_text" && sql[word_end..].starts_with(" MATCH ") {
                    let mut call = String::new();
                    // Skip " MATCH " and copy the placeholder, then close the call.
                    let skip = word_end + " MATCH ".len();
                    while chars.peek().is_some_and(|&(j, _)| j < skip) {
                        chars.next();
                    }
                    if chars.peek().is_some_and(|&(_, d)| d == '?') {
                        chars.next();
                    }
                    let digits = placeholder(&mut chars, &mut next);
                    call.push_str(&fts_like(fts_row, &digits));
                    out.push_str(&call);
                    continue;
                } else {
                    out.push_str(word);
                }
                while chars.peek().is_some_and(|&(j, _)| j < word_end) {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The number of the placeholder whose `?` was just read: its digits (`?3`), or for a bare `?` the one after the
/// last number given, as SQLite numbers them.
fn placeholder(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, next: &mut usize) -> String {
    let mut digits = String::new();
    while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
        digits.push(d);
        chars.next();
    }
    if digits.is_empty() {
        *next += 1;
        next.to_string()
    } else {
        *next = digits.parse().unwrap_or(*next);
        digits
    }
}

/// The FTS5 phrase `COLUMN : "TEXT"` in parameter `$n` (text.rs) as `lower(col) LIKE '%text%'` on the column
/// it names, which the trigram GIN index on `lower(col)` (migrations/postgres/0002) answers. Each column gets its
/// own arm, whose pattern is NULL (no row, and an empty index scan) unless the phrase names that column: the
/// column is only known when the parameter is, and a generic plan must still name each index. `%`, `_` and `\`
/// in the text are escaped, so the match is the same case-insensitive substring test as SQLite's trigram phrase.
fn fts_like(row: &str, n: &str) -> String {
    let p = format!("${n}");
    let text =
        format!("replace(substr({p}, strpos({p}, ' : \"') + 4, length({p}) - strpos({p}, ' : \"') - 4), '\"\"', '\"')");
    let pattern =
        format!("'%' || replace(replace(replace(lower({text}), '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'");
    let arm = |col: &str| {
        format!("lower({row}.{col}) LIKE (CASE WHEN split_part({p}, ' : ', 1) = '{col}' THEN {pattern} END)")
    };
    format!("({} OR {})", arm("subject"), arm("hdr_from"))
}

/// The values as parameters; each is encoded as the type the server inferred for its placeholder.
fn bind(st: &Statement, params: Vec<Value>) -> Vec<PgParam> {
    debug_assert_eq!(params.len(), st.params().len(), "parameters for {} placeholders", st.params().len());
    params.into_iter().map(PgParam).collect()
}

/// A parameter encoded as its placeholder's type.
#[derive(Debug)]
struct PgParam(Value);

impl ToSql for PgParam {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let int = |v: &Value| -> Result<i64, Box<dyn StdError + Sync + Send>> {
            match v {
                Value::Integer(i) => Ok(*i),
                Value::Real(f) => Ok(*f as i64),
                Value::Text(t) => Ok(t.parse()?),
                other => Err(format!("cannot send {other:?} as {ty}").into()),
            }
        };
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            v if *ty == Type::INT8 => int(v)?.to_sql(ty, out),
            v if *ty == Type::INT4 => i32::try_from(int(v)?)?.to_sql(ty, out),
            v if *ty == Type::INT2 => i16::try_from(int(v)?)?.to_sql(ty, out),
            v if *ty == Type::BOOL => (int(v)? != 0).to_sql(ty, out),
            Value::Real(f) if *ty == Type::FLOAT8 => f.to_sql(ty, out),
            Value::Integer(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Value::Real(f) if *ty == Type::FLOAT4 => (*f as f32).to_sql(ty, out),
            Value::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Value::Text(t) if *ty == Type::BYTEA => t.as_bytes().to_sql(ty, out),
            Value::Text(t) => {
                out.extend_from_slice(nul_out(t).as_bytes());
                Ok(IsNull::No)
            }
            Value::Integer(i) => {
                out.extend_from_slice(i.to_string().as_bytes());
                Ok(IsNull::No)
            }
            Value::Real(f) => {
                out.extend_from_slice(f.to_string().as_bytes());
                Ok(IsNull::No)
            }
            Value::Blob(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// PostgreSQL text cannot hold NUL, which a decoded header (`=?utf-8?q?a=00b?=`) can: it travels as the
/// noncharacter U+FDD0 and comes back as NUL. Without this one hostile message would fail its whole ingest batch.
const NUL_STAND_IN: char = '\u{FDD0}';

fn nul_out(t: &str) -> std::borrow::Cow<'_, str> {
    if t.contains('\0') {
        t.replace('\0', &NUL_STAND_IN.to_string()).into()
    } else {
        t.into()
    }
}

fn nul_in(t: String) -> String {
    if t.contains(NUL_STAND_IN) {
        t.replace(NUL_STAND_IN, "\0")
    } else {
        t
    }
}

/// A column read as the SQLite value it corresponds to.
struct PgValue(Value);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let v = match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)? as i64),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)? as i64),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)? as i64),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)? as i64),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)? as f64),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::NUMERIC => numeric(raw)?,
            _ => Value::Text(nul_in(String::from_utf8(raw.to_vec())?)),
        };
        Ok(PgValue(v))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// NUMERIC's binary form (what `sum(bigint)` returns): an integer when it has no fraction, else a float.
fn numeric(raw: &[u8]) -> Result<Value, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn StdError + Sync + Send>> {
        Ok(i16::from_be_bytes(raw.get(i..i + 2).ok_or("short NUMERIC")?.try_into()?))
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut frac = 0f64;
    for k in 0..ndigits {
        let d = word(8 + 2 * k)? as i128;
        let power = weight - k as i32;
        if power >= 0 {
            int += d * 10_000i128.pow(power as u32);
        } else {
            frac += d as f64 * 10_000f64.powi(power);
        }
    }
    let neg = sign == 0x4000;
    if frac == 0.0 {
        if let Ok(i) = i64::try_from(if neg { -int } else { int }) {
            return Ok(Value::Integer(i));
        }
    }
    let f = int as f64 + frac;
    Ok(Value::Real(if neg { -f } else { f }))
}

#[cfg(test)]
mod tests {
    use super::{session_time_zone, translate};

    #[test]
    fn only_zone_names_travel_in_the_startup_options() {
        assert_eq!(session_time_zone("Europe/Berlin"), Some("Europe/Berlin"));
        assert_eq!(session_time_zone(":America/Argentina/Buenos_Aires"), Some("America/Argentina/Buenos_Aires"));
        assert_eq!(session_time_zone("Etc/GMT+5"), Some("Etc/GMT+5"));
        for not_a_name in
            ["", ":", ":/etc/localtime", "/usr/share/zoneinfo/UTC", "a b", "x'y", "-c foo", "../x", "a\\b"]
        {
            assert_eq!(session_time_zone(not_a_name), None, "{not_a_name:?}");
        }
    }

    #[test]
    fn placeholders_and_dialect() {
        assert_eq!(translate("SELECT ?1, ?, '?x' FROM t WHERE a = ?3"), "SELECT $1, $2, '?x' FROM t WHERE a = $3");
        assert_eq!(translate("SELECT ? , ?"), "SELECT $1 , $2");
        assert_eq!(translate("m.verdict GLOB ?2 OR x_glob = 1"), "m.verdict #~# $2 OR x_glob = 1");
        let f = translate("SELECT 1 FROM message_text f WHERE message_text MATCH ?4)");
        assert!(
            f.starts_with("SELECT 1 FROM message_text f WHERE (lower(f.subject) LIKE (CASE WHEN split_part($4, "),
            "{f}"
        );
        assert!(f.contains(" OR lower(f.hdr_from) LIKE "), "{f}");
        assert!(f.ends_with(" END)))"), "{f}");
        let t = translate("SELECT 1 FROM message_text WHERE message_text MATCH ?1 LIMIT ?2");
        assert!(t.starts_with("SELECT 1 FROM message_text WHERE (lower(message_text.subject) LIKE "), "{t}");
        assert!(t.ends_with(" END)) LIMIT $2"), "{t}");
        // Bare placeholders around a MATCH are numbered in order, through it, as SQLite numbers them.
        let b = translate("SELECT ? FROM message_text WHERE message_text MATCH ? AND x = ?");
        assert!(b.starts_with("SELECT $1 FROM message_text WHERE (lower(message_text.subject) LIKE"), "{b}");
        assert!(b.contains("split_part($2, ") && !b.contains("$1, ") && b.ends_with(" END)) AND x = $3"), "{b}");
    }
}
