//! The schema is shard-ready by tenant (docs/SCALING.md), read from PostgreSQL's catalog
//! after every migration has run: every primary key, unique constraint and unique index
//! leads with `company_id`, and every foreign key carries `company_id` to `company_id`
//! (or to `companies.id`, the company id itself). The exceptions are listed here one by
//! one, each with the reason SCALING.md gives, so a new one fails until it is decided.

use crate::harness::{postgres_url, Backend, TestApp};

/// Keys that do not lead with `company_id`, as `table key (columns)`.
const EXCEPTIONS: &[&str] = &[
    // sqlx's bookkeeping: stays a local table of the coordinator.
    "_sqlx_migrations primary key (version)",
    // idem's bookkeeping of its own migrations: likewise.
    "idem_migrations primary key (version)",
    // Distributed by `id`, which is the company id.
    "companies primary key (id)",
    // A reference table: a bearer token is found by its hash before the company is known.
    "api_tokens primary key (token_hash)",
    // idem's record key: `tenant` is the company id (text), the distribution column.
    "idempotency_keys primary key (tenant, operation, idem_key)",
    // A reference table of operator-wide settings.
    "operator_settings primary key (name)",
];

const CONSTRAINTS: &str = "\
    select t.relname::text, c.contype::text, \
      array(select a.attname::text from unnest(c.conkey) with ordinality k(n, i) \
            join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i), \
      coalesce(r.relname::text, ''), \
      array(select a.attname::text from unnest(c.confkey) with ordinality k(n, i) \
            join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.n order by k.i) \
    from pg_constraint c \
    join pg_class t on t.oid = c.conrelid \
    left join pg_class r on r.oid = c.confrelid \
    where t.relnamespace = current_schema()::regnamespace and c.contype in ('p', 'u', 'f') \
    order by 1, 2, 3";

const UNIQUE_INDEXES: &str = "\
    select t.relname::text, ix.relname::text, \
      array(select a.attname::text from unnest(i.indkey::int2[]) with ordinality k(n, j) \
            join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n order by k.j) \
    from pg_index i \
    join pg_class t on t.oid = i.indrelid \
    join pg_class ix on ix.oid = i.indexrelid \
    where t.relnamespace = current_schema()::regnamespace and i.indisunique \
      and not exists (select 1 from pg_constraint c \
                      where c.conindid = i.indexrelid and c.contype in ('p', 'u', 'x')) \
    order by 1, 2";

type ConstraintRow = (String, String, Vec<String>, String, Vec<String>);

/// Whether a foreign key maps `company_id` onto the referenced table's company id.
fn carries_company(cols: &[String], ref_table: &str, ref_cols: &[String]) -> bool {
    cols.iter().zip(ref_cols).any(|(c, r)| {
        c == "company_id" && (r == "company_id" || (ref_table == "companies" && r == "id"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(pg_tests), ignore = "PostgreSQL: set DATABASE_URL_TEST to run")]
async fn every_key_leads_with_company_id_and_every_foreign_key_carries_it() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL_TEST is not set");
        return;
    }
    // Arrange: a server has migrated its database (idem's and AccuBooks' migrations) and
    // created the audit log's partitions ahead.
    let app = TestApp::spawn(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");

    // Act
    let constraints: Vec<ConstraintRow> = sqlx::query_as(CONSTRAINTS)
        .fetch_all(&pool)
        .await
        .expect("constraints");
    let unique_indexes: Vec<(String, String, Vec<String>)> = sqlx::query_as(UNIQUE_INDEXES)
        .fetch_all(&pool)
        .await
        .expect("unique indexes");
    pool.close().await;

    // Assert
    let mut keys_not_leading = Vec::new();
    let mut foreign_keys_without_company = Vec::new();
    for (table, kind, cols, ref_table, ref_cols) in &constraints {
        let listed = cols.join(", ");
        match kind.as_str() {
            "f" if !carries_company(cols, ref_table, ref_cols) => foreign_keys_without_company
                .push(format!("{table} ({listed}) references {ref_table}")),
            "f" => {}
            _ if cols.first().map(String::as_str) == Some("company_id") => {}
            kind => {
                let name = if kind == "p" { "primary key" } else { "unique" };
                keys_not_leading.push(format!("{table} {name} ({listed})"));
            }
        }
    }
    for (table, index, cols) in &unique_indexes {
        if cols.first().map(String::as_str) != Some("company_id") {
            keys_not_leading.push(format!(
                "{table} unique index {index} ({})",
                cols.join(", ")
            ));
        }
    }
    keys_not_leading.sort();
    let mut expected: Vec<String> = EXCEPTIONS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        keys_not_leading, expected,
        "keys that do not lead with company_id"
    );
    assert!(
        foreign_keys_without_company.is_empty(),
        "foreign keys without company_id: {foreign_keys_without_company:?}"
    );
    let checked_partition = constraints.iter().any(|(table, kind, cols, _, _)| {
        table.starts_with("idempotent_write_audit_log_") && kind == "p" && cols[0] == "company_id"
    });
    assert!(checked_partition, "the audit log's partitions were checked");
}
