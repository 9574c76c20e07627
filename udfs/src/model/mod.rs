//! ONNX models as vectorized functions over Arrow columns: the runtime behind `predict()`.
//!
//! A [`Model`] is loaded once (its SHA-256 computed from the bytes loaded), its input and
//! outputs checked, and then [`Model::predict`] runs it over whole batches: the argument
//! columns are packed into one row-major `[rows, k]` f32 tensor, the session runs once per
//! `max_rows` rows, and the outputs come back as Arrow arrays: `Float32` for an output of one
//! value per row, `FixedSizeList<Float32>` for wider outputs (embeddings), and a struct of them
//! when the model has several outputs.
//!
//! Backends go through `ort`'s API: [`Backend::Tract`] (pure Rust, nothing to install) is the
//! one built in so far.

mod backend;
mod histogram;
mod isolate;
mod memo;
mod predict;
mod tensor;
mod worker;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field};
use ort::session::Session;
use ort::value::{TensorRef, ValueType};
use sha2::{Digest, Sha256};

pub use backend::{environment, onnxruntime_library};
pub use isolate::{LeftOut, NullPolicy, Scored, score_isolating};
pub use memo::MemoBatch;
pub use predict::{ModelSet, PREDICT, PredictFunc, Rejected, models_called, predict_udf};
pub use tensor::{output_type, pack_rows};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file is missing, unreadable or not a model this backend can run.
    #[error("model '{model}': {message}")]
    Load {
        /// The model's name in the pipeline.
        model: String,
        /// What was wrong.
        message: String,
    },
    /// The call does not fit the model (arity, types): a pipeline mistake.
    #[error("model '{model}': {message}")]
    Signature {
        /// The model's name in the pipeline.
        model: String,
        /// What does not fit.
        message: String,
    },
    /// Running the model failed on a batch.
    #[error("model '{model}' failed on {rows} rows: {message}")]
    Run {
        /// The model's name in the pipeline.
        model: String,
        /// Rows in the failing call.
        rows: usize,
        /// The backend's error.
        message: String,
    },
    /// A row has a NULL input and the model's null policy is `fail`.
    #[error(
        "model '{model}': {rows} rows have a NULL input (the first is row {first} of the batch) and null_policy is 'fail'"
    )]
    NullInput {
        /// The model's name in the pipeline.
        model: String,
        /// Rows with a NULL input.
        rows: usize,
        /// The first such row in the batch.
        first: usize,
    },
    /// A run took longer than the model's `timeout` (waiting for a free slot included).
    #[error(
        "model '{model}' timed out on {rows} rows: no result within {after:?} (option 'timeout')"
    )]
    Timeout {
        /// The model's name in the pipeline.
        model: String,
        /// Rows in the call.
        rows: usize,
        /// The timeout.
        after: Duration,
    },
    /// The backend cannot start, or a second backend was asked for.
    #[error("ONNX backend: {0}")]
    Backend(String),
}

/// Which implementation of the ONNX operators runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// tract, pure Rust: nothing to install.
    Tract,
    /// Microsoft's ONNX Runtime, opened from its shared library at run time.
    OnnxRuntime,
}

impl Backend {
    /// The backend's option value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::OnnxRuntime => "onnxruntime",
        }
    }

    /// The backend named `name` (an option value).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tract" => Some(Backend::Tract),
            "onnxruntime" | "ort" => Some(Backend::OnnxRuntime),
            _ => None,
        }
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider.
    Cuda,
}

impl Device {
    /// The device's option value.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// The device named `name` (an option value).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "cuda" | "gpu" => Some(Device::Cuda),
            _ => None,
        }
    }
}

/// How a model is run.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// The backend.
    pub backend: Backend,
    /// The device (CUDA needs [`Backend::OnnxRuntime`]).
    pub device: Device,
    /// Threads one call may use inside an operator (`None`: the backend's default).
    pub threads: Option<usize>,
    /// The most rows one session run takes; bigger batches are split.
    pub max_rows: usize,
    /// What a row with a NULL input gets from `predict()`.
    pub null_policy: NullPolicy,
    /// Whether a streaming job keeps each epoch's scores until a checkpoint covers the epoch,
    /// so a replay reads them instead of calling the model again.
    pub memo: bool,
    /// The longest one run may take (waiting for a free slot included) before its rows go to
    /// dead letters (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Runs queued or running on the model's thread at once; more callers wait.
    pub max_in_flight: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Tract,
            device: Device::Cpu,
            threads: None,
            max_rows: 8192,
            null_policy: NullPolicy::DeadLetter,
            memo: true,
            timeout: Some(DEFAULT_TIMEOUT),
            max_in_flight: 2,
        }
    }
}

