//! Search support: the text index behind `--subject` and `--header-from`, streaming selection for large results,
//! a page of results with its count, and the query plan of a selection (so tests can assert that the common
//! selections are index seeks).
//!
//! The SQL for one text term is built in [`crate::text`]; this module decides how each term is applied.
//!
//! # Performance
//! A text term is applied in one of three ways:
//! - *lookup*: its matches are read from the index first (`m.id IN (...)`), ~1 ms for a rare word at a million
//!   messages where the scan took ~770 ms, then ~5-10 µs per match to fetch the rows;
//! - *row check*: when `--id`, `--rcpt`, `--from` or `--message-id` already pick the candidates, each is checked
//!   (`instr` for ASCII text, ~1 µs; an FTS query restricted to the row's docid otherwise, ~120 µs);
//! - *walk*: when only the first k matches are wanted (a table, `--limit`) and the term is so common that looking
//!   up all its matches costs more than walking messages newest first and checking each until k are found.
//!
//! The choice between lookup and walk is made per term from its match count in the index; see [`WALK_COST`].

use rusqlite::types::Value;

use crate::error::Result;
use crate::message::{
    message_from_row, names_from_row, recipient_at, MessageRecord, COUNT_AT, DETAIL_BATCH, RCPT_AT, ROWID_AT,
};
use crate::select::{rcpt_live_form, rcpt_lookup_form, rcpt_walk_form, search_query, Selector, Sql};
use crate::store::Store;
#[cfg(test)]
use crate::text::fts_phrase;
use crate::text::{fts_row_form, instr_form, lookup_form, parse_phrase};

/// Cost model for a text term when only the first `k` matches are wanted, in units of one lookup of a match
/// (~7 µs at a million messages). A term in n of N messages is looked up unless walking (about k N / n rows, at
/// WALK_COST units each) is cheaper than fetching its n matches, i.e. unless n² > WALK_COST k N. Walking costs ~1
/// unit per row with an ASCII term (`instr`) and ~17 with another (a per-row FTS query): at a million messages and
/// k = 50, ASCII terms in more than ~7,000 messages are walked, others in more than ~30,000.
const WALK_COST_ASCII: u64 = 1;
const WALK_COST: u64 = 17;

/// The page cache (KiB) of a connection that reads many messages (see [`Store::read_cache`]).
const READ_CACHE_KIB: u64 = 16 * 1024;

/// The clause of a selection with no selector: every live message (see [`Store::live_count`]).
pub(crate) const LIVE: &str = "m.purged_us IS NULL";

/// The lookups of a selection that may be walked instead: for each text term and each recipient, its parameter
/// index and match count (counted no further than needed); and the message count.
struct Lookups {
    terms: Vec<(usize, u64)>,
    rcpts: Vec<(usize, u64)>,
    total: u64,
}

/// The first matches of a selection and how many there are.
#[derive(Debug)]
pub struct Page {
    /// At most `limit` messages, newest first, with recipients and attachments.
    pub records: Vec<MessageRecord>,
    /// How many match in all; a lower bound when `exact` is false.
    pub total: u64,
    pub exact: bool,
}

impl Store {
    /// Calls `each` for every message matching `sel`, newest first, at most `limit`, with recipients and
    /// attachments filled in, without holding the whole result in memory. Returns how many were visited.
    pub fn select_each(
        &self,
        sel: &Selector,
        limit: Option<u64>,
        each: &mut dyn FnMut(MessageRecord) -> Result<()>,
    ) -> Result<u64> {
        let mut sql = self.by_rcpt(sel)?;
        if let Some(k) = limit {
            let lookups = self.lookups(&sql, k)?;
            sql = tuned(sql, &lookups, k);
        }
        self.each_row(&sql, limit, each)
    }

    fn each_row(
        &self,
        sql: &Sql,
        limit: Option<u64>,
        each: &mut dyn FnMut(MessageRecord) -> Result<()>,
    ) -> Result<u64> {
        let e = self.sql_err();
        self.read_cache()?;
        // Driven by a recipient, rows come in received_us order only (index order breaks ties by id); each run of
        // equal times is sorted by rowid here, so the query has no LIMIT and stops once the k-th row's run ends.
        let ties = sql.by_rcpt;
        let q = search_query(sql, if ties { None } else { limit }, !ties);
        let mut stmt = self.conn.prepare(&q).map_err(&e)?;
        let mut rows = stmt.query(crate::db::params_from_iter(sql.params.iter())).map_err(&e)?;
        // Rows are read a batch at a time so that their recipients take one query per batch (see
        // `Store::fill_details_many`); `each` still sees one record at a time, newest first.
        let batch = limit.map_or(DETAIL_BATCH, |k| k.clamp(1, DETAIL_BATCH as u64) as usize);
        let want = limit.unwrap_or(u64::MAX);
        // (record, rowid, whether its recipients are known): a message found through its only recipient has that
        // recipient's columns in the row, and needs no lookup (migration 0006's recipient_count).
        let mut page: Vec<(MessageRecord, i64, bool)> = Vec::with_capacity(batch);
        let mut n = 0;
        loop {
            let mut next = match rows.next().map_err(&e)? {
                Some(row) => {
                    let mut rec = message_from_row(&row).map_err(&e)?;
                    rec.attachments = names_from_row(&row).map_err(&e)?;
                    let rowid: i64 = row.get(ROWID_AT).map_err(&e)?;
                    let only = sql.by_rcpt && row.get::<_, Option<i64>>(COUNT_AT).map_err(&e)? == Some(1);
                    if only {
                        rec.recipients = vec![recipient_at(&row, RCPT_AT + 1).map_err(&e)?];
                        if rec.purged_at.is_none() {
                            rec.state = crate::message::summarise_states(&rec.recipients);
                        }
                    }
                    Some((rec, rowid, only))
                }
                None => None,
            };
            if ties && n + page.len() as u64 >= want {
                // Enough rows, unless this one ties with the last of them.
                let last = page.last().map(|(r, _, _)| r.received_us);
                if next.as_ref().is_none_or(|(r, _, _)| Some(r.received_us) != last) {
                    next = None;
                }
            }
            let end = next.is_none();
            if let Some(row) = next {
                page.push(row);
            }
            // What can go out: everything at the end, else all but the last run of equal times (it may go on).
            let ready = match (end, ties) {
                (true, _) | (false, false) => page.len(),
                (false, true) => {
                    let last = page.last().map(|(r, _, _)| r.received_us);
                    page.iter().position(|(r, _, _)| Some(r.received_us) == last).unwrap_or(0)
                }
            };
            if (page.len() >= batch && ready > 0) || (end && !page.is_empty()) {
                let mut out: Vec<(MessageRecord, i64, bool)> = page.drain(..ready).collect();
                if ties {
                    out.sort_by(|(a, ra, _), (b, rb, _)| b.received_us.cmp(&a.received_us).then(rb.cmp(ra)));
                }
                out.truncate(want.saturating_sub(n).min(usize::MAX as u64) as usize);
                let known: Vec<bool> = out.iter().map(|(_, _, k)| *k).collect();
                let mut recs: Vec<MessageRecord> = out.into_iter().map(|(r, _, _)| r).collect();
                self.fill_recipients_many(&mut recs, &known)?;
                for rec in recs {
                    each(rec)?;
                    n += 1;
                }
            }
            if end {
                return Ok(n);
            }
        }
    }

