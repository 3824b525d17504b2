//! The index connection: SQLite (the embedded default) or PostgreSQL (a shared index, DESIGN section 11).
//!
//! The store's SQL was written against rusqlite, about 190 call sites. [`Conn`] offers the same calls
//! (`execute`, `query_row`, `prepare_cached`, `query_map`, transactions) over either engine, so a call site changes
//! its types, not its shape, and one query text serves both engines: parameters stay `rusqlite::ToSql`, rows hand
//! out `rusqlite::types::FromSql` values, errors stay `rusqlite::Error` (a PostgreSQL error travels inside it, see
//! [`pg_error`]), so `.optional()` and `?` work unchanged.
//!
//! # Dialect
//! Most SQL is written in the subset both engines accept (`ON CONFLICT DO NOTHING`, `RETURNING`, `FILTER`,
//! `string_agg`). What differs is handled in one place each: placeholders, `GLOB` and the FTS5 `MATCH` are
//! rewritten for PostgreSQL by [`pg::translate`] onto functions the PostgreSQL migrations define (`instr`, a glob
//! operator, a `LIKE` that the trigram indexes on `message_text` answer); `PRAGMA`s are SQLite's only, and
//! callers that need them check [`Conn::is_postgres`].
//!
//! # Locking
//! SQLite's `BEGIN IMMEDIATE` makes every write transaction exclusive; the store's protocols (ingest vs purge's
//! GC, the audit chain, release claims) were designed on that. On PostgreSQL a write transaction takes one
//! transaction-scoped advisory lock, so writers from every gateway are serialised the same way and each protocol
//! keeps its proof; readers never wait for it. The one exception is a release's claims and outcomes
//! ([`Conn::begin_claims`]): they take that lock *shared*, so releases on several gateways claim at the same
//! time, and keep apart by locking the recipient rows they claim (`FOR UPDATE SKIP LOCKED`). Shared still
//! excludes every exclusive writer, which purge needs: its "no recipient is `releasing`" test must not race an
//! uncommitted claim. A claim transaction never appends to the audit chain (the release-start row is written in an
//! exclusive one), so no transaction ever asks to upgrade the lock.

use rusqlite::types::{FromSql, Value, ValueRef};
use rusqlite::ToSql;

#[cfg(feature = "postgres")]
pub(crate) mod pg;

/// An index connection.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Pg(Box<pg::PgConn>),
}

/// Parameters for a statement: what rusqlite takes (`params![..]`, `[x]`, `&[..]`) or [`params_from_iter`].
pub trait Params {
    type Sqlite: rusqlite::Params;
    fn into_sqlite(self) -> Self::Sqlite;
    /// The values as PostgreSQL binds them; a build without the `postgres` feature never asks.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn into_values(self) -> rusqlite::Result<Vec<Value>>;
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn value_of<T: ToSql + ?Sized>(p: &T) -> rusqlite::Result<Value> {
    use rusqlite::types::ToSqlOutput;
    Ok(match p.to_sql()? {
        ToSqlOutput::Borrowed(v) => Value::try_from(v)?,
        ToSqlOutput::Owned(v) => v,
        _ => return Err(rusqlite::Error::ToSqlConversionFailure("unsupported parameter kind".into())),
    })
}

impl<'a> Params for &'a [&'a dyn ToSql] {
    type Sqlite = Self;
    fn into_sqlite(self) -> Self {
        self
    }
    fn into_values(self) -> rusqlite::Result<Vec<Value>> {
        self.iter().map(|p| value_of(*p)).collect()
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    type Sqlite = Self;
    fn into_sqlite(self) -> Self {
        self
    }
    fn into_values(self) -> rusqlite::Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

macro_rules! array_params {
    ($($n:literal)+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            type Sqlite = Self;
            fn into_sqlite(self) -> Self {
                self
            }
            fn into_values(self) -> rusqlite::Result<Vec<Value>> {
                self.iter().map(|p| value_of(p)).collect()
            }
        }
        impl<T: ToSql + ?Sized> Params for &[&T; $n] {
            type Sqlite = Self;
            fn into_sqlite(self) -> Self {
                self
            }
            fn into_values(self) -> rusqlite::Result<Vec<Value>> {
                self.iter().map(|p| value_of(*p)).collect()
            }
        }
    )+};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Like `rusqlite::params_from_iter`.
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    type Sqlite = rusqlite::ParamsFromIter<I>;
    fn into_sqlite(self) -> Self::Sqlite {
        rusqlite::params_from_iter(self.0)
    }
    fn into_values(self) -> rusqlite::Result<Vec<Value>> {
        self.0.into_iter().map(|p| value_of(&p)).collect()
    }
}

/// One result row.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    #[cfg(feature = "postgres")]
    Pg(&'a [Value]),
}

/// A column position; a trait, as in rusqlite, so that `get::<_, T>(i)` reads the same.
pub trait ColIndex {
    fn idx(self) -> usize;
}

impl ColIndex for usize {
    fn idx(self) -> usize {
        self
    }
}

impl Row<'_> {
    pub fn get<I: ColIndex, T: FromSql>(&self, idx: I) -> rusqlite::Result<T> {
        let idx = idx.idx();
        match self {
            Row::Sqlite(r) => r.get(idx),
            #[cfg(feature = "postgres")]
            Row::Pg(vals) => {
                let v = vals.get(idx).ok_or(rusqlite::Error::InvalidColumnIndex(idx))?;
                T::column_result(ValueRef::from(v)).map_err(|e| match e {
                    rusqlite::types::FromSqlError::InvalidType => {
                        rusqlite::Error::InvalidColumnType(idx, format!("column {idx}"), ValueRef::from(v).data_type())
                    }
                    other => {
                        rusqlite::Error::FromSqlConversionFailure(idx, ValueRef::from(v).data_type(), Box::new(other))
                    }
                })
            }
        }
    }

