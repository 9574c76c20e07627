//! A model's own thread: session runs are handed to it through a bounded queue, and the caller
//! waits for the result no longer than the model's `timeout`.
//!
//! * **Bounded.** At most `max_in_flight` runs are queued or running at once; a caller finding
//!   the queue full waits for room (back-pressure on the epoch loop), and that wait counts
//!   against its timeout.
//! * **Timeout.** A caller whose run has not finished in time gets [`ModelError::Timeout`]. A
//!   run still queued is taken out of the queue (its rows are freed at once); a run already
//!   going finishes on the model's thread and its result is dropped. Either way the memory a
//!   late run holds is bounded by the queue.
//! * **Not blocking the runtime.** On a multi-threaded tokio runtime the wait is a
//!   `block_in_place`, so the source driver and other tasks move to other threads and keep
//!   reading the next epoch while the model runs.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ModelError;

/// What a run computes: every output's values for the packed rows.
pub(super) type RunFn = dyn Fn(&[f32], usize) -> Result<Vec<Vec<f32>>, ModelError> + Send + Sync;

/// What a run gives back: every output's values, and the packed input, returned to the
/// caller so that the thread that packed it frees or reuses it (freed on the model's thread,
/// it would come back to the caller's allocator late and cold).
pub(super) type Ran = (Vec<Vec<f32>>, Vec<f32>);

/// The model's thread and its queue.
pub(super) struct Worker {
    shared: Arc<Shared>,
    /// The model's name, for errors.
    model: String,
    timeout: Option<Duration>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a run is queued (the thread waits) or the queue closes.
    queued: Condvar,
    /// Signalled when a run leaves the queue or finishes (callers wait for room).
    room: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Arc<Job>>,
    /// Runs queued or running.
    in_flight: usize,
    /// The most runs that were ever in flight at once.
    peak: usize,
    closed: bool,
}

struct Job {
    slot: Mutex<Slot>,
    done: Condvar,
}

enum Slot {
    Queued(Vec<f32>, usize),
    Running,
    Done(Result<Vec<Vec<f32>>, ModelError>, Vec<f32>),
    /// The caller stopped waiting.
    Abandoned,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Worker {
    /// Starts the thread for model `model`, which runs `run`.
    ///
    /// # Errors
    /// [`ModelError::Backend`] when the thread cannot be started.
    pub(super) fn start(
        model: &str,
        run: Arc<RunFn>,
        max_in_flight: usize,
        timeout: Option<Duration>,
    ) -> Result<Self, ModelError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            room: Condvar::new(),
            capacity: max_in_flight.max(1),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("model-{model}"))
            .spawn(move || serve(&thread_shared, &*run))
            .map_err(|e| {
                ModelError::Backend(format!("model '{model}': cannot start its thread: {e}"))
            })?;
        Ok(Self {
            shared,
            model: model.to_string(),
            timeout,
        })
    }

    /// The most runs ever queued or running at once.
    pub(super) fn peak_in_flight(&self) -> usize {
        lock(&self.shared.state).peak
    }

    /// Runs `rows` packed rows on the model's thread and waits for the result.
    ///
    /// # Errors
    /// [`ModelError::Timeout`] when it takes longer than the timeout (waiting for room
    /// included), and the run's own error.
    pub(super) fn run(&self, data: Vec<f32>, rows: usize) -> Result<Ran, ModelError> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let job = Arc::new(Job {
            slot: Mutex::new(Slot::Queued(data, rows)),
            done: Condvar::new(),
        });
        in_place(|| {
            self.enqueue(&job, deadline, rows)?;
            self.wait(&job, deadline, rows)
        })
    }

    fn timed_out(&self, rows: usize) -> ModelError {
        ModelError::Timeout {
            model: self.model.clone(),
            rows,
            after: self.timeout.unwrap_or_default(),
        }
    }

    fn enqueue(
        &self,
        job: &Arc<Job>,
        deadline: Option<Instant>,
        rows: usize,
    ) -> Result<(), ModelError> {
        let mut state = lock(&self.shared.state);
        while state.in_flight >= self.shared.capacity && !state.closed {
            state = match wait_until(&self.shared.room, state, deadline) {
                Some(s) => s,
                None => return Err(self.timed_out(rows)),
            };
        }
        if state.closed {
            return Err(ModelError::Backend(format!(
                "model '{}': its thread has stopped",
                self.model
            )));
        }
        state.in_flight += 1;
        state.peak = state.peak.max(state.in_flight);
        state.queue.push_back(Arc::clone(job));
        drop(state);
        self.shared.queued.notify_one();
        Ok(())
    }

    fn wait(
        &self,
        job: &Arc<Job>,
        deadline: Option<Instant>,
        rows: usize,
    ) -> Result<Ran, ModelError> {
        // A short run is over before a sleeping thread would even be woken: look first.
        spin_until(|| matches!(*lock(&job.slot), Slot::Done(..)), deadline);
        let mut slot = lock(&job.slot);
        loop {
            match std::mem::replace(&mut *slot, Slot::Abandoned) {
                Slot::Done(result, input) => return result.map(|values| (values, input)),
                other => *slot = other,
            }
            slot = match wait_until(&job.done, slot, deadline) {
                Some(s) => s,
                None => {
                    let mut slot = lock(&job.slot);
                    if let Slot::Done(result, input) =
                        std::mem::replace(&mut *slot, Slot::Abandoned)
                    {
                        return result.map(|values| (values, input));
                    }
                    drop(slot);
                    self.withdraw(job);
                    return Err(self.timed_out(rows));
                }
            };
        }
    }

    /// Takes an abandoned job out of the queue if the thread has not started it.
    fn withdraw(&self, job: &Arc<Job>) {
        let mut state = lock(&self.shared.state);
        if let Some(at) = state.queue.iter().position(|j| Arc::ptr_eq(j, job)) {
            state.queue.remove(at);
            state.in_flight -= 1;
            drop(state);
            self.shared.room.notify_one();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.queued.notify_all();
        self.shared.room.notify_all();
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("model", &self.model)
            .field("capacity", &self.shared.capacity)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Waits on `condvar` until notified or `deadline`; None once the deadline has passed.
fn wait_until<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Option<MutexGuard<'a, T>> {
    match deadline {
        None => Some(condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)),
        Some(deadline) => {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (guard, _) = condvar
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner);
            Some(guard)
        }
    }
}