/// The default per-run timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A tensor the model takes or gives: its name and shape (`-1`: any size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the graph.
    pub name: String,
    /// Dimensions, `-1` where dynamic.
    pub shape: Vec<i64>,
}

/// A loaded model. Its session runs on the model's own thread ([`worker`]).
#[derive(Debug)]
pub struct Model {
    name: String,
    sha256: String,
    core: Arc<Core>,
    max_rows: usize,
    /// The Arrow type `predict` returns, derived from the outputs once.
    return_type: DataType,
    null_policy: NullPolicy,
    backend: Backend,
    device: Device,
    memo: bool,
    timeout: Option<Duration>,
    worker: worker::Worker,
    stats: Stats,
}

/// What the model's thread needs to run the session.
#[derive(Debug)]
struct Core {
    name: String,
    input: TensorInfo,
    outputs: Vec<TensorInfo>,
    session: Mutex<Session>,
}

/// What a model has done since it was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelStats {
    /// Backend runs (one per `max_rows` rows at most).
    pub calls: u64,
    /// Rows scored.
    pub rows: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Time spent in runs, in total.
    pub total_seconds: f64,
    /// The last run's time.
    pub last_seconds: f64,
    /// The median rows per run (to within a quarter of a doubling, low).
    pub rows_per_call_p50: u64,
    /// The most rows one run took.
    pub rows_per_call_max: u64,
    /// The median run time (to within a quarter of a doubling, low).
    pub latency_p50_seconds: f64,
    /// The 99th percentile of run times (likewise).
    pub latency_p99_seconds: f64,
    /// Runs that timed out (their rows went to dead letters).
    pub timeouts: u64,
    /// Rows a replayed epoch read from the inference memo instead of scoring.
    pub memo_rows: u64,
    /// The most runs queued or running on the model's thread at once.
    pub peak_in_flight: u64,
    /// Run times, in seconds.
    pub latency: volley_metrics::Histogram,
}

#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    rows: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    memo_rows: AtomicU64,
    nanos: AtomicU64,
    last_nanos: AtomicU64,
    rows_per_call: histogram::Histogram,
    latency_nanos: histogram::Histogram,
    /// Run times in the buckets `/metrics` shows.
    latency: std::sync::Mutex<volley_metrics::Histogram>,
}

