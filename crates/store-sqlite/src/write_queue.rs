//! Group commit for the store's write transactions (settlement steps, distribution batches,
//! reminder deliveries): callers queue their transaction body, one writer task runs everything
//! queued in ONE SQLite transaction, each body inside its own savepoint, and answers every
//! caller after the single commit.
//!
//! Why: each transaction used to pay its own commit, and with `synchronous=FULL` a commit is an
//! fsync (~0.6 ms here): concurrent lock → redeem pairs queued on it at ~1,600 commits/s.
//! Now the fsync is shared by the batch. A body that fails is rolled back to its savepoint
//! alone (its callers see its error; its neighbours commit), so grouping never changes what a
//! body decides: bodies run one after another, each seeing what the ones before it wrote,
//! exactly as if they had been separate transactions in that order. If the commit itself
//! fails, or SQLite aborted the whole transaction (it does on I/O errors and a full disk),
//! every body of the batch gets the error: none of them is stored.
//!
//! The task takes the writer connection from the one-connection pool per batch, so the claim
//! paths that use the pool directly (`commit_claims`, the journal's applier) interleave with
//! it between batches.

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::SqliteConnection;
use sqlx::SqlitePool;
use stampede_core::ports::StoreError;
use stampede_core::trace::TraceContext;
use stampede_store_sql::db_err;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// Most transaction bodies one commit carries.
const MAX_BATCH: usize = 256;

/// Answers a body's caller; called with the commit's error, if it failed.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// What a body left for its caller, delivered once the commit's fate is known.
struct Finished {
    ok: bool,
    deliver: Deliver,
}

/// A queued transaction body and its caller's answer channel, type-erased.
trait Job: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Finished>;
    /// The body never ran: answer the caller with `why`.
    fn fail(self: Box<Self>, why: &str);
}

struct Body<T, F> {
    f: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
    /// The caller's trace, current again while its body runs on the writer thread (the
    /// events a body writes name the request that asked for them).
    trace: Option<TraceContext>,
}

fn backend(why: &str) -> StoreError {
    StoreError::Backend(why.to_owned().into())
}

impl<T, F> Job for Body<T, F>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
    T: Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Finished> {
        let Body { f, answer, trace } = *self;
        Box::pin(async move {
            // A body that panics fails like one that errs (and takes the batch down with it,
            // see `run_batch`), rather than killing the writer task.
            let body = AssertUnwindSafe(f(conn)).catch_unwind();
            let ran = match trace {
                Some(t) => t.scope(body).await,
                None => body.await,
            };
            let result = match ran {
                Ok(r) => r,
                Err(_) => Err(backend("a write transaction panicked")),
            };
            Finished {
                ok: result.is_ok(),
                deliver: Box::new(move |commit_failed| {
                    let out = match (result, commit_failed) {
                        (Ok(v), None) => Ok(v),
                        (Ok(_), Some(why)) => Err(backend(why)),
                        (Err(e), _) => Err(e),
                    };
                    let _ = answer.send(out);
                }),
            }
        })
    }

    fn fail(self: Box<Self>, why: &str) {
        let _ = self.answer.send(Err(backend(why)));
    }
}

/// The queue in front of the writer task.
#[derive(Clone)]
pub(crate) struct WriteQueue {
    tx: mpsc::Sender<Box<dyn Job>>,
}