    /// How many messages match `sel`, and whether that is exact: when a text term is so common that counting
    /// all its matches costs more than walking (see [`WALK_COST`]), counting stops past `cap` and returns
    /// `(cap, false)` for "more than `cap`", which stays cheap even when half the store matches. So does a
    /// recipient with that many messages. Other selections the indexes answer are always counted exactly.
    pub fn count_matches(&self, sel: &Selector, cap: u64) -> Result<(u64, bool)> {
        let sql = self.by_rcpt(sel)?;
        let lookups = self.lookups(&sql, cap)?;
        self.count_tuned(sql, &lookups, cap)
    }

    fn count_tuned(&self, sql: Sql, lookups: &Lookups, cap: u64) -> Result<(u64, bool)> {
        let plain = sql.clause.clone();
        let sql = tuned(sql, lookups, cap);
        let exact = sql.clause == plain;
        let q = count_query(&sql, (!exact).then_some(cap));
        let e = self.sql_err();
        let n = if sql.clause == LIVE {
            self.live_count()?
        } else {
            let n: i64 =
                self.conn.query_row(&q, crate::db::params_from_iter(sql.params.iter()), |r| r.get(0)).map_err(&e)?;
            n as u64
        };
        Ok(if exact || n <= cap { (n, true) } else { (cap, false) })
    }

    /// `sel`'s SQL, driven by its one recipient when it has one (see [`by_rcpt`]).
    fn by_rcpt(&self, sel: &Selector) -> Result<Sql> {
        let sql = sel.to_sql();
        if sel.rcpts.len() != 1 {
            return Ok(sql);
        }
        Ok(by_rcpt(sel, sql, self.rowids_fresh()?))
    }