    pub fn get_ref<I: ColIndex>(&self, idx: I) -> rusqlite::Result<ValueRef<'_>> {
        let idx = idx.idx();
        match self {
            Row::Sqlite(r) => r.get_ref(idx),
            #[cfg(feature = "postgres")]
            Row::Pg(vals) => vals.get(idx).map(ValueRef::from).ok_or(rusqlite::Error::InvalidColumnIndex(idx)),
        }
    }
}

/// A prepared statement.
pub enum Stmt<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOwned(rusqlite::Statement<'c>),
    #[cfg(feature = "postgres")]
    Pg {
        conn: &'c pg::PgConn,
        sql: String,
    },
}

/// Rows of a query, read one at a time.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    #[cfg(feature = "postgres")]
    Pg(std::vec::IntoIter<Vec<Value>>, Option<Vec<Value>>),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> rusqlite::Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            #[cfg(feature = "postgres")]
            Rows::Pg(it, cur) => {
                *cur = it.next();
                Ok(cur.as_deref().map(Row::Pg))
            }
        }
    }
}

type MappedRows<'s, T> = Box<dyn Iterator<Item = rusqlite::Result<T>> + 's>;

impl<'c> Stmt<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Stmt::Sqlite(s) => Some(s),
            Stmt::SqliteOwned(s) => Some(s),
            #[cfg(feature = "postgres")]
            Stmt::Pg { .. } => None,
        }
    }

    pub fn execute<P: Params>(&mut self, params: P) -> rusqlite::Result<usize> {
        match self {
            #[cfg(feature = "postgres")]
            Stmt::Pg { conn, sql } => conn.execute(sql, params.into_values()?),
            s => s.sqlite().expect("sqlite").execute(params.into_sqlite()),
        }
    }

    pub fn query<P: Params>(&mut self, params: P) -> rusqlite::Result<Rows<'_>> {
        match self {
            #[cfg(feature = "postgres")]
            Stmt::Pg { conn, sql } => Ok(Rows::Pg(conn.query(sql, params.into_values()?)?.into_iter(), None)),
            s => Ok(Rows::Sqlite(s.sqlite().expect("sqlite").query(params.into_sqlite())?)),
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(rusqlite::Error::QueryReturnedNoRows),
        }
    }

    pub fn exists<P: Params>(&mut self, params: P) -> rusqlite::Result<bool> {
        let mut rows = self.query(params)?;
        Ok(rows.next()?.is_some())
    }

    pub fn query_map<'s, T: 's, P: Params, F>(&'s mut self, params: P, mut f: F) -> rusqlite::Result<MappedRows<'s, T>>
    where
        F: FnMut(&Row<'_>) -> rusqlite::Result<T> + 's,
    {
        match self {
            #[cfg(feature = "postgres")]
            Stmt::Pg { conn, sql } => {
                let rows = conn.query(sql, params.into_values()?)?;
                Ok(Box::new(rows.into_iter().map(move |r| f(&Row::Pg(&r)))))
            }
            s => {
                let st = s.sqlite().expect("sqlite");
                Ok(Box::new(st.query_map(params.into_sqlite(), move |r| f(&Row::Sqlite(r)))?))
            }
        }
    }
}

/// How a transaction starts; only `Immediate` (a write transaction) and `Deferred` are used.
pub use rusqlite::TransactionBehavior;

/// A transaction on a [`Conn`]: rolled back on drop unless committed. Derefs to the connection.
pub struct Tx<'c> {
    conn: &'c Conn,
    done: bool,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Tx<'_> {
    pub fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }

    pub fn rollback(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("ROLLBACK")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Conn {
    pub fn is_postgres(&self) -> bool {
        !matches!(self, Conn::Sqlite(_))
    }

    /// The SQLite connection, for the few SQLite-only steps (pragmas, the migration's user_version).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            #[cfg(feature = "postgres")]
            Conn::Pg(_) => None,
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        match self {
            Conn::Sqlite(c) => c.execute(sql, params.into_sqlite()),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.execute(sql, params.into_values()?),
        }
    }

    pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.batch(sql),
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        match self {
            Conn::Sqlite(c) => c.query_row(sql, params.into_sqlite(), |r| f(&Row::Sqlite(r))),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => {
                let rows = c.query(sql, params.into_values()?)?;
                match rows.first() {
                    Some(r) => f(&Row::Pg(r)),
                    None => Err(rusqlite::Error::QueryReturnedNoRows),
                }
            }
        }
    }

    pub fn prepare_cached(&self, sql: &str) -> rusqlite::Result<Stmt<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare_cached(sql)?)),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => Ok(Stmt::Pg { conn: c, sql: sql.to_string() }),
        }
    }

    pub fn prepare(&self, sql: &str) -> rusqlite::Result<Stmt<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::SqliteOwned(c.prepare(sql)?)),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => Ok(Stmt::Pg { conn: c, sql: sql.to_string() }),
        }
    }

    /// Starts a transaction. `Immediate` is a write transaction: SQLite's `BEGIN IMMEDIATE`, on PostgreSQL
    /// `BEGIN` and the writers' advisory lock (module docs, *Locking*).
    pub fn transaction_with_behavior(&mut self, behavior: TransactionBehavior) -> rusqlite::Result<Tx<'_>> {
        self.begin(behavior)
    }

    /// As [`Conn::transaction_with_behavior`] on a shared reference: the caller must not start another
    /// transaction while this one lives (the import workers and the migrations do one at a time).
    pub fn begin(&self, behavior: TransactionBehavior) -> rusqlite::Result<Tx<'_>> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(match behavior {
                TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
                TransactionBehavior::Exclusive => "BEGIN EXCLUSIVE",
                _ => "BEGIN DEFERRED",
            })?,
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.begin(match behavior {
                TransactionBehavior::Deferred => pg::WriteLock::None,
                _ => pg::WriteLock::Exclusive,
            })?,
        }
        Ok(Tx { conn: self, done: false })
    }

    /// A write transaction for a release's claims and outcomes, which keep apart by row locks
    /// ([`crate::release`]'s journal): on SQLite `BEGIN IMMEDIATE` like any writer; on PostgreSQL the writers' lock
    /// taken shared, so releases on several gateways claim at once while ingest, purge and audit appends still
    /// exclude them (module docs, *Locking*). Nothing in it may append to the audit chain.
    pub fn begin_claims(&self) -> rusqlite::Result<Tx<'_>> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.begin(pg::WriteLock::Shared)?,
        }
        Ok(Tx { conn: self, done: false })
    }
}