impl WriteQueue {
    /// Starts the writer task on a thread of its own (a single-threaded runtime); it ends
    /// once every clone of the queue is dropped and the queue is empty.
    ///
    /// Why a thread: a batch is a chain of awaits on SQLite's connection thread, one after
    /// another. On the shared runtime each of those wake-ups queued behind every HTTP task
    /// ready at that moment, so under load the chain, not SQLite, set the pace of every
    /// settlement step. Here nothing else runs. (Without a runtime of its own, the task
    /// shares the current one, as before.)
    pub(crate) fn spawn(pool: SqlitePool) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 4);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => {
                std::thread::Builder::new()
                    .name("sqlite-writes".into())
                    .spawn(move || rt.block_on(run(pool, rx)))
                    .map_err(|e| StoreError::Backend(Box::new(e)))?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the SQLite write thread; sharing the main one");
                tokio::spawn(run(pool, rx));
            }
        }
        Ok(WriteQueue { tx })
    }

    /// Runs `f` in a write transaction (grouped with others) and returns its result once the
    /// transaction is committed; `f`'s error means nothing it wrote is stored.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        self.tx
            .send(Box::new(Body {
                f,
                answer,
                trace: TraceContext::current(),
            }))
            .await
            .map_err(|_| backend("the SQLite writer stopped"))?;
        result
            .await
            .map_err(|_| backend("the SQLite writer stopped"))?
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        match pool.acquire().await {
            Ok(mut conn) => run_batch(&mut conn, &mut jobs).await,
            Err(e) => {
                let why = db_err(e).to_string();
                for job in jobs.drain(..) {
                    job.fail(&why);
                }
            }
        }
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), String> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn run_batch(conn: &mut SqliteConnection, jobs: &mut Vec<Box<dyn Job>>) {
    // Statements around the bodies travel together (one hop to SQLite's thread each): the
    // transaction and the first savepoint; a body's release and the next one's savepoint.
    let started = std::time::Instant::now();
    if let Err(why) = exec(conn, "BEGIN IMMEDIATE; SAVEPOINT body").await {
        // A failed BEGIN leaves no transaction; a failed SAVEPOINT after it leaves one open.
        let _ = exec(conn, "ROLLBACK").await;
        for job in jobs.drain(..) {
            job.fail(&why);
        }
        return;
    }
    let mut finished: Vec<Finished> = Vec::with_capacity(jobs.len());
    // Set once the transaction can no longer be trusted: the rest fail unrun.
    let mut broken: Option<String> = None;
    let n = jobs.len();
    for (i, job) in jobs.drain(..).enumerate() {
        if let Some(why) = &broken {
            job.fail(why);
            continue;
        }
        let last = i + 1 == n;
        let done = job.run(conn).await;
        let end = if done.ok {
            exec(
                conn,
                if last {
                    "RELEASE body"
                } else {
                    "RELEASE body; SAVEPOINT body"
                },
            )
            .await
        } else {
            // Undo this body alone. When SQLite already rolled the whole transaction back
            // (an I/O error, a full disk), this fails and the batch is lost.
            exec(
                conn,
                if last {
                    "ROLLBACK TO body; RELEASE body"
                } else {
                    "ROLLBACK TO body; RELEASE body; SAVEPOINT body"
                },
            )
            .await
        };
        if let Err(why) = end {
            broken = Some(why);
        }
        finished.push(done);
    }
    let commit_failed = match broken {
        Some(why) => {
            let _ = exec(conn, "ROLLBACK").await;
            Some(why)
        }
        None => match exec(conn, "COMMIT").await {
            Ok(()) => {
                stampede_core::telemetry::group_commit(
                    stampede_core::telemetry::queue::SQLITE_WRITES,
                    n,
                    started.elapsed(),
                );
                None
            }
            Err(why) => {
                let _ = exec(conn, "ROLLBACK").await;
                Some(why)
            }
        },
    };
    for done in finished {
        (done.deliver)(commit_failed.as_deref());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{SqliteOptions, SqliteStore};
    use stampede_core::ports::StoreError;

    /// Bodies queued together share a transaction, yet each decides alone: a failing body's
    /// writes are undone while its neighbours' commit, and each sees the ones before it.
    #[tokio::test]
    async fn a_failing_body_is_undone_alone_and_its_neighbours_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (x INTEGER PRIMARY KEY)")
            .execute(&store.writer)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .in_write_tx(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO scratch (x) VALUES (?)")
                                .bind(i)
                                .execute(&mut *conn)
                                .await
                                .map_err(stampede_store_sql::db_err)?;
                            if i % 3 == 0 {
                                return Err(StoreError::Corrupt(format!("body {i} fails")));
                            }
                            Ok(i)
                        })
                    })
                    .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            if i % 3 == 0 {
                assert!(matches!(r, Err(StoreError::Corrupt(_))), "{i}: {r:?}");
            } else {
                assert_eq!(r.unwrap(), i as i64);
            }
        }
        let stored: Vec<i64> = sqlx::query_scalar("SELECT x FROM scratch ORDER BY x")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        let expected: Vec<i64> = (0..200).filter(|i| i % 3 != 0).collect();
        assert_eq!(stored, expected);
        // A body sees what the bodies before it in the same batch wrote.
        let seen = store
            .in_write_tx(|conn| {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM scratch")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(stampede_store_sql::db_err)
                })
            })
            .await
            .unwrap();
        assert_eq!(seen, expected.len() as i64);
    }
}