    /// Whether the recipients' copies of their message's rowid are right (see [`refresh_message_rowids`]): the
    /// schema cookie is the one they were made right under. PostgreSQL reaches messages by id.
    fn rowids_fresh(&self) -> Result<bool> {
        if self.conn.is_postgres() {
            return Ok(false);
        }
        let fresh: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM settings WHERE key = 'message_rowids_at'
                     AND value = (SELECT CAST(schema_version AS TEXT) FROM pragma_schema_version))",
            )
            .map_err(self.sql_err())?
            .query_row([], |r| r.get(0))
            .map_err(self.sql_err())?;
        Ok(fresh)
    }

    /// Gives this connection a page cache of [`READ_CACHE_KIB`] for reading many messages.
    ///
    /// # Performance
    /// With SQLite's default 2 MiB, a large result's sort spilled to a temporary file and the interior pages of
    /// the indexes its details are read from did not stay cached: at a million messages, the busiest recipient's
    /// 16,000 messages took ~73,000 page reads. The cache grows only as pages are read. A memory map of the index
    /// (`PRAGMA mmap_size`) instead of `pread` was tried in issue 13's fourth round: it removed the 36,000 preads
    /// of that search but cost ~30% more CPU in page faults, so it is not used.
    pub(crate) fn read_cache(&self) -> Result<()> {
        self.conn.execute_batch(&format!("PRAGMA cache_size = -{READ_CACHE_KIB}")).map_err(self.sql_err())
    }

    /// How many messages are live (not purged): the counter migration 0005 keeps by triggers, one row read
    /// where counting the live index takes ~25 ms at a million messages.
    pub fn live_count(&self) -> Result<u64> {
        let e = self.sql_err();
        let n: i64 = self
            .conn
            .prepare_cached("SELECT live FROM message_count")
            .map_err(&e)?
            .query_row([], |r| r.get(0))
            .map_err(&e)?;
        Ok(n.max(0) as u64)
    }

    /// The first `limit` matches of `sel`, newest first, and how many match in all: exact up to `count_cap`, and
    /// for every live message (a maintained counter); past `count_cap` the count stops and says so (`exact` is
    /// false). See [`Store::count_matches`] for a count that stays exact where the indexes answer it.
    pub fn search_page(&self, sel: &Selector, limit: u64, count_cap: u64) -> Result<Page> {
        let sql = self.by_rcpt(sel)?;
        let count_cap = count_cap.max(limit + 1);
        let lookups = self.lookups(&sql, limit)?;
        let mut records = Vec::new();
        self.each_row(&tuned(sql.clone(), &lookups, limit), Some(limit), &mut |r| {
            records.push(r);
            Ok(())
        })?;
        let (total, exact) = if (records.len() as u64) < limit {
            (records.len() as u64, true)
        } else if sql.clause == LIVE {
            (self.live_count()?, true)
        } else {
            let oldest = records.last().map_or(i64::MIN, |r| r.received_us);
            let lookups = self.count_lookups(&sql, lookups, limit, count_cap, oldest)?;
            self.count_capped(tuned(sql, &lookups, count_cap), count_cap)?
        };
        Ok(Page { records, total, exact })
    }

    /// The page's `lookups` (counted for its `limit`) made fit to plan a count up to `cap`: a term or recipient
    /// whose count stopped at the page's walk bound is only known to be common, and counting it up to the count's
    /// (higher) bound is what the page was spared. Its frequency is estimated first from the page itself, `limit`
    /// matches among the live messages received since `oldest` (the last one shown), scaled to the store: a
    /// selection's matches are a subset of each of its terms', so the estimate never overstates a term by much
    /// unless its matches cluster in recent mail. Only a term the estimate does not show to be walked is counted
    /// further. A wrong estimate costs time, never a wrong count: both plans count the same rows.
    ///
    /// # Performance
    /// A word in half of a million messages: counting its trigram matches up to the count's bound (~32,000) was
    /// 87% of a 50-row table's 18.7 ms; the window's count reads ~100 entries of `messages_live_received`.
    fn count_lookups(&self, sql: &Sql, mut lookups: Lookups, limit: u64, cap: u64, oldest: i64) -> Result<Lookups> {
        let e = self.sql_err();
        let cost_of = |i: usize| match &sql.params[i - 1] {
            Value::Text(p) if parse_phrase(p).is_some_and(|(_, t)| t.is_ascii()) => WALK_COST_ASCII,
            _ => WALK_COST,
        };
        let capped = |n: u64, cost: u64| n >= walk_bound(cost, limit, lookups.total) as u64;
        let any_capped = lookups.terms.iter().any(|&(i, n)| capped(n, cost_of(i)))
            || lookups.rcpts.iter().any(|&(_, n)| capped(n, WALK_COST_ASCII));
        if !any_capped {
            return Ok(lookups);
        }
        let window: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM messages WHERE purged_us IS NULL AND received_us >= ?1")
            .map_err(&e)?
            .query_row([oldest], |r| r.get(0))
            .map_err(&e)?;
        let window = (window.max(0) as u64).max(limit);
        let estimate = (limit as u128 * lookups.total as u128 / window as u128).min(u64::MAX as u128) as u64;
        let total = lookups.total;
        let settle = |i: usize, n: u64, cost: u64, rcpt: bool| -> Result<u64> {
            if !capped(n, cost) {
                return Ok(n);
            }
            let bound = walk_bound(cost, cap, total);
            if estimate >= bound as u64 {
                return Ok(estimate);
            }
            self.capped_match_count(rcpt, &sql.params[i - 1], bound)
        };
        for t in lookups.terms.iter_mut() {
            t.1 = settle(t.0, t.1, cost_of(t.0), false)?;
        }
        for r in lookups.rcpts.iter_mut() {
            r.1 = settle(r.0, r.1, WALK_COST_ASCII, true)?;
        }
        Ok(lookups)
    }

    /// How many messages `sql` matches, counting no further than `cap`: `(cap, false)` for "more than `cap`".
    ///
    /// # Performance
    /// An exact count reads every match, and for most selections its row too (`purged_us` is not in the
    /// verdict or sender indexes): ~300 ms at a million messages for the busiest recipient or the most common
    /// verdict, where the page itself took a few milliseconds. The table needs "more than 1000", not the number.
    fn count_capped(&self, sql: Sql, cap: u64) -> Result<(u64, bool)> {
        let e = self.sql_err();
        let q = count_query(&sql, Some(cap));
        let n: i64 =
            self.conn.query_row(&q, crate::db::params_from_iter(sql.params.iter()), |r| r.get(0)).map_err(&e)?;
        let n = n as u64;
        Ok(if n <= cap { (n, true) } else { (cap, false) })
    }

    /// Match counts of the text lookups in `sql`, as far as [`tuned`] needs them for wanting at most `k_max`
    /// matches: a term is walked when n² > cost · k · N, so counting stops at the first n past that bound for
    /// `k_max` (it decides the same for every k ≤ k_max). Counting every match of a word in half of a million
    /// messages took ~150 ms; stopping at the bound (~7,000 to ~130,000 matches) is a few milliseconds.
    fn lookups(&self, sql: &Sql, k_max: u64) -> Result<Lookups> {
        let e = self.sql_err();
        let has = |form: fn(usize) -> String| (1..=sql.params.len()).any(|i| sql.clause.contains(&form(i)));
        if !has(lookup_form) && !has(rcpt_lookup_form) {
            return Ok(Lookups { terms: Vec::new(), rcpts: Vec::new(), total: 0 });
        }
        // One docid per message, in insertion order: the largest is the message count (give or take what was
        // deleted) in one index step.
        let t: Option<i64> =
            self.conn.query_row("SELECT max(docid) FROM message_text_docs", [], |r| r.get(0)).map_err(&e)?;
        let total = t.unwrap_or(0).max(0) as u64;
        // A recipient walk costs one index probe per message walked, about what an ASCII term's `instr` costs.
        let mut rcpts = Vec::new();
        for i in 1..=sql.params.len() {
            if !sql.clause.contains(&rcpt_lookup_form(i)) {
                continue;
            }
            let n = self.capped_match_count(true, &sql.params[i - 1], walk_bound(WALK_COST_ASCII, k_max, total))?;
            rcpts.push((i, n));
        }
        let mut terms = Vec::new();
        for i in 1..=sql.params.len() {
            if !sql.clause.contains(&lookup_form(i)) {
                continue;
            }
            let cost = match &sql.params[i - 1] {
                Value::Text(p) if parse_phrase(p).is_some_and(|(_, t)| t.is_ascii()) => WALK_COST_ASCII,
                _ => WALK_COST,
            };
            let n = self.capped_match_count(false, &sql.params[i - 1], walk_bound(cost, k_max, total))?;
            terms.push((i, n));
        }
        Ok(Lookups { terms, rcpts, total })
    }

    /// How many index entries a recipient address (`rcpt`) or a text phrase has, counting no further than `limit`.
    fn capped_match_count(&self, rcpt: bool, param: &Value, limit: i64) -> Result<u64> {
        let q = if rcpt {
            "SELECT count(*) FROM (SELECT 1 FROM recipients WHERE address_lc = ?1 LIMIT ?2) AS capped"
        } else {
            "SELECT count(*) FROM (SELECT 1 FROM message_text WHERE message_text MATCH ?1 LIMIT ?2) AS capped"
        };
        let e = self.sql_err();
        let n: i64 = self
            .conn
            .prepare_cached(q)
            .map_err(&e)?
            .query_row(rusqlite::params![param, limit], |r| r.get(0))
            .map_err(&e)?;
        Ok(n.max(0) as u64)
    }

    /// `sel.to_sql()` tuned for wanting only the first `want` matches, if given.
    #[cfg(test)]
    pub(crate) fn tuned_sql(&self, sel: &Selector, want: Option<u64>) -> Result<Sql> {
        let sql = self.by_rcpt(sel)?;
        match want {
            None => Ok(sql),
            Some(k) => {
                let lookups = self.lookups(&sql, k)?;
                Ok(tuned(sql, &lookups, k))
            }
        }
    }

    /// The engine's plan for the query `search` runs for `sel` (all matches), one line per step: SQLite's
    /// `EXPLAIN QUERY PLAN` (`SEARCH r USING INDEX recipients_live (address_lc=?)`), or PostgreSQL's
    /// `EXPLAIN (COSTS OFF)` (`Bitmap Index Scan on message_text_subject`).
    pub fn query_plan(&self, sel: &Selector) -> Result<Vec<String>> {
        let sql = self.by_rcpt(sel)?;
        let e = self.sql_err();
        let (explain, col) =
            if self.conn.is_postgres() { ("EXPLAIN (COSTS OFF)", 0) } else { ("EXPLAIN QUERY PLAN", 3) };
        let mut stmt = self.conn.prepare(&format!("{explain} {}", search_query(&sql, None, false))).map_err(&e)?;
        let lines = stmt
            .query_map(crate::db::params_from_iter(sql.params.iter()), |r| r.get::<_, String>(col))
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        Ok(lines)
    }
}

/// `sql` (for `sel`) driven by its one recipient when it has one and wants only live messages: the address's
/// entries of the `recipients_live` index (migration 0006) come newest first, so a query reads only the rows it
/// returns and stops at its LIMIT, a full result needs no sort (ties in `received_us` aside), and a count of that
/// recipient alone never reads a message row (see [`count_query`]).
///
/// # Performance
/// At a million messages the busiest address has 16,432: through `m.id IN (...)` each was read and all were
/// sorted before the first was printed (a table of 50 walked all mail newest first instead, ~3,000 probes, and
/// its capped count still read ~1,050 rows for `purged_us`).
fn by_rcpt(sel: &Selector, mut sql: Sql, by_rowid: bool) -> Sql {
    if sel.rcpts.len() != 1 || !sel.states.is_empty() {
        return sql;
    }
    for i in 1..=sql.params.len() {
        let part = format!("({})", rcpt_lookup_form(i));
        if sql.clause.contains(&part) {
            sql.clause = sql.clause.replacen(&part, &rcpt_live_form(i), 1);
            sql.by_rcpt = true;
            sql.by_rowid = by_rowid;
            break;
        }
    }
    sql
}

