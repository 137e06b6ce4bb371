//! `stampede-bench`: a load generator for an already running (release-built) Stampede server.
//!
//! Scenarios:
//! - `healthz` — `GET /healthz`: the HTTP ceiling of the same server under the same tool.
//! - `claim` — creates `--templates` templates through the back-office API with an admin
//!   token, mints `--users` user tokens (both signed with the server's JWT secret:
//!   `--jwt-secret`, env `STAMPEDE_AUTH__JWT_SECRET`, or `--data-dir DIR` to read
//!   `DIR/jwt-secret`, the embedded server's generated secret), then fires
//!   `POST /api/v1/templates/{id}/claim` for random (user, template) pairs.
//! - `distribution` — one bulk distribution: generates a file of `--rows` user ids with
//!   `stampede gen users` (or takes `--file`), creates a template with a merchant token,
//!   uploads the file (`POST /api/v1/merchant/distributions`) and polls the task until it is
//!   `completed`, timing upload and end-to-end wall time while sampling the server's RSS and
//!   CPU (`--server-pid`, required). `--ceiling sqlite:DIR | mysql:URL` then measures the raw
//!   bulk-insert ceiling of the same database (same `user_coupons` schema, server-like
//!   batches) and prints it next to the distribution's rows/s. Exits non-zero unless the task
//!   completed.
//! - `quote` — `POST /api/v1/checkout/quote` for random users with 5-item carts over 3 shops.
//!   Setup: 50 templates (15 per shop 1–3 of mixed kinds — fixed, threshold, percent, some
//!   scoped to goods — and 5 platform templates), and every one of `--users` users (default
//!   1,000, from `--first-user`) claims one coupon of each, `--setup-in-flight` (32) at a time;
//!   then one quote per cart for the first user must list its 50 coupons, some available,
//!   with a positive best discount, or the run fails.
//! - `lock-redeem` — each request is a pair on one connection: lock one unused coupon of a
//!   user for a fresh order `b-<run>-<n>` (`POST /api/v1/orders/{id}/coupons/lock`), then
//!   redeem it (`…/redeem`, body `{}`); latency is the pair's. Setup: `--users` users claim
//!   `--coupons-per-user` (default 100; ≤ 500) coupons of shop-1 fixed templates, then each
//!   user's last coupon is probe-locked and released until the persister has stored it.
//!   A redeemed coupon is spent: the run supports `users × coupons-per-user` pairs (warmup
//!   included; 100,000 by default) and stops early, saying so, when they are all spent.
//!
//!   Both settlement scenarios claim as users: run the server with
//!   `STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0` (the per-user claim limit off; that is how
//!   they are meant to be measured). Against a limited server the setup still completes,
//!   more slowly: 429s are retried after a pause and counted.
//! - `reminders` — webhook reminders before a sale, delivered when due. A sink in this tool
//!   (`--sink-listen`, default 127.0.0.1:18099, answering 204 to `POST /hook`) counts the
//!   distinct `dedupe_id`s, duplicates and the lag from `remind_at`; the server must be started
//!   with `STAMPEDE_REMINDER__WEBHOOK_URL=http://127.0.0.1:18099/hook`. Setup: a merchant
//!   (shop 1) template whose claim starts `60 min + --lead` (150 s) from now, then
//!   `--reminders` users (1,000,000, from `--first-user`) each `PUT` a webhook reminder 60 min
//!   before it, `--setup-in-flight` (128) at a time. Then it waits until every reminder has
//!   arrived (or `--timeout` after the due time) sampling the server's RSS (`--server-pid`,
//!   required), and reports the seeding rate, the time from the due time to the last delivery
//!   (the target: ≤ 30 s for 1M), deliveries/s, duplicates, lag percentiles and the server's
//!   memory, with `--ceiling` as in `distribution`. Exits non-zero unless all were delivered.
//! - `redis-ceiling` — `redis-benchmark` running a claim-like Lua (an approximation of the
//!   claim script's cost); skipped when redis-benchmark or Redis is missing.
//!
//! Load: closed loop (`--connections C` keep-alive HTTP/1.1 connections sending back to back)
//! or open loop (`--rate R` requests/s on a fixed schedule, latency measured from the
//! scheduled send time so a stalled server cannot hide — no coordinated omission), after a
//! `--warmup`, for `--duration`. `--compare-healthz` runs the healthz ceiling right after with
//! the same load and prints both side by side with the ratio.
//!
//! Output: a table on stdout, then one line of JSON with the same numbers as the last line
//! (progress goes to stderr). Example:
//!
//! ```text
//! stampede-bench claim --data-dir ./data --server-pid $(pgrep -n stampede) \
//!     --users 10000 --templates 10 --stock 1000000 --limit 1 \
//!     --connections 64 --duration 10s --compare-healthz
//! stampede-bench healthz --rate 20000 --connections 200 --duration 30s
//! stampede-bench distribution --base http://127.0.0.1:8080 --data-dir ./data \
//!     --server-pid $(pgrep -n stampede) --rows 1000000 --format csv \
//!     --ceiling sqlite:/tmp/ceiling        # or --ceiling mysql:mysql://root@127.0.0.1:3306
//! stampede-bench redis-ceiling
//!
//! # settlement: embedded server with the claim limit off
//! rm -rf /tmp/bq && STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0 \
//!     ./target/release/stampede serve --data-dir /tmp/bq --listen 127.0.0.1:18097 &
//! stampede-bench quote --base http://127.0.0.1:18097 --data-dir /tmp/bq \
//!     --server-pid $(pgrep -n stampede) --users 1000 \
//!     --connections 64 --duration 10s --warmup 2s --compare-healthz
//! stampede-bench lock-redeem --base http://127.0.0.1:18097 --data-dir /tmp/bq \
//!     --server-pid $(pgrep -n stampede) --users 1000 --coupons-per-user 100 \
//!     --connections 64 --duration 10s --warmup 2s
//!
//! # reminders: the server posts due reminders to the tool's sink
//! rm -rf /tmp/br && STAMPEDE_REMINDER__WEBHOOK_URL=http://127.0.0.1:18099/hook \
//!     STAMPEDE_REMINDER__WEBHOOK_BATCH=1000 \
//!     ./target/release/stampede serve --data-dir /tmp/br --listen 127.0.0.1:18098 &
//! stampede-bench reminders --base http://127.0.0.1:18098 --data-dir /tmp/br \
//!     --server-pid $(pgrep -n stampede) --reminders 1000000 --lead 150s \
//!     --ceiling sqlite:/tmp/ceiling
//! ```
//!
//! The tool shares the machine's cores with the server: it runs on one thread by default
//! (`--threads`) and reports its own CPU use next to the server's.

use clap::Parser;
use stampede_bench::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    match stampede_bench::app::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
