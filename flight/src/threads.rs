//! The threads queries run on: a tokio runtime of their own, below the pipeline's CPU
//! priority, so an analyst's query uses the CPU the epoch loop leaves and the pipeline keeps
//! its rate when both want every core.

use std::io;

/// How much nicer than the pipeline query threads are (Linux nice values, 0–19).
const QUERY_NICENESS: i32 = 10;

/// A runtime for serving Flight SQL, shut down without waiting when dropped (a query in
/// flight is cut off, as when the pipeline stops).
#[derive(Debug)]
pub struct QueryRuntime {
    /// Taken when dropped.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl QueryRuntime {
    /// As many worker threads as cores, each lowered in priority when it starts.
    ///
    /// # Errors
    /// The threads cannot be started.
    pub fn new() -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("volley-flight")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// The runtime's handle, to spawn the server and register its listener on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which an async caller may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's CPU priority by [`QUERY_NICENESS`] (at most to 19). On Linux
/// a nice value belongs to a thread, so the pipeline's threads keep theirs. Where that
/// fails or is not so, queries run at the pipeline's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        if let Ok(current) = rustix::process::getpriority_process(None) {
            let _ = rustix::process::setpriority_process(None, (current + QUERY_NICENESS).min(19));
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn query_threads_are_nicer_than_the_caller_and_the_caller_keeps_its_priority() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let runtime = QueryRuntime::new().unwrap();
        let inside = runtime
            .handle()
            .block_on(async {
                tokio::spawn(async { rustix::process::getpriority_process(None) }).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(inside, (before + QUERY_NICENESS).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }
}