/// Makes every recipient's copy of its message's rowid right (migration 0007) and records the schema cookie they
/// are right under. Run by the migration runner after every upgrade and by [`Store::vacuum`]: both change the
/// cookie, and a VACUUM may renumber the rowids. Skipped in an index `quarantine migrate` left behind as a marker
/// (its triggers refuse writes to these rows, and nothing searches it).
///
/// # Performance
/// One pass over `recipients` with an id lookup per row, writing only the rows that changed: ~15 s at a million
/// messages the first time (with the index rebuild of 0007), a read-only pass after later upgrades.
pub(crate) fn refresh_message_rowids(conn: &crate::db::Conn) -> rusqlite::Result<()> {
    conn.execute_batch(
        "UPDATE recipients SET message_rowid = (SELECT m.rowid FROM messages m WHERE m.id = recipients.message)
         WHERE message_rowid IS NOT (SELECT m.rowid FROM messages m WHERE m.id = recipients.message)
             AND NOT EXISTS (SELECT 1 FROM settings WHERE key = 'shared_index');
         INSERT INTO settings (key, value)
             SELECT 'message_rowids_at', CAST(schema_version AS TEXT) FROM pragma_schema_version
             WHERE NOT EXISTS (SELECT 1 FROM settings WHERE key = 'shared_index')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
    )
}

/// `SELECT count(*)` of `sql`'s matches, at most `cap + 1` of them when given. A selection of one recipient and
/// nothing else counts index entries only: `live` stands for the message's `purged_us IS NULL`.
fn count_query(sql: &Sql, cap: Option<u64>) -> String {
    let alone = sql.clause.strip_suffix(&format!(" AND {LIVE}")).filter(|c| sql.by_rcpt && !c.contains("m."));
    let (from, clause) = match alone {
        Some(c) => ("recipients r", c),
        None => (sql.from(), sql.clause.as_str()),
    };
    match cap {
        None => format!("SELECT count(*) FROM {from} WHERE {clause}"),
        Some(cap) => format!("SELECT count(*) FROM (SELECT 1 FROM {from} WHERE {clause} LIMIT {}) AS capped", cap + 1),
    }
}

/// The smallest match count n with n² > cost · k · total (a term with that many matches is walked), as an SQL
/// LIMIT.
fn walk_bound(cost: u64, k: u64, total: u64) -> i64 {
    let product = cost as u128 * k as u128 * total as u128;
    let mut n = (product as f64).sqrt() as u128;
    while n * n > product {
        n -= 1;
    }
    while n * n <= product {
        n += 1;
    }
    n.min(i64::MAX as u128) as i64
}

