//! Set-based writes for the hot path: the rows of a whole batch go to the
//! database as one JSON array bound to one parameter, read back as rows
//! (SQLite `jsonb_each`, PostgreSQL `jsonb_to_recordset`), so a batch costs
//! one statement per table instead of one per row, and the statement's
//! text never changes with the batch size (prepared once per connection).
//!
//! Rows that lock shared rows (contacts, day counters) are sent sorted, so
//! two PostgreSQL transactions take those locks in the same order and
//! cannot deadlock on them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::AnyConnection;

use super::{Dialect, StoreError};

/// A write built but not yet run: its SQL (parameters from `$1`) and the
/// values of its parameters. [`run_writes_in`] runs several as one.
pub(super) struct Write {
    pub sql: String,
    pub params: Vec<Param>,
}

/// The value of a parameter of a [`Write`].
pub(super) enum Param {
    Text(String),
    Int(i64),
}

impl Write {
    /// Runs it alone on `conn`; answers the rows it changed.
    pub async fn execute(self, conn: &mut AnyConnection) -> Result<u64, StoreError> {
        Ok(self.query().execute(conn).await?.rows_affected())
    }

    /// Its statement with its parameters bound.
    pub fn query(self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(n) => query.bind(n),
            };
        }
        query
    }
}

/// Runs `writes`, none of which may depend on another's rows, and
/// answers the rows the last one changed. On PostgreSQL they go as one
/// statement, one round trip: each but the last becomes a data-modifying
/// `WITH` item, which PostgreSQL runs exactly once whether the rest reads
/// it or not (and each sees the rows as they were before the statement).
/// On SQLite, which has no such items and no round trips, one after the
/// other.
pub(super) async fn run_writes_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    mut writes: Vec<Write>,
) -> Result<u64, StoreError> {
    if dialect == Dialect::Sqlite || writes.len() < 2 {
        let mut changed = 0;
        for write in writes {
            changed = write.execute(conn).await?;
        }
        return Ok(changed);
    }
    let Some(last) = writes.pop() else {
        return Ok(0);
    };
    let items = writes
        .into_iter()
        .enumerate()
        .map(|(i, write)| (format!("w{i}"), write))
        .collect();
    one_statement(items, last).execute(conn).await
}

/// `items`, each a data-modifying `WITH` item under its name, then
/// `last`, as one PostgreSQL statement: its rows, or its count, are the
/// statement's. An item may read an earlier one's `RETURNING` rows
/// (`SELECT id FROM name`); each is run exactly once, whether read or
/// not, and each sees the tables as they were before the statement.
pub(super) fn one_statement(items: Vec<(String, Write)>, last: Write) -> Write {
    let mut with = Vec::with_capacity(items.len());
    let mut params = Vec::new();
    for (name, write) in items {
        with.push(format!(
            "{name} AS ({})",
            shift_params(&write.sql, params.len())
        ));
        params.extend(write.params);
    }
    let last_sql = shift_params(&last.sql, params.len());
    params.extend(last.params);
    Write {
        sql: format!("WITH {} {last_sql}", with.join(", ")),
        params,
    }
}

/// `sql` with every parameter `$n` renamed `$(n + by)`.
fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
}

/// A column of the rows read from a JSON array.
#[derive(Clone, Copy)]
pub(super) enum Col {
    Text,
    Int,
    Bool,
}

/// Which rows of a batch a write keeps, in a statement of several (see
/// [`one_statement`]): a condition on `j.keep`, a text field the rows
/// carry for it alone (read, never written), checked against an earlier
/// item's rows. For example: only the messages whose delivery jobs this
/// worker still held and removed.
#[derive(Clone, Copy)]
pub(super) struct Keep<'a>(pub &'a str);

