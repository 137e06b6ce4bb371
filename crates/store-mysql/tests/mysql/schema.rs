//! Migrations, the schema they build, configuration checks and clean-up.

use crate::helpers::*;
use sqlx::Row;
use sqlx::mysql::MySqlPool;
use stampede_core::ports::TemplateStore;
use stampede_core::records::{CouponRecord, DistributionRecord, ReminderRecord, TemplateRecord};
use stampede_store_mysql::{MysqlConfig, MysqlStore};
use stampede_store_sql::SqlRow;
use stampede_store_sql::rows::{LINE_COLUMNS, ORDER_COLUMNS};

both_layouts!(
    migrating_again_is_a_noop,
    schema_matches_the_shared_records,
    a_database_from_before_distributions_is_upgraded
);

async fn migrating_again_is_a_noop(ctx: Ctx) {
    assert_eq!(ctx.store.migrate().await.unwrap(), 0);
    let t = template(1, 2, "survives");
    create(&ctx.store, &t).await;

    // Reopening the same databases applies nothing and sees the data.
    let reopened = MysqlStore::open(&ctx.cfg).await.unwrap();
    assert_eq!(reopened.migrate().await.unwrap(), 0);
    assert_eq!(reopened.get_template(t.id).await.unwrap(), Some(t));

    for url in &ctx.cfg.databases {
        let pool = MySqlPool::connect(url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        pool.close().await;
    }
}

async fn table_names(pool: &MySqlPool) -> Vec<String> {
    let rows = sqlx::query("SELECT CAST(table_name AS CHAR) AS t FROM information_schema.tables WHERE table_schema = DATABASE()")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut names: Vec<String> = rows.iter().map(|r| r.try_get("t").unwrap()).collect();
    names.sort();
    names
}

async fn schema_matches_the_shared_records(ctx: Ctx) {
    let tables = ctx.cfg.tables_per_database as usize;
    // Templates carry one column of their own past the shared record: the claim log position.
    let mut expected_columns: Vec<&str> =
        TemplateRecord::COLUMNS.split(',').map(str::trim).collect();
    expected_columns.push("claim_log_pos");
    let coupon_columns: Vec<&str> = CouponRecord::COLUMNS.split(',').map(str::trim).collect();
    let distribution_columns: Vec<&str> = DistributionRecord::COLUMNS
        .split(',')
        .map(str::trim)
        .collect();
    let names = |columns: &'static str| -> Vec<&'static str> {
        columns.split(',').map(str::trim).collect()
    };
    let order_columns = names(ORDER_COLUMNS);
    let settlement_columns = names(LINE_COLUMNS);
    let reminder_columns = names(ReminderRecord::COLUMNS);
    let lease_columns = vec!["part", "owner", "token", "until_ms"];
    let goods_columns = vec!["goods_id", "template_id"];
    for (i, url) in ctx.cfg.databases.iter().enumerate() {
        let pool = MySqlPool::connect(url).await.unwrap();
        let mut expected: Vec<String> = vec![
            "schema_migrations".to_owned(),
            "reminder_leases".to_owned(),
            "outbox_leases".to_owned(),
        ];
        for t in 0..tables {
            expected.extend([
                format!("templates_{t}"),
                format!("template_audit_{t}"),
                format!("idempotency_keys_{t}"),
                format!("user_coupons_{t}"),
                format!("outbox_{t}"),
                format!("distributions_{t}"),
                format!("distribution_failures_{t}"),
                format!("distribution_files_{t}"),
                format!("orders_{t}"),
                format!("settlements_{t}"),
                format!("reminders_{t}"),
                format!("template_goods_{t}"),
            ]);
            for (table, want) in [
                (format!("templates_{t}"), &expected_columns),
                (format!("user_coupons_{t}"), &coupon_columns),
                (format!("distributions_{t}"), &distribution_columns),
                (format!("orders_{t}"), &order_columns),
                (format!("settlements_{t}"), &settlement_columns),
                (format!("reminders_{t}"), &reminder_columns),
                (format!("template_goods_{t}"), &goods_columns),
                ("reminder_leases".to_owned(), &lease_columns),
                ("outbox_leases".to_owned(), &lease_columns),
            ] {
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(&table)
                .fetch_all(&pool)
                .await
                .unwrap();
                assert_eq!(&columns, want, "{table} in database {i}");
            }
        }
        if i == 0 {
            expected.extend(
                [
                    "template_directory",
                    "distribution_directory",
                    "order_directory",
                    "accounts",
                    "auth_sessions",
                    "refresh_tokens",
                    "flow_rules",
                ]
                .map(String::from),
            );
        }
        expected.sort();
        assert_eq!(table_names(&pool).await, expected, "tables of database {i}");
        pool.close().await;
    }
}

/// A database migrated before distributions existed (versions 1 and 2 only) gets them.
async fn a_database_from_before_distributions_is_upgraded(ctx: Ctx) {
    let tables = ctx.cfg.tables_per_database;
    for (i, url) in ctx.cfg.databases.iter().enumerate() {
        let pool = MySqlPool::connect(url).await.unwrap();
        let mut drop: Vec<String> = (0..tables)
            .flat_map(|t| {
                [
                    format!("distributions_{t}"),
                    format!("distribution_failures_{t}"),
                    format!("distribution_files_{t}"),
                ]
            })
            .collect();
        if i == 0 {
            drop.push("distribution_directory".to_owned());
        }
        for table in drop {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("DELETE FROM schema_migrations WHERE version = 3")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // Version 3 alone is applied, once per database.
    assert_eq!(ctx.store.migrate().await.unwrap(), ctx.cfg.databases.len());
    assert_eq!(ctx.store.migrate().await.unwrap(), 0);
    for url in &ctx.cfg.databases {
        let pool = MySqlPool::connect(url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let names = table_names(&pool).await;
        assert!(names.contains(&"distributions_0".to_owned()), "{names:?}");
        pool.close().await;
    }
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let good = fresh_config(2, 2);
    let cases = [
        MysqlConfig {
            databases: Vec::new(),
            ..good.clone()
        },
        MysqlConfig {
            tables_per_database: 0,
            ..good.clone()
        },
        MysqlConfig {
            max_connections_per_database: 0,
            ..good.clone()
        },
        MysqlConfig {
            databases: vec![good.databases[0].clone(), good.databases[0].clone()],
            ..good.clone()
        },
        MysqlConfig {
            databases: vec![format!("{}/bad-name", server_url())],
            ..good.clone()
        },
        MysqlConfig {
            databases: vec![server_url()],
            ..good.clone()
        },
    ];
    for cfg in cases {
        assert!(MysqlStore::open(&cfg).await.is_err(), "{cfg:?}");
    }
}

#[tokio::test]
async fn dropping_removes_every_database() {
    let cfg = fresh_config(2, 1);
    let store = MysqlStore::open(&cfg).await.unwrap();
    store.ping().await.unwrap();
    store.drop_databases().await.unwrap();
    assert!(store.ping().await.is_err());

    let server = MySqlPool::connect(&server_url()).await.unwrap();
    for url in &cfg.databases {
        let name = url.rsplit('/').next().unwrap();
        let found: Option<String> = sqlx::query_scalar(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(name)
        .fetch_optional(&server)
        .await
        .unwrap();
        assert_eq!(found, None, "{name} still exists");
    }
    server.close().await;
}