/// `sql` with each text lookup turned into a walk (a per-row check, so the query can run newest first and stop)
/// when only the first `k` matches are wanted and walking is cheaper (see [`WALK_COST`]).
fn tuned(mut sql: Sql, lookups: &Lookups, k: u64) -> Sql {
    for &(i, n) in &lookups.terms {
        let Value::Text(phrase) = &sql.params[i - 1] else { continue };
        let Some((column, text)) = parse_phrase(phrase) else { continue };
        let ascii = text.is_ascii();
        let cost = if ascii { WALK_COST_ASCII } else { WALK_COST };
        if (n as u128).pow(2) <= cost as u128 * k as u128 * lookups.total as u128 {
            continue;
        }
        let walk = if ascii {
            let column = column.to_string();
            sql.params.push(Value::Text(text.to_lowercase()));
            instr_form(&column, sql.params.len())
        } else {
            fts_row_form(i)
        };
        sql.clause = sql.clause.replace(&lookup_form(i), &walk);
    }
    // A busy address (the helpdesk's "show me alice's last 50" on the address a flood hit): looking up all of its
    // 16,000 messages at a million and sorting them took ~280 ms for a table of 50; walking newest first until 50
    // are found probes a few thousand index entries.
    for &(i, n) in &lookups.rcpts {
        if (n as u128).pow(2) > WALK_COST_ASCII as u128 * k as u128 * lookups.total as u128 {
            sql.clause = sql.clause.replace(&rcpt_lookup_form(i), &rcpt_walk_form(i));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RecipientState;
    use crate::HoldRequest;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(&dir.path().join("q")).unwrap();
        (dir, store)
    }

    fn hold(store: &mut Store, rcpt: &str, from: &str, verdict: &str, msg: &str) -> String {
        let req = HoldRequest {
            from: from.into(),
            recipients: vec![rcpt.into()],
            verdict: verdict.into(),
            ..Default::default()
        };
        store.hold(&req, &mut msg.as_bytes()).unwrap().id
    }

    fn ids(store: &Store, sel: &Selector) -> Vec<String> {
        let mut v: Vec<String> = store.select(sel, None).unwrap().into_iter().map(|r| r.id).collect();
        v.sort();
        v
    }

    /// The count that decides walk or lookup stops at the first n with n² > cost · k · N: it decides the same.
    #[test]
    fn walk_bound_is_the_first_count_that_walks() {
        assert_eq!(walk_bound(1, 50, 1_000_000), 7_072);
        assert_eq!(walk_bound(17, 1_050, 1_000_000), 133_604);
        assert_eq!(walk_bound(1, 1, 0), 1);
        for (cost, k, total) in [(1, 5, 200), (17, 5, 200), (1, 1051, 200), (1, 1, 1)] {
            let b = walk_bound(cost, k, total) as u128;
            let p = cost as u128 * k as u128 * total as u128;
            assert!(b * b > p && (b - 1) * (b - 1) <= p, "{cost} {k} {total}: {b}");
        }
    }

    #[test]
    fn phrase_quotes_are_doubled() {
        assert_eq!(fts_phrase("subject", r#"say "hi""#), r#"subject : "say ""hi""""#);
    }

    #[test]
    fn text_search_matches_substrings_in_any_case() {
        let (_d, mut s) = store();
        let a = hold(&mut s, "a@x", "bank@x", "SPAM", "From: My Bank <bank@x>\nSubject: Your INVOICE 42\n\nhi\n");
        let b = hold(&mut s, "b@x", "c@x", "SPAM", "From: Carl <c@x>\nSubject: =?UTF-8?Q?=C3=89T=C3=89_sale?=\n\nhi\n");
        let c = hold(&mut s, "b@x", "d@x", "SPAM", "Subject: no\n\nhi\n");
        let sub = |t: &str| Selector { subjects: vec![t.into()], ..Default::default() };
        assert_eq!(ids(&s, &sub("invoice")), vec![a.clone()]);
        assert_eq!(ids(&s, &sub("r inv")), vec![a.clone()]);
        assert_eq!(ids(&s, &sub("été")), vec![b.clone()], "Unicode case folding through the trigram index");
        assert_eq!(ids(&s, &sub("no")), vec![c.clone()], "short text falls back to a scan");
        assert!(ids(&s, &sub("\"quoted\"")).is_empty());
        let from = Selector { header_froms: vec!["my bank".into()], ..Default::default() };
        assert_eq!(ids(&s, &from), vec![a.clone()]);
        // The per-row form (with a narrower selector) agrees with the lookup form.
        let narrow = Selector { rcpts: vec!["B@X".into()], subjects: vec!["ÉTÉ".into()], ..Default::default() };
        assert_eq!(ids(&s, &narrow), vec![b.clone()]);
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(ids(&s, &Selector { subjects: vec!["invoice".into(), "sale".into()], ..Default::default() }), both);
    }

    #[test]
    fn text_index_follows_updates_and_deletes() {
        let (_d, mut s) = store();
        let a = hold(&mut s, "a@x", "b@x", "SPAM", "Subject: alpha beta\n\nhi\n");
        let sub = |t: &str| Selector { subjects: vec![t.into()], ..Default::default() };
        s.conn().execute("UPDATE messages SET subject = 'gamma delta' WHERE id = ?1", [&a]).unwrap();
        assert!(ids(&s, &sub("alpha")).is_empty());
        assert_eq!(ids(&s, &sub("gamma")), vec![a.clone()]);
        s.conn().execute("UPDATE messages SET subject = NULL WHERE id = ?1", [&a]).unwrap();
        assert!(ids(&s, &sub("gamma")).is_empty());
        s.conn().execute("DELETE FROM recipients WHERE message = ?1", [&a]).unwrap();
        s.conn().execute("DELETE FROM messages WHERE id = ?1", [&a]).unwrap();
        let n: i64 = s.conn().query_row("SELECT count(*) FROM message_text_docs", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        s.conn().execute("INSERT INTO message_text(message_text) VALUES ('integrity-check')", []).unwrap();
    }

    /// Recipient, sender, Message-ID and verdict+time selections are index seeks, never a scan of `messages`.
    #[test]
    fn common_selections_are_index_seeks() {
        let (_d, mut s) = store();
        hold(&mut s, "a@x", "b@x", "SPAM", "Subject: hello\nMessage-ID: <m1@x>\n\nhi\n");
        let cases: Vec<(Selector, &str)> = vec![
            (Selector { rcpts: vec!["A@x".into()], ..Default::default() }, "recipients_live"),
            (Selector { rcpts: vec!["A@x".into(), "b@x".into()], ..Default::default() }, "recipients_address"),
            (Selector { froms: vec!["B@x".into()], ..Default::default() }, "messages_env_from"),
            (Selector { message_ids: vec!["<m1@x>".into()], ..Default::default() }, "messages_message_id"),
            (
                Selector { verdicts: vec!["PMX:VIRUS".into()], since_us: Some(1), ..Default::default() },
                "messages_verdict_received",
            ),
            (
                Selector {
                    verdicts: vec!["PMX:VIRUS".into()],
                    since_us: Some(1),
                    until_us: Some(2),
                    ..Default::default()
                },
                "messages_verdict_received",
            ),
            (Selector { verdicts: vec!["PMX:*".into()], ..Default::default() }, "messages_verdict_received"),
            (Selector { ids: vec!["abc".into()], ..Default::default() }, "sqlite_autoindex_messages_1"),
            // The text index: an FTS5 query (its plan line says SCAN of the virtual table, with a MATCH index),
            // then messages by id.
            (Selector { subjects: vec!["invoice".into()], ..Default::default() }, "sqlite_autoindex_messages_1"),
        ];
        for (sel, index) in cases {
            let plan = s.query_plan(&sel).unwrap();
            let text = plan.join("\n");
            assert!(!plan.iter().any(|l| l.starts_with("SCAN m")), "{sel:?} scans messages:\n{text}");
            assert!(
                plan.iter().any(|l| l.starts_with("SEARCH") && l.contains(index)),
                "{sel:?} does not seek {index}:\n{text}"
            );
            if !sel.subjects.is_empty() {
                assert!(plan.iter().any(|l| l.contains("VIRTUAL TABLE INDEX 0:M")), "{text}");
            }
        }
    }

    /// The live-message counter (migration 0005) agrees with a count of the table after every kind of write:
    /// hold, a merged retry, a batch ingest, import, purge (and purging again), and the sqlite3 shell's own
    /// updates and deletes, which the triggers see too.
    #[test]
    fn live_counter_follows_every_write() {
        let (dir, mut s) = store();
        let check = |s: &Store, what: &str| {
            let counted: i64 =
                s.conn().query_row("SELECT count(*) FROM messages WHERE purged_us IS NULL", [], |r| r.get(0)).unwrap();
            // Migration 0006's copies of received_us and liveness on each recipient row, which the recipient
            // index that drives `--rcpt` is built on.
            let stale: i64 = s
                .conn()
                .query_row(
                    "SELECT count(*) FROM recipients r JOIN messages m ON m.id = r.message
                     WHERE r.received_us IS NOT m.received_us OR r.live IS NOT (m.purged_us IS NULL)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stale, 0, "recipients' copies of their message after {what}");
            let stale: i64 = s
                .conn()
                .query_row(
                    "SELECT count(*) FROM messages m WHERE m.attachment_names IS NOT (SELECT
                     nullif(json_group_array(name), '[]') FROM (SELECT name FROM attachments a
                     WHERE a.message = m.id ORDER BY a.rowid))",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stale, 0, "messages' attachment names after {what}");
            let stale: i64 = s
                .conn()
                .query_row(
                    "SELECT count(*) FROM messages m
                     WHERE m.recipient_count IS NOT (SELECT count(*) FROM recipients r WHERE r.message = m.id)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(stale, 0, "messages' recipient counts after {what}");
            // What search streams (driven by a recipient, names from the row) is what the tables say.
            for sel in [
                Selector::default(),
                Selector { rcpts: vec!["a@x".into()], ..Default::default() },
                Selector { rcpts: vec!["D@x".into()], ..Default::default() },
                Selector { rcpts: vec!["c@x".into()], ..Default::default() },
            ] {
                let mut streamed = Vec::new();
                s.select_each(&sel, None, &mut |r| {
                    streamed.push(r);
                    Ok(())
                })
                .unwrap();
                assert_eq!(streamed, s.select(&sel, None).unwrap(), "{sel:?} after {what}");
            }
            let counted = counted as u64;
            assert_eq!(s.live_count().unwrap(), counted, "after {what}");
            assert_eq!(s.count(&Selector::default()).unwrap(), counted, "after {what}");
            assert_eq!(s.count_matches(&Selector::default(), 1).unwrap(), (counted, true), "after {what}");
            let page = s.search_page(&Selector::default(), 1, 1000).unwrap();
            assert_eq!((page.total, page.exact), (counted, true), "after {what}");
            counted
        };
        assert_eq!(check(&s, "init"), 0);
        let a = hold(&mut s, "a@x", "b@x", "SPAM", "Subject: one\n\nhi\n");
        hold(&mut s, "a@x", "b@x", "SPAM", &with_attachments("two", &["a.pdf", "b \"zip\".zip", "ü.exe"]));
        assert_eq!(check(&s, "hold"), 2);
        let two = s.select(&Selector { subjects: vec!["two".into()], ..Default::default() }, None).unwrap();
        assert_eq!(two[0].attachments, ["a.pdf", "b \"zip\".zip", "ü.exe"], "in the order written");
        let retry = HoldRequest {
            from: "r@x".into(),
            recipients: vec!["a@x".into()],
            verdict: "SPAM".into(),
            queue_id: Some("QRETRY".into()),
            ..Default::default()
        };
        s.hold(&retry, &mut &b"Subject: retry\n\nhi\n"[..]).unwrap();
        s.hold(&HoldRequest { recipients: vec!["c@x".into()], ..retry }, &mut &b"Subject: retry\n\nhi\n"[..]).unwrap();
        assert_eq!(check(&s, "a retry merged into its message"), 3);
        // What a release writes (release/journal.rs), to one recipient of a message and to one of two.
        for address in ["a@x", "c@x"] {
            s.conn()
                .execute(
                    "UPDATE recipients SET state = 'released', released_us = 5, reply = '250 2.0.0 Ok', attempts = 1
                     WHERE rowid = (SELECT min(rowid) FROM recipients WHERE address_lc = ?1)",
                    [address],
                )
                .unwrap();
        }
        assert_eq!(check(&s, "released recipients"), 3);
        let spool = s.spool();
        for i in 0..3 {
            let req = HoldRequest {
                from: "b@x".into(),
                recipients: vec!["a@x".into()],
                verdict: "SPAM".into(),
                ..Default::default()
            };
            spool.write(&req, &mut format!("Subject: spooled {i}\n\nhi\n").as_bytes()).unwrap();
        }
        s.ingest(&crate::IngestOptions::drain("test".into())).unwrap();
        assert_eq!(check(&s, "ingest"), 6);
        let eml = dir.path().join("eml");
        std::fs::create_dir(&eml).unwrap();
        for i in 0..2 {
            std::fs::write(
                eml.join(format!("{i}.eml")),
                format!("To: d@x\n{}", with_attachments(&format!("imported {i}"), &["i.doc"])),
            )
            .unwrap();
        }
        let mut opts = crate::ImportOptions::new(crate::ImportFormat::Eml, vec![eml], "SPAM");
        opts.from = Some("i@x".into());
        opts.rcpt = vec!["d@x".into()];
        let report = s.import(&opts, &crate::Silent).unwrap();
        assert_eq!(check(&s, "import"), 8, "{report:?}");
        let purge = |s: &mut Store, sel: Selector| {
            let rule = crate::PurgeRule { selector: sel, exclude_verdicts: Vec::new(), label: "test".into() };
            let plan = s.purge_plan(vec![rule]).unwrap();
            s.purge(&plan, "test", Some("test"), &crate::Silent).unwrap();
        };
        purge(&mut s, Selector { ids: vec![a.clone()], ..Default::default() });
        assert_eq!(check(&s, "purge"), 7);
        purge(&mut s, Selector { ids: vec![a.clone()], ..Default::default() });
        assert_eq!(check(&s, "purging a purged message again"), 7);
        s.conn().execute("UPDATE messages SET purged_us = NULL WHERE id = ?1", [&a]).unwrap();
        assert_eq!(check(&s, "an un-purge in the shell"), 8);
        s.conn().execute("UPDATE messages SET purged_us = 1, verdict = 'X' WHERE id = ?1", [&a]).unwrap();
        s.conn().execute("UPDATE messages SET purged_us = 2 WHERE id = ?1", [&a]).unwrap();
        assert_eq!(check(&s, "purged in the shell, twice"), 7);
        s.conn().execute("UPDATE messages SET received_us = received_us + 1", []).unwrap();
        assert_eq!(check(&s, "received times moved in the shell"), 7);
        let other: String = s
            .conn()
            .query_row(
                "SELECT id FROM messages WHERE purged_us IS NULL AND id NOT IN (SELECT message FROM recipients
                 WHERE address_lc IN (SELECT address_lc FROM recipients WHERE message = ?1)) LIMIT 1",
                [&a],
                |r| r.get(0),
            )
            .unwrap();
        s.conn().execute("UPDATE recipients SET message = ?1 WHERE message = ?2", [&a, &other]).unwrap();
        assert_eq!(check(&s, "recipients moved to a purged message in the shell"), 7);
        s.conn().execute("UPDATE recipients SET message = ?1 WHERE message = ?2", [&other, &a]).unwrap();
        assert_eq!(check(&s, "and back"), 7);
        let live: String = s
            .conn()
            .query_row("SELECT id FROM messages WHERE purged_us IS NULL ORDER BY id LIMIT 1", [], |r| r.get(0))
            .unwrap();
        for id in [&live, &a] {
            s.conn().execute("DELETE FROM recipients WHERE message = ?1", [id]).unwrap();
            s.conn().execute("DELETE FROM attachments WHERE message = ?1", [id]).unwrap();
            s.conn().execute("DELETE FROM messages WHERE id = ?1", [id]).unwrap();
        }
        assert_eq!(check(&s, "a live and a purged row deleted in the shell"), 6);
        let with: String =
            s.conn().query_row("SELECT message FROM attachments ORDER BY rowid LIMIT 1", [], |r| r.get(0)).unwrap();
        s.conn().execute("UPDATE attachments SET name = 'renamed' WHERE message = ?1", [&with]).unwrap();
        check(&s, "attachments renamed in the shell");
        s.conn().execute("UPDATE attachments SET message = ?1 WHERE message <> ?1", [&with]).unwrap();
        check(&s, "attachments moved to another message in the shell");
        s.conn().execute("DELETE FROM attachments WHERE rowid = (SELECT min(rowid) FROM attachments)", []).unwrap();
        check(&s, "an attachment deleted in the shell");
        s.conn().execute("DELETE FROM attachments", []).unwrap();
        check(&s, "every attachment deleted in the shell");
    }

    /// A message with attachments of these file names.
    fn with_attachments(subject: &str, names: &[&str]) -> String {
        let mut m = format!("Subject: {subject}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n");
        m.push_str("--B\nContent-Type: text/plain\n\nhi\n");
        for n in names {
            let quoted = n.replace('\\', "\\\\").replace('"', "\\\"");
            m.push_str(&format!(
                "--B\nContent-Type: application/octet-stream\nContent-Disposition: attachment; \
                 filename=\"{quoted}\"\n\nx\n"
            ));
        }
        m.push_str("--B--\n");
        m
    }

    /// A printed message's recipients and a recipient selection are read from covering indexes (migration
    /// 0005), not from table rows: one page per message fewer for each.
    #[test]
    fn details_and_recipient_selections_are_index_only() {
        let (_d, s) = store();
        let plan = |q: &str| -> String {
            let mut stmt =
                s.conn().as_sqlite().expect("a SQLite store").prepare(&format!("EXPLAIN QUERY PLAN {q}")).unwrap();
            let n = stmt.parameter_count();
            let params: Vec<Option<String>> = vec![None; n];
            stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join("\n")
        };
        let details = plan(&crate::message::recipients_query(crate::message::DETAIL_BATCH));
        assert!(
            details.contains("SEARCH recipients USING COVERING INDEX recipients_by_message (message=?)"),
            "{details}"
        );
        assert!(!details.contains("TEMP B-TREE"), "sorted per message in Rust, not in SQL: {details}");
        let sel = Selector { rcpts: vec!["a@x".into()], ..Default::default() };
        let rcpt = s.query_plan(&sel).unwrap().join("\n");
        assert!(rcpt.starts_with("SEARCH r USING COVERING INDEX recipients_live (address_lc=?)"), "{rcpt}");
        assert!(!rcpt.contains("TEMP B-TREE FOR ORDER BY"), "newest first from the index, ties aside: {rcpt}");
        let two = Selector { rcpts: vec!["a@x".into(), "b@x".into()], ..Default::default() };
        let rcpt = s.query_plan(&two).unwrap().join("\n");
        assert!(rcpt.contains("USING COVERING INDEX recipients_address_message (address_lc=?)"), "{rcpt}");
        // A table's "more than 1000 more match" for one recipient counts index entries, no message row.
        let count = plan(&count_query(&by_rcpt(&sel, sel.to_sql(), true), Some(1000)));
        assert!(count.contains("SEARCH r USING COVERING INDEX recipients_live (address_lc=?)"), "{count}");
        assert!(!count.contains("messages") && !count.contains(" m "), "{count}");
        let with_verdict = Selector { verdicts: vec!["SPAM".into()], ..sel.clone() };
        let count = plan(&count_query(&by_rcpt(&with_verdict, with_verdict.to_sql(), true), Some(1000)));
        assert!(count.contains("SEARCH m USING INTEGER PRIMARY KEY (rowid=?)"), "the verdict is checked: {count}");
        assert!(rcpt_plan(&s).contains("SEARCH m USING INTEGER PRIMARY KEY (rowid=?)"), "through the rowid copy");
    }

    /// What `search` prints for `sel`, newest first: every record whole (its only recipient is `a@x`).
    fn streamed(s: &Store, sel: &Selector) -> Vec<String> {
        let mut each = Vec::new();
        s.select_each(sel, None, &mut |r| {
            assert_eq!(r.recipients.iter().map(|x| x.address.as_str()).collect::<Vec<_>>(), ["a@x"]);
            each.push(r.id);
            Ok(())
        })
        .unwrap();
        each
    }

    fn rcpt_plan(s: &Store) -> String {
        s.query_plan(&Selector { rcpts: vec!["a@x".into()], ..Default::default() }).unwrap().join("\n")
    }

    /// The recipients' copies of their message's rowid (migration 0007) are used only while the schema cookie is
    /// the one they were made right under; a VACUUM through the store makes them right again. Copies gone wrong
    /// behind the store's back can hide a message, never show another one in its place.
    #[test]
    fn message_rowid_copies_are_trusted_only_while_right() {
        let (_d, mut s) = store();
        let mut held: Vec<String> =
            (0..5).map(|i| hold(&mut s, "a@x", "b@x", "SPAM", &format!("Subject: m{i}\n\nx\n"))).collect();
        held.reverse();
        let by_a = Selector { rcpts: vec!["a@x".into()], ..Default::default() };
        assert_eq!(streamed(&s, &by_a), held);
        assert!(rcpt_plan(&s).contains("INTEGER PRIMARY KEY (rowid=?)"), "{}", rcpt_plan(&s));

        // Wrong copies, then a schema change (as a VACUUM in the sqlite3 shell makes): joined by id again.
        let sqlite = s.conn().as_sqlite().expect("a SQLite store");
        sqlite.execute_batch("UPDATE recipients SET message_rowid = message_rowid % 5 + 1").unwrap();
        let shown: Vec<String> = streamed(&s, &by_a);
        assert!(
            shown.iter().all(|id| held.contains(id)) && shown.len() < held.len(),
            "hidden, never swapped: {shown:?}"
        );
        s.conn().as_sqlite().unwrap().execute_batch("CREATE TABLE bump (x); DROP TABLE bump;").unwrap();
        assert!(rcpt_plan(&s).contains("sqlite_autoindex_messages_1"), "{}", rcpt_plan(&s));
        assert_eq!(streamed(&s, &by_a), held);

        s.vacuum().unwrap();
        assert!(rcpt_plan(&s).contains("INTEGER PRIMARY KEY (rowid=?)"), "{}", rcpt_plan(&s));
        let wrong: i64 = s
            .conn()
            .as_sqlite()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM recipients r WHERE message_rowid IS NOT (SELECT rowid FROM messages WHERE id = r.message)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wrong, 0);
        assert_eq!(streamed(&s, &by_a), held);
    }

    /// A term in most messages is walked (per-row check, newest first) when only a few matches are wanted, and
    /// looked up otherwise; both give the same messages in the same order, and the count says when it stopped.
    #[test]
    fn common_terms_are_walked_with_the_same_results() {
        let (_d, mut s) = store();
        let mut held = Vec::new();
        for i in 0..200 {
            let subject = if i % 10 == 0 { format!("rare {i}") } else { format!("common Café words {i}") };
            held.push(hold(&mut s, "a@x", "b@x", "SPAM", &format!("Subject: {subject}\n\nbody {i}\n")));
        }
        let sel = Selector { subjects: vec!["common".into()], ..Default::default() };
        let looked_up = s.tuned_sql(&sel, None).unwrap();
        let walked = s.tuned_sql(&sel, Some(5)).unwrap();
        assert!(looked_up.clause.contains("m.id IN (SELECT d.id FROM message_text"), "{}", looked_up.clause);
        assert!(walked.clause.contains("instr(lower(m.subject)"), "180 of 200, 5 wanted: walk ({})", walked.clause);
        let cafe = Selector { subjects: vec!["CAFÉ".into()], ..Default::default() };
        let walked_fts = s.tuned_sql(&cafe, Some(1)).unwrap();
        assert!(walked_fts.clause.contains("EXISTS ("), "not ASCII: walk with FTS row checks ({})", walked_fts.clause);
        let rare = Selector { subjects: vec!["rare".into()], ..Default::default() };
        assert!(!s.tuned_sql(&rare, Some(5)).unwrap().clause.contains("EXISTS ("), "20 of 200: look up");

        let all: Vec<String> = s.select(&sel, None).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(all.len(), 180);
        let mut first = Vec::new();
        s.select_each(&sel, Some(5), &mut |r| {
            first.push(r.id);
            Ok(())
        })
        .unwrap();
        assert_eq!(first, all[..5]);
        let cafe_all: Vec<String> = s.select(&cafe, None).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(cafe_all, all);
        let mut cafe_first = Vec::new();
        s.select_each(&cafe, Some(1), &mut |r| {
            cafe_first.push(r.id);
            Ok(())
        })
        .unwrap();
        assert_eq!(cafe_first, all[..1]);
        let page = s.search_page(&sel, 5, 6).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), all[..5]);
        assert_eq!((page.total, page.exact), (6, false));
        let page = s.search_page(&rare, 5, 1000).unwrap();
        assert_eq!((page.records.len(), page.total, page.exact), (5, 20, true));
        let page = s.search_page(&rare, 50, 1000).unwrap();
        assert_eq!((page.records.len(), page.total, page.exact), (20, 20, true));
        assert_eq!(s.count_matches(&sel, 6).unwrap(), (6, false), "walked, stopped at the cap");
        assert_eq!(s.count_matches(&sel, 1000).unwrap(), (180, true), "a cap this high: looked up");
        assert_eq!(s.count_matches(&rare, 6).unwrap(), (20, true), "looked up: exact");
        let by_verdict = Selector { verdicts: vec!["SPAM".into()], ..Default::default() };
        assert_eq!(s.count_matches(&by_verdict, 6).unwrap(), (200, true), "index selections are exact");
        // A table's page counts no further than it needs, whatever the selection; all live messages exactly.
        let page = s.search_page(&by_verdict, 5, 6).unwrap();
        assert_eq!(page.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), all_spam(&s)[..5]);
        assert_eq!((page.total, page.exact), (6, false));
        assert_eq!(s.search_page(&by_verdict, 5, 200).unwrap().total, 200);
        assert!(s.search_page(&by_verdict, 5, 200).unwrap().exact, "200 is not more than 200");
        let page = s.search_page(&Selector::default(), 5, 6).unwrap();
        assert_eq!((page.total, page.exact), (200, true), "every live message: the counter");
    }

    /// A table's count is planned from the page (see `Store::count_lookups`): a word only in recent mail, one
    /// spread thinly, and one everywhere are each counted right, exact or capped, whichever plan the estimate picks.
    #[test]
    fn page_counts_are_right_whichever_way_the_estimate_goes() {
        let (_d, mut s) = store();
        for i in 0..300 {
            let burst = if i >= 200 { " burst" } else { "" };
            let thin = if i % 5 == 0 { " thin" } else { "" };
            hold(&mut s, "a@x", "b@x", "SPAM", &format!("Subject: words{burst}{thin} {i}\n\nbody {i}\n"));
        }
        let sel = |w: &str| Selector { subjects: vec![w.into()], ..Default::default() };
        let counted = |w: &str, limit: u64, cap: u64| {
            let p = s.search_page(&sel(w), limit, cap).unwrap();
            (p.records.len(), p.total, p.exact)
        };
        assert_eq!(counted("burst", 5, 50), (5, 50, false), "estimated common: walked, capped");
        assert_eq!(counted("burst", 5, 200), (5, 100, true));
        assert_eq!(counted("thin", 5, 100), (5, 60, true), "estimated thin: counted further, looked up");
        assert_eq!(counted("thin", 5, 30), (5, 30, false));
        assert_eq!(counted("words", 5, 50), (5, 50, false));
        assert_eq!(counted("words", 5, 400), (5, 300, true));
        assert_eq!(counted("words", 300, 400), (300, 300, true));
    }

    /// One recipient is read newest first from its live index entries (migration 0006), whatever the number of
    /// its messages. With two (OR), one with most of the mail is walked (an EXISTS probe per message, newest
    /// first) when only a few are wanted, and looked up otherwise, each decided on its own count. Every form gives
    /// the same messages in the same order, and a capped count says it stopped.
    #[test]
    fn busy_recipients_are_walked_with_the_same_results() {
        let (_d, mut s) = store();
        for i in 0..200 {
            let rcpt = if i % 10 == 0 { "rare@x" } else { "busy@x" };
            hold(&mut s, rcpt, "b@x", "SPAM", &format!("Subject: m {i}\n\nbody {i}\n"));
        }
        let busy = Selector { rcpts: vec!["Busy@X".into()], ..Default::default() };
        let rare = Selector { rcpts: vec!["rare@x".into()], ..Default::default() };
        let both = Selector { rcpts: vec!["busy@x".into(), "rare@x".into()], ..Default::default() };
        for (sel, want) in [(&busy, Some(5)), (&busy, None), (&rare, Some(5))] {
            let driven = s.tuned_sql(sel, want).unwrap();
            assert!(driven.by_rcpt && driven.clause.contains("r.live = 1"), "{}", driven.clause);
            assert!(!driven.clause.contains("EXISTS (") && !driven.clause.contains("m.id IN"), "{}", driven.clause);
        }
        let purged_too = Selector { states: vec![RecipientState::Purged], ..busy.clone() };
        assert!(!s.tuned_sql(&purged_too, Some(5)).unwrap().by_rcpt, "the index has live messages only");
        let mixed = s.tuned_sql(&both, Some(5)).unwrap().clause;
        assert_eq!(mixed.matches("EXISTS (").count(), 1, "only the busy one is walked: {mixed}");
        assert!(mixed.contains("m.id IN (SELECT message FROM recipients"), "{mixed}");
        let same_order = |s: &Store, what: &str| {
            for sel in [&busy, &rare, &both] {
                let all: Vec<String> = s.select(sel, None).unwrap().into_iter().map(|r| r.id).collect();
                let page = s.search_page(sel, 5, 6).unwrap();
                assert_eq!(page.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), all[..5], "{what}");
                for want in [Some(5), Some(6), None] {
                    let mut first = Vec::new();
                    s.select_each(sel, want, &mut |r| {
                        first.push(r.id);
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(first, all[..want.map_or(all.len(), |k| k as usize)], "{what} {sel:?} {want:?}");
                }
            }
        };
        same_order(&s, "distinct times");
        // Messages received in the same microsecond come newest row first in every form; the index orders them
        // by id, so the driven query sorts each tie by rowid.
        s.conn().execute("UPDATE messages SET received_us = 1000000 + rowid / 4", []).unwrap();
        same_order(&s, "ties of four");
        assert_eq!(s.select(&busy, None).unwrap().len(), 180);
        assert_eq!(s.select(&both, None).unwrap().len(), 200);
        assert_eq!(s.count_matches(&busy, 6).unwrap(), (180, true), "one recipient: index entries, exact");
        assert_eq!(s.count_matches(&rare, 6).unwrap(), (20, true));
        let page = s.search_page(&busy, 5, 6).unwrap();
        assert_eq!((page.total, page.exact), (6, false), "a table's count stops at its cap");
        assert_eq!(s.count_matches(&both, 6).unwrap(), (6, false), "walked, stopped at the cap");
        assert_eq!(s.count_matches(&both, 1000).unwrap(), (200, true), "a cap this high: looked up, exact");
    }

    fn all_spam(s: &Store) -> Vec<String> {
        let sel = Selector { verdicts: vec!["SPAM".into()], ..Default::default() };
        s.select(&sel, None).unwrap().into_iter().map(|r| r.id).collect()
    }

    /// A store from before migration 0002 gets its messages indexed when it is opened.
    #[test]
    fn migration_indexes_existing_messages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        drop(Store::init(&root).unwrap());
        let path = root.join(crate::store::INDEX_FILE);
        {
            // Rebuild the index at schema version 1 with one message in it.
            std::fs::remove_file(&path).unwrap();
            let mut conn = crate::index::open(&path, true, std::time::Duration::from_secs(1)).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(crate::index::MIGRATIONS[0].1).unwrap();
            tx.execute_batch(&format!(
                "PRAGMA user_version = 1; PRAGMA application_id = {};
                 INSERT INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict, subject, hdr_from)
                 VALUES ('OLD0000001', 'h', 1, 1, '', '', 'SPAM', 'Old Invoice', 'Old Bank <b@x>');",
                crate::index::APPLICATION_ID
            ))
            .unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(&root, std::time::Duration::from_secs(1)).unwrap();
        let v: i64 = s.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, crate::index::MIGRATIONS.len() as i64);
        assert_eq!(s.live_count().unwrap(), 1, "the counter starts from the rows already there");
        assert_eq!(ids(&s, &Selector { subjects: vec!["invoice".into()], ..Default::default() }), vec!["OLD0000001"]);
        assert_eq!(
            ids(&s, &Selector { header_froms: vec!["old bank".into()], ..Default::default() }),
            vec!["OLD0000001"]
        );
    }

    #[test]
    fn select_each_streams_newest_first() {
        let (_d, mut s) = store();
        let a = hold(&mut s, "a@x", "b@x", "SPAM", "Subject: one\n\nhi\n");
        let b = hold(&mut s, "a@x", "b@x", "SPAM", "Subject: two\n\nhi\n");
        let mut seen = Vec::new();
        let n = s
            .select_each(&Selector::default(), None, &mut |r| {
                seen.push((r.id, r.recipients.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, vec![(b, 1), (a, 1)]);
    }
}