/// A PostgreSQL failure inside a `rusqlite::Error`, so every call site's error handling stays as it is; the
/// store's [`crate::Error`] finds it again to say what went wrong and whether it is an outage.
#[cfg(feature = "postgres")]
pub(crate) fn pg_error(e: postgres::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The PostgreSQL error inside `e`, if it is one.
#[cfg(feature = "postgres")]
pub(crate) fn as_pg(e: &rusqlite::Error) -> Option<&postgres::Error> {
    match e {
        rusqlite::Error::ToSqlConversionFailure(b) => b.downcast_ref::<postgres::Error>(),
        _ => None,
    }
}

/// What went wrong, for a person: PostgreSQL's message, detail and hint, or how the connection failed.
pub(crate) fn describe_error(e: &rusqlite::Error) -> String {
    #[cfg(feature = "postgres")]
    if let Some(pe) = as_pg(e) {
        return pg::describe(pe);
    }
    e.to_string()
}

/// True when `e` says the server could not be reached or the connection broke.
pub(crate) fn is_outage(e: &rusqlite::Error) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(pe) = as_pg(e) {
        return pg::is_outage(pe);
    }
    let _ = e;
    false
}

/// Where the shared database is, when `e` came from it (the first connection of the process names it).
pub(crate) fn shared_target(e: &rusqlite::Error) -> Option<String> {
    #[cfg(feature = "postgres")]
    if as_pg(e).is_some() {
        return Some(pg::TARGET.get().cloned().unwrap_or_else(|| "(PostgreSQL)".into()));
    }
    let _ = e;
    None
}
