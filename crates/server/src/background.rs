//! Long-running tasks beside the job runner (the invalidation subscriber, the worker-id
//! lease renewal): each is spawned once with the application's shutdown token.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// A long-running task the application spawns with its shutdown token.
pub type Background = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;