impl Model {
    /// Loads the ONNX file at `path` as model `name`.
    ///
    /// # Errors
    /// [`ModelError::Load`] for an unreadable file, a graph the backend cannot run, or a model
    /// whose single input is not an f32 `[rows, k]` tensor or whose outputs are not f32
    /// `[rows]`/`[rows, d]` tensors; [`ModelError::Backend`] when the backend cannot start.
    pub fn load(name: &str, path: &Path, options: &ModelOptions) -> Result<Self, ModelError> {
        let load = |message: String| ModelError::Load {
            model: name.to_string(),
            message,
        };
        let bytes = std::fs::read(path)
            .map_err(|e| load(format!("cannot read '{}': {e}", path.display())))?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let env = backend::environment(options.backend)?;
        let mut builder =
            Session::builder(env).map_err(|e| load(format!("cannot create a session: {e}")))?;
        if let Some(threads) = options.threads {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| load(format!("cannot use {threads} threads: {e}")))?;
        }
        if options.device == Device::Cuda {
            builder = backend::with_cuda(builder, options.backend).map_err(load)?;
        }
        let session = builder.commit_from_memory(&bytes).map_err(|e| {
            load(format!(
                "'{}' is not a model backend '{}' can run: {e}",
                path.display(),
                options.backend.name()
            ))
        })?;
        let inputs = tensors(name, "input", session.inputs())?;
        let input = match inputs.as_slice() {
            [one] if one.shape.len() == 2 && one.shape[1] > 0 => one.clone(),
            [one] => {
                return Err(load(format!(
                    "input '{}' has shape {:?}; predict() feeds a [rows, features] tensor",
                    one.name, one.shape
                )));
            }
            _ => {
                return Err(load(format!(
                    "it takes {} inputs; predict() feeds one [rows, features] tensor",
                    inputs.len()
                )));
            }
        };
        let outputs = tensors(name, "output", session.outputs())?;
        for output in &outputs {
            if !matches!(output.shape.len(), 1 | 2) || output.shape.get(1).is_some_and(|d| *d <= 0)
            {
                return Err(load(format!(
                    "output '{}' has shape {:?}; predict() returns [rows] or [rows, width] tensors",
                    output.name, output.shape
                )));
            }
        }
        let core = Arc::new(Core {
            name: name.to_string(),
            input,
            outputs,
            session: Mutex::new(session),
        });
        let runner = Arc::clone(&core);
        let worker = worker::Worker::start(
            name,
            Arc::new(move |data, rows| runner.run_once(data, rows)),
            options.max_in_flight,
            options.timeout,
        )?;
        Ok(Self {
            name: name.to_string(),
            sha256,
            return_type: return_type(&core.outputs),
            core,
            max_rows: options.max_rows.max(1),
            null_policy: options.null_policy,
            backend: options.backend,
            device: options.device,
            memo: options.memo,
            timeout: options.timeout,
            worker,
            stats: Stats::default(),
        })
    }

    /// The model's name in the pipeline.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most rows one backend run takes (the `max_rows` option).
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// SHA-256 of the file loaded, in hex (for lineage).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What a row with a NULL input gets.
    pub fn null_policy(&self) -> NullPolicy {
        self.null_policy
    }

    /// The backend running the model.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device running the model.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether streaming jobs keep this model's scores in the inference memo.
    pub fn memo(&self) -> bool {
        self.memo
    }

    /// The per-run timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The input tensor.
    pub fn input(&self) -> &TensorInfo {
        &self.core.input
    }

    /// The output tensors.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.core.outputs
    }

    /// How many values each row feeds (the input's second dimension).
    pub fn features(&self) -> usize {
        self.core.features()
    }

    /// Values per row of each output.
    pub fn widths(&self) -> Vec<usize> {
        self.core
            .outputs
            .iter()
            .map(|o| tensor::width(&o.shape))
            .collect()
    }

    /// The Arrow type [`Model::predict`] returns.
    pub fn return_type(&self) -> &DataType {
        &self.return_type
    }

    /// Checks a call with argument types `args` (one per feature, numeric).
    ///
    /// # Errors
    /// [`ModelError::Signature`] naming the model input when the count or a type does not fit.
    pub fn check_arguments(&self, args: &[DataType]) -> Result<(), ModelError> {
        let signature = |message: String| ModelError::Signature {
            model: self.name.clone(),
            message,
        };
        if args.len() != self.features() {
            return Err(signature(format!(
                "input '{}' takes {} values per row (shape {:?}), but predict() passes {}",
                self.core.input.name,
                self.features(),
                self.core.input.shape,
                args.len()
            )));
        }
        if let Some((i, t)) = args
            .iter()
            .enumerate()
            .find(|(_, t)| !(t.is_numeric() || matches!(t, DataType::Null | DataType::Boolean)))
        {
            return Err(signature(format!(
                "input '{}' takes numbers, but value {} of predict() is {t}",
                self.core.input.name,
                i + 1
            )));
        }
        Ok(())
    }

    /// Runs the model over `columns` (one per feature, equal lengths, no nulls): one session
    /// run per `max_rows` rows.
    ///
    /// # Errors
    /// [`ModelError::Signature`] for columns that do not fit, [`ModelError::Run`] when the
    /// backend fails, [`ModelError::Timeout`] when a run takes too long.
    pub fn predict(&self, columns: &[ArrayRef]) -> Result<ArrayRef, ModelError> {
        let rows = columns.first().map_or(0, |c| c.len());
        let packed = self.pack(columns)?;
        let (values, _) = self.score_packed(packed, rows)?;
        self.to_arrow(values, rows)
    }

    /// Checks `columns` against the model's input and packs them into one row-major
    /// `[rows, features]` buffer.
    ///
    /// # Errors
    /// [`ModelError::Signature`] for columns that do not fit.
    pub fn pack(&self, columns: &[ArrayRef]) -> Result<Vec<f32>, ModelError> {
        let types: Vec<DataType> = columns.iter().map(|c| c.data_type().clone()).collect();
        self.check_arguments(&types)?;
        pack_rows(columns).map_err(|message| ModelError::Signature {
            model: self.name.clone(),
            message,
        })
    }

    /// Scores `rows` packed rows: one session run per `max_rows` rows; every output's values,
    /// row-major, and `packed` handed back.
    ///
    /// # Errors
    /// [`ModelError::Run`] when the backend fails, [`ModelError::Timeout`] when a run takes
    /// too long.
    pub fn score_packed(
        &self,
        packed: Vec<f32>,
        rows: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<f32>), ModelError> {
        if rows == 0 {
            return Ok((vec![Vec::new(); self.core.outputs.len()], packed));
        }
        if rows <= self.max_rows {
            // The common case: one run, reading the packed buffer in place.
            return self.run(packed, rows);
        }
        let k = self.features();
        let mut per_output: Vec<Vec<f32>> = vec![Vec::new(); self.core.outputs.len()];
        for (i, chunk) in packed.chunks(self.max_rows * k).enumerate() {
            let chunk_rows = (rows - i * self.max_rows).min(self.max_rows);
            for (all, part) in per_output
                .iter_mut()
                .zip(self.run(chunk.to_vec(), chunk_rows)?.0)
            {
                all.extend(part);
            }
        }
        Ok((per_output, packed))
    }

    /// The Arrow result of `rows` rows from each output's row-major values.
    ///
    /// # Errors
    /// [`ModelError::Run`] when the values do not fit the outputs' shapes.
    pub fn to_arrow(&self, values: Vec<Vec<f32>>, rows: usize) -> Result<ArrayRef, ModelError> {
        tensor::to_arrow(&self.core.outputs, values, rows, &self.return_type).map_err(|message| {
            ModelError::Run {
                model: self.name.clone(),
                rows,
                message,
            }
        })
    }

    /// Counts rows a replayed epoch read from the inference memo.
    pub(crate) fn count_memo_rows(&self, rows: usize) {
        self.stats
            .memo_rows
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// What the model has done since it was loaded (by every pipeline of the process).
    pub fn stats(&self) -> ModelStats {
        let seconds = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e9;
        ModelStats {
            calls: self.stats.calls.load(Ordering::Relaxed),
            rows: self.stats.rows.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            total_seconds: seconds(&self.stats.nanos),
            last_seconds: seconds(&self.stats.last_nanos),
            rows_per_call_p50: self.stats.rows_per_call.quantile(0.5),
            rows_per_call_max: self.stats.rows_per_call.max(),
            latency_p50_seconds: self.stats.latency_nanos.quantile(0.5) as f64 / 1e9,
            latency_p99_seconds: self.stats.latency_nanos.quantile(0.99) as f64 / 1e9,
            timeouts: self.stats.timeouts.load(Ordering::Relaxed),
            memo_rows: self.stats.memo_rows.load(Ordering::Relaxed),
            peak_in_flight: self.worker.peak_in_flight() as u64,
            latency: *self
                .stats
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// One session run over `rows` rows of packed input on the model's thread, counted in
    /// [`Model::stats`].
    fn run(&self, data: Vec<f32>, rows: usize) -> Result<worker::Ran, ModelError> {
        let started = std::time::Instant::now();
        let result = self.worker.run(data, rows);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats.last_nanos.store(nanos, Ordering::Relaxed);
        self.stats.rows_per_call.record(rows as u64);
        self.stats.latency_nanos.record(nanos);
        self.stats
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(nanos as f64 / 1e9);
        match &result {
            Err(ModelError::Timeout { .. }) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
        result
    }
}

impl Core {
    fn features(&self) -> usize {
        usize::try_from(self.input.shape[1]).unwrap_or(0)
    }

    /// One session run over `rows` rows of packed input; every output's values, row-major.
    fn run_once(&self, data: &[f32], rows: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let fail = |message: String| ModelError::Run {
            model: self.name.clone(),
            rows,
            message,
        };
        let input = TensorRef::<f32>::from_array_view(([rows, self.features()], data))
            .map_err(|e| fail(e.to_string()))?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(ort::inputs![self.input.name.as_str() => input])
            .map_err(|e| fail(e.to_string()))?;
        self.outputs
            .iter()
            .map(|o| {
                let (shape, values) = outputs[o.name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| fail(format!("output '{}': {e}", o.name)))?;
                let width: i64 = shape.iter().skip(1).product();
                if shape.first().copied() != i64::try_from(rows).ok()
                    || usize::try_from(width).ok() != Some(tensor::width(&o.shape))
                {
                    return Err(fail(format!(
                        "output '{}' came back with shape {:?} for {rows} rows",
                        o.name, &**shape
                    )));
                }
                Ok(values.to_vec())
            })
            .collect()
    }
}

/// The Arrow type of a model with `outputs`: the one output's type, or a struct of them.
fn return_type(outputs: &[TensorInfo]) -> DataType {
    match outputs {
        [one] => output_type(&one.shape),
        _ => DataType::Struct(
            outputs
                .iter()
                .map(|o| Field::new(o.name.clone(), output_type(&o.shape), true))
                .collect(),
        ),
    }
}

/// The model's inputs or outputs, each an f32 tensor.
fn tensors(
    model: &str,
    kind: &str,
    outlets: &[ort::value::Outlet],
) -> Result<Vec<TensorInfo>, ModelError> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. }
                if *ty == ort::value::TensorElementType::Float32 =>
            {
                Ok(TensorInfo {
                    name: o.name().to_string(),
                    shape: shape.iter().copied().collect(),
                })
            }
            other => Err(ModelError::Load {
                model: model.to_string(),
                message: format!(
                    "{kind} '{}' is {other}; predict() handles f32 tensors",
                    o.name()
                ),
            }),
        })
        .collect()
}

#[cfg(test)]
mod memo_tests;
#[cfg(test)]
mod predict_tests;
#[cfg(test)]
mod tests;