impl Keep<'_> {
    /// `columns`, with `keep` when rows are kept by a condition.
    pub fn columns<'c>(keep: Option<Self>, columns: &[(&'c str, Col)]) -> Vec<(&'c str, Col)> {
        let mut all = columns.to_vec();
        if keep.is_some() {
            all.push(("keep", Col::Text));
        }
        all
    }

    /// ` AND (condition)` for a `WHERE`, when rows are kept by one.
    pub fn and(keep: Option<Self>) -> String {
        keep.map(|Keep(condition)| format!(" AND ({condition})"))
            .unwrap_or_default()
    }
}

/// A row of a batch with its value for a [`Keep`] condition.
#[derive(Serialize)]
pub(super) struct Kept<'a, R> {
    #[serde(flatten)]
    pub row: R,
    pub keep: Option<&'a str>,
}

/// The rows of the JSON array bound at `$param`, as a `FROM` item named
/// `j` with `columns` (each row is an object with those keys).
pub(super) fn json_rows(dialect: Dialect, param: usize, columns: &[(&str, Col)]) -> String {
    match dialect {
        Dialect::Sqlite => {
            let list: Vec<String> = columns
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect();
            // `jsonb_each` hands each row object over in SQLite's binary
            // form; `json_each` would render it as text for every column
            // read from it, and `json_extract` would parse that text again.
            format!(
                "(SELECT {} FROM jsonb_each(${param})) AS j",
                list.join(", ")
            )
        }
        Dialect::Postgres => {
            let list: Vec<String> = columns
                .iter()
                .map(|(name, col)| {
                    let ty = match col {
                        Col::Text => "TEXT",
                        Col::Int => "BIGINT",
                        Col::Bool => "BOOLEAN",
                    };
                    format!("{name} {ty}")
                })
                .collect();
            format!(
                "jsonb_to_recordset(${param}::jsonb) AS j({})",
                list.join(", ")
            )
        }
    }
}

/// For `UPDATE … FROM {json_rows} AS j WHERE table.key = j.key`: the same
/// match once more as `AND column = ANY(…)` over the rows' `key` field on
/// PostgreSQL (nothing on SQLite, which looks each row up by its key).
///
/// PostgreSQL guesses 100 rows for `jsonb_to_recordset`, and with a table
/// of a few thousand rows it hashed them and read the whole table to join
/// (1-2.5 ms a statement at 4k contacts in the ingest bench). With the keys
/// as an array it reads the rows through the key's index.
pub(super) fn rows_match(dialect: Dialect, column: &str, param: usize, key: &str) -> String {
    match dialect {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!(
            " AND {column} = ANY(ARRAY(SELECT r->>'{key}' FROM jsonb_array_elements(${param}::jsonb) AS r))"
        ),
    }
}

/// `column` is one of the strings of the JSON array bound at `$param`.
///
/// PostgreSQL gets `= ANY(ARRAY(…))`, which it answers through the
/// column's index whatever its statistics say. As `IN (SELECT …)` it is a
/// semi-join, and the planner, trusting statistics from when the table was
/// small (a new database, a campaign's first minutes), hashed the list and
/// read the whole table: 6 ms at 50k events, growing with every event.
pub(super) fn json_in(dialect: Dialect, column: &str, param: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
        Dialect::Postgres => {
            format!("{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)))")
        }
    }
}

/// `rows` as the JSON text bound for [`json_rows`] or [`json_list`].
pub(super) fn to_json<T: Serialize + ?Sized>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Invalid(format!("batch rows: {e}")))
}

/// One event to insert.
#[derive(Serialize)]
pub(super) struct EventRow<'a> {
    pub id: &'a str,
    pub contact_id: &'a str,
    pub kind: &'a str,
    pub at: i64,
    /// The properties as stored: JSON text, borrowed when the caller
    /// holds it already (a step's or a delivery's event).
    pub properties: Cow<'a, str>,
    pub client_event_id: Option<&'a str>,
    pub received_at: i64,
    pub processed_at: Option<i64>,
}