/// The model's thread: runs queued jobs in order until the queue closes.
fn serve(shared: &Shared, run: &RunFn) {
    loop {
        // The next call often comes at once (another partition of the same plan): look
        // before going to sleep.
        spin_until(|| !lock(&shared.state).queue.is_empty(), None);
        let job = {
            let mut state = lock(&shared.state);
            loop {
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                if state.closed {
                    return;
                }
                state = shared
                    .queued
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let taken = std::mem::replace(&mut *lock(&job.slot), Slot::Running);
        if let Slot::Queued(data, rows) = taken {
            let result = run(&data, rows);
            let mut slot = lock(&job.slot);
            if matches!(*slot, Slot::Running) {
                *slot = Slot::Done(result, data);
            }
            drop(slot);
            job.done.notify_all();
        }
        lock(&shared.state).in_flight -= 1;
        shared.room.notify_one();
    }
}

/// How long a caller or the model's thread looks for what it waits for before sleeping: waking
/// a sleeping thread costs tens of microseconds on a virtual machine, as much as a short run.
const SPIN: Duration = Duration::from_micros(200);

/// Polls `ready` (yielding the CPU between looks; each look takes an uncontended lock) for at
/// most [`SPIN`] or until `deadline`.
fn spin_until(ready: impl Fn() -> bool, deadline: Option<Instant>) {
    let started = Instant::now();
    let until = deadline.map_or(started + SPIN, |d| d.min(started + SPIN));
    while !ready() && Instant::now() < until {
        std::thread::yield_now();
    }
}

/// Runs `f`, which blocks, without holding up the tokio worker thread it is called on.
fn in_place<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleepy(ms: u64) -> Arc<RunFn> {
        Arc::new(move |data: &[f32], _rows| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(vec![data.to_vec()])
        })
    }

    #[test]
    fn a_run_comes_back_from_the_model_thread() {
        let worker = Worker::start("m", sleepy(0), 2, None).unwrap();
        let (values, input) = worker.run(vec![1.0, 2.0], 2).unwrap();
        assert_eq!(values, vec![vec![1.0, 2.0]]);
        assert_eq!(input, [1.0, 2.0], "the input comes back to the caller");
    }

    #[test]
    fn a_slow_run_times_out_and_later_runs_wait_within_their_own_timeout() {
        // Row value 1 takes 300 ms, any other is quick.
        let run: Arc<RunFn> = Arc::new(|data: &[f32], _rows| {
            if data[0] == 1.0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(vec![data.to_vec()])
        });
        let worker = Worker::start("m", run, 1, Some(Duration::from_millis(50))).unwrap();
        let started = Instant::now();
        let err = worker.run(vec![1.0], 1).unwrap_err();
        assert!(matches!(err, ModelError::Timeout { rows: 1, .. }), "{err}");
        // The first run still occupies the thread: the next one cannot even be queued, and
        // gives up after its own timeout rather than waiting for the first.
        let err = worker.run(vec![2.0], 1).unwrap_err();
        assert!(matches!(err, ModelError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_millis(250));
        assert_eq!(worker.peak_in_flight(), 1, "the queue bound held");
        // Once the slow run is over, runs go through again (its late result was dropped).
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(worker.run(vec![3.0], 1).unwrap().0, vec![vec![3.0]]);
    }

    #[test]
    fn callers_on_many_threads_never_exceed_the_bound() {
        let worker = Arc::new(Worker::start("m", sleepy(5), 2, None).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let worker = Arc::clone(&worker);
                std::thread::spawn(move || worker.run(vec![i as f32], 1).unwrap())
            })
            .collect();
        let mut got: Vec<f32> = threads
            .into_iter()
            .map(|t| t.join().unwrap().0[0][0])
            .collect();
        got.sort_by(f32::total_cmp);
        assert_eq!(got, (0..8).map(|i| i as f32).collect::<Vec<_>>());
        assert!(worker.peak_in_flight() <= 2);
        assert!(worker.peak_in_flight() >= 1);
    }
}
