//! The plan's worker threads.
//!
//! A run hands its work to the pool with `install`, and at batch 1 that hand-off is a
//! measurable share of a small network: the calling thread sleeps until a pool thread has
//! run the batch and wakes it (17-25 us per run on the 2-core VM of `BENCHMARKS.md`, 2-5 % of
//! ResNet-20 at batch 1). So the first plan a thread builds with two or more threads gets a
//! pool that counts that thread as worker 0 (`rayon`'s `use_current_thread`): its runs then
//! start on the calling thread, which works alongside the other workers, as onnxruntime's
//! caller does.
//!
//! A thread can belong to one such pool only, for the rest of its life, so the pool is kept
//! per thread and shared by every later plan built there with the same thread count; other
//! counts get a plain pool. A plan run from a thread other than the one that built it cannot
//! use the builder as a worker, so those runs use a plain pool of their own (`Plan::run_pool`).
//! A side effect on the builder thread: rayon work it starts outside any `install` (a bare
//! `par_iter`) runs in this pool rather than rayon's global one.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// The pool this thread is worker 0 of, once it has one.
    static CALLER_POOL: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
}

/// A pool of `threads` workers for a plan built on this thread, and whether this thread is
/// one of its workers.
pub(crate) fn pool_for_this_thread(threads: usize) -> Result<(Arc<rayon::ThreadPool>, bool)> {
    if threads < 2 {
        // The runs already stay on the calling thread (see `exec`).
        return Ok((plain_pool(threads)?, false));
    }
    CALLER_POOL.with(|cell| {
        let mut mine = cell.borrow_mut();
        match mine.as_ref() {
            Some(p) if p.current_num_threads() == threads => return Ok((Arc::clone(p), true)),
            // This thread's pool has another size, or it is a worker of some other pool.
            Some(_) => return Ok((plain_pool(threads)?, false)),
            None if rayon::current_thread_index().is_some() => {
                return Ok((plain_pool(threads)?, false))
            }
            None => {}
        }
        match rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build()
        {
            Ok(p) => {
                let p = Arc::new(p);
                *mine = Some(Arc::clone(&p));
                Ok((p, true))
            }
            Err(_) => Ok((plain_pool(threads)?, false)),
        }
    })
}

/// A pool of `threads` rayon threads of its own.
pub(crate) fn plain_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("cannot start {threads} threads: {e}")))
}