/// Inserts `rows` into `events` in one statement.
pub(super) async fn insert_events_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    rows: &[EventRow<'_>],
) -> Result<(), StoreError> {
    if let Some(write) = events_write(dialect, rows)? {
        write.execute(conn).await?;
    }
    Ok(())
}

/// The insert of `rows` into `events`, if any.
pub(super) fn events_write(
    dialect: Dialect,
    rows: &[EventRow<'_>],
) -> Result<Option<Write>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Write {
        sql: events_insert(dialect, None),
        params: vec![Param::Text(to_json(rows)?)],
    }))
}

/// The insert into `events` of those of `rows` that `keep` keeps.
pub(super) fn kept_events_write(
    dialect: Dialect,
    rows: &[Kept<'_, EventRow<'_>>],
    keep: Keep<'_>,
) -> Result<Write, StoreError> {
    Ok(Write {
        sql: events_insert(dialect, Some(keep)),
        params: vec![Param::Text(to_json(rows)?)],
    })
}

/// The insert into `events` of the rows bound at `$1`.
fn events_insert(dialect: Dialect, keep: Option<Keep<'_>>) -> String {
    let from = json_rows(
        dialect,
        1,
        &Keep::columns(
            keep,
            &[
                ("id", Col::Text),
                ("contact_id", Col::Text),
                ("kind", Col::Text),
                ("at", Col::Int),
                ("properties", Col::Text),
                ("client_event_id", Col::Text),
                ("received_at", Col::Int),
                ("processed_at", Col::Int),
            ],
        ),
    );
    format!(
        "INSERT INTO events (id, contact_id, kind, at, properties, client_event_id, received_at, processed_at) \
         SELECT j.id, j.contact_id, j.kind, j.at, j.properties, j.client_event_id, j.received_at, j.processed_at \
         FROM {from} WHERE true{}",
        Keep::and(keep)
    )
}

/// Counts touchpoints on their days, for the dashboard (see
/// `events::count_event_in`): one statement for all of `events` (id,
/// time), summed per day and shard. Run it last in a transaction: the
/// counter rows stay locked until the commit.
pub(super) async fn count_days_in<'a>(
    conn: &mut AnyConnection,
    dialect: Dialect,
    events: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<(), StoreError> {
    if let Some(write) = days_write(dialect, events)? {
        write.execute(conn).await?;
    }
    Ok(())
}

/// The count of [`count_days_in`] as a write, if there is anything to count.
pub(super) fn days_write<'a>(
    dialect: Dialect,
    events: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<Option<Write>, StoreError> {
    #[derive(Serialize)]
    struct DayRow {
        day: i64,
        shard: i64,
        events: i64,
    }
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for (id, at) in events {
        *counts
            .entry((
                at.div_euclid(super::events::DAY_MS),
                super::events::shard_of(id),
            ))
            .or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(None);
    }
    let rows: Vec<DayRow> = counts
        .into_iter()
        .map(|((day, shard), events)| DayRow { day, shard, events })
        .collect();
    let from = json_rows(
        dialect,
        1,
        &[("day", Col::Int), ("shard", Col::Int), ("events", Col::Int)],
    );
    // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join's `ON`.
    let sql = format!(
        "INSERT INTO event_days (day, shard, events) SELECT j.day, j.shard, j.events FROM {from} \
         WHERE true ORDER BY j.day, j.shard \
         ON CONFLICT (day, shard) DO UPDATE SET events = event_days.events + excluded.events"
    );
    Ok(Some(Write {
        sql,
        params: vec![Param::Text(to_json(&rows)?)],
    }))
}

#[cfg(test)]
mod tests {
    use super::shift_params;

    #[test]
    fn parameters_are_renumbered_and_nothing_else() {
        assert_eq!(
            shift_params("SELECT $1, $2::jsonb, '$.id', $10 FROM t", 3),
            "SELECT $4, $5::jsonb, '$.id', $13 FROM t"
        );
        assert_eq!(shift_params("no parameters $", 2), "no parameters $");
    }
}
