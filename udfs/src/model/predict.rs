//! `predict('model', x1, x2, …)`: a declared ONNX model as a SQL function over whole batches.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use super::isolate::score_isolating;
use super::memo::{MemoBatch, MemoIndex};
use super::{Model, ModelError};

/// The function's SQL name.
pub const PREDICT: &str = "predict";

/// Rows a model call left out (a NULL input, or rows the model failed on), for dead letters.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The model.
    pub model: String,
    /// Why the rows were left out.
    pub reason: String,
    /// The rows' inputs, one column per `predict()` argument after the model name.
    pub rows: RecordBatch,
    /// Where the rows came from, when the call was traced to a source: the source table and
    /// each row's index in the epoch's input from it.
    pub positions: Option<(String, UInt64Array)>,
}

/// The models a pipeline declares, by name, the rows their calls left out so far, and the
/// inference memo of the epoch running.
#[derive(Debug, Default)]
pub struct ModelSet {
    models: BTreeMap<String, Arc<Model>>,
    rejected: Mutex<Vec<Rejected>>,
    epoch: Mutex<EpochMemo>,
}

/// The memo of the epoch running: what it records, and what a replay reads.
#[derive(Debug, Default)]
struct EpochMemo {
    epoch: u64,
    record: bool,
    /// Some row was scored by a model (not read from the memo) this epoch.
    fresh: bool,
    recorded: BTreeMap<String, MemoBatch>,
    replay: BTreeMap<String, Arc<MemoIndex>>,
}

impl ModelSet {
    /// A set of loaded models (keyed by their names).
    pub fn new(models: impl IntoIterator<Item = Arc<Model>>) -> Self {
        Self {
            models: models
                .into_iter()
                .map(|m| (m.name().to_string(), m))
                .collect(),
            rejected: Mutex::new(Vec::new()),
            epoch: Mutex::new(EpochMemo::default()),
        }
    }

    /// Starts epoch `epoch`: with `record`, the scores of models whose `memo` option is on are
    /// kept for [`ModelSet::finish_epoch`]; `replay` holds the memos an earlier run of the
    /// same epoch wrote, whose rows are read instead of scored. A memo written by another
    /// model file (another SHA-256) or for a model the pipeline no longer declares is not
    /// used: it is returned, so the caller can say so.
    pub fn begin_epoch(&self, epoch: u64, record: bool, replay: Vec<MemoBatch>) -> Vec<MemoBatch> {
        let mut refused = Vec::new();
        let mut indexed = BTreeMap::new();
        for memo in replay {
            match self.models.get(&memo.model) {
                Some(m)
                    if m.memo()
                        && m.sha256() == memo.sha256
                        && m.features() == memo.features
                        && m.widths() == memo.widths =>
                {
                    indexed.insert(memo.model.clone(), Arc::new(MemoIndex::new(memo)));
                }
                _ => refused.push(memo),
            }
        }
        *lock(&self.epoch) = EpochMemo {
            epoch,
            record,
            fresh: false,
            recorded: BTreeMap::new(),
            replay: indexed,
        };
        refused
    }

    /// Ends the epoch: the scores it recorded, one memo per model that scored rows; nothing
    /// when every row was read from the memo of an earlier run (which holds them already).
    pub fn finish_epoch(&self) -> Vec<MemoBatch> {
        let mut state = lock(&self.epoch);
        state.replay.clear();
        let recorded = std::mem::take(&mut state.recorded);
        if !std::mem::take(&mut state.fresh) {
            return Vec::new();
        }
        recorded.into_values().filter(|m| m.rows() > 0).collect()
    }

    /// Scores `part` (columns without nulls) with `model` for the call at `site`: rows the
    /// epoch's replay memo holds are read from it, the others run on the model; with the memo
    /// recording, every row's scores are kept for the epoch's memo.
    fn score(&self, model: &Model, site: &str, part: &[ArrayRef]) -> Result<ArrayRef, ModelError> {
        let rows = part.first().map_or(0, |c| c.len());
        let packed = model.pack(part)?;
        let (epoch, record, replay) = {
            let state = lock(&self.epoch);
            let on = model.memo();
            (
                state.epoch,
                on && state.record,
                state.replay.get(model.name()).filter(|_| on).cloned(),
            )
        };
        let values = match replay {
            None if record => {
                let (values, packed) = model.score_packed(packed, rows)?;
                call_log(model.name(), epoch, rows);
                self.record(model, site, &packed, &values, rows > 0);
                values
            }
            None => {
                let (values, _) = model.score_packed(packed, rows)?;
                call_log(model.name(), epoch, rows);
                values
            }
            Some(index) => {
                let (values, fresh) = replay_rows(model, &index, &packed, rows, epoch)?;
                if record {
                    self.record(model, site, &packed, &values, fresh > 0);
                }
                values
            }
        };
        model.to_arrow(values, rows)
    }

    fn record(&self, model: &Model, site: &str, packed: &[f32], values: &[Vec<f32>], fresh: bool) {
        let mut state = lock(&self.epoch);
        state.fresh |= fresh;
        state
            .recorded
            .entry(model.name().to_string())
            .or_insert_with(|| {
                MemoBatch::new(
                    model.name(),
                    model.sha256(),
                    model.features(),
                    model.widths(),
                )
            })
            .append(site, packed, values);
    }

    /// The model named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// Every model, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    /// Takes the rows left out since the last call.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        std::mem::take(
            &mut *self
                .rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn reject(&self, rejected: Rejected) {
        lock(&self.rejected).push(rejected);
    }

    fn names(&self) -> String {
        if self.models.is_empty() {
            "none is declared".into()
        } else {
            self.models.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The `predict('model', x1, …, xk)` scalar UDF over a [`ModelSet`].
///
/// * The first argument is a string literal naming a declared model; the others are numeric
///   columns or values, one per feature of the model's input (`[rows, k]`). Arity and types
///   are checked when the query is planned, with errors naming the model input.
/// * The result is `FLOAT` for an output of one value per row, a fixed-size list of `FLOAT`
///   for wider outputs, and a struct with one field per output when the model has several.
/// * A row with a NULL input gets NULL (and goes to dead letters, by the model's
///   `null_policy`); a call that fails is retried once, then bisected so only the rows that
///   fail on their own get NULL and go to dead letters with the model's error.
///
/// [`PredictFunc::traced`] is the same function taking one more, last, argument: each row's
/// position in its source (a `UInt64` column), which the rows it leaves out carry to dead
/// letters. Streaming plans call it where a row can be traced to its source record.
#[derive(Debug)]
pub struct PredictFunc {
    models: Arc<ModelSet>,
    signature: Signature,
    /// The source table whose positions the last argument holds (traced calls only).
    traced: Option<String>,
}

impl PredictFunc {
    /// The function over `models`.
    pub fn new(models: Arc<ModelSet>) -> Self {
        Self {
            models,
            // Stable, not immutable: a call on literals is not run while planning.
            signature: Signature::variadic_any(Volatility::Stable),
            traced: None,
        }
    }

    /// The function whose last argument is each row's position in `source`.
    pub fn traced(&self, source: &str) -> Self {
        Self {
            models: Arc::clone(&self.models),
            signature: self.signature.clone(),
            traced: Some(source.to_string()),
        }
    }

    /// Whether the last argument is each row's position in a source.
    pub fn is_traced(&self) -> bool {
        self.traced.is_some()
    }

    /// The arguments that are the call's own: all but a traced call's positions.
    fn own<'a, T>(&self, args: &'a [T]) -> &'a [T] {
        match self.traced {
            Some(_) => &args[..args.len().saturating_sub(1)],
            None => args,
        }
    }

    fn model(&self, name: &str) -> Result<&Arc<Model>> {
        self.models.get(name).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "predict(): no model '{name}' (declared models: {}); declare it with CREATE MODEL {name} STORED AS ONNX LOCATION '<file>.onnx'",
                self.models.names()
            ))
        })
    }
}

impl PartialEq for PredictFunc {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.models, &other.models) && self.traced == other.traced
    }
}

impl Eq for PredictFunc {}

impl Hash for PredictFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        PREDICT.hash(state);
        self.models.models.keys().for_each(|k| k.hash(state));
        self.traced.hash(state);
    }
}

/// The model name in a call's first argument, which must be a string literal.
fn model_name(first: Option<&ScalarValue>) -> Result<&str> {
    match first {
        Some(
            ScalarValue::Utf8(Some(name))
            | ScalarValue::LargeUtf8(Some(name))
            | ScalarValue::Utf8View(Some(name)),
        ) => Ok(name),
        _ => plan_err!(
            "predict(): the first argument must name a model as a string literal, such as predict('fraud', x1, x2)"
        ),
    }
}

impl ScalarUDFImpl for PredictFunc {
    fn name(&self) -> &str {
        PREDICT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!(
            "predict(): the return type depends on the model named; it is planned from the arguments"
        )
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = model_name(args.scalar_arguments.first().copied().flatten())?;
        let model = self.model(name)?;
        let types: Vec<DataType> = self
            .own(args.arg_fields)
            .iter()
            .skip(1)
            .map(|f| f.data_type().clone())
            .collect();
        model
            .check_arguments(&types)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(Field::new(
            PREDICT,
            model.return_type().clone(),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => model_name(Some(s))?,
            _ => model_name(None)?,
        };
        let model = self.model(name)?;
        let rows = args.number_rows;
        let columns: Vec<ArrayRef> = self
            .own(&args.args)
            .iter()
            .skip(1)
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let positions = match (&self.traced, args.args.last()) {
            (Some(source), Some(at)) => {
                let at = at.to_array(rows)?;
                let at = at
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .cloned()
                    .ok_or_else(|| {
                        exec_datafusion_err!("predict(): row positions are not UInt64")
                    })?;
                Some((source.as_str(), at))
            }
            _ => None,
        };
        let fail = |e: ModelError| exec_datafusion_err!("{e}");
        let arg_fields = self.own(&args.arg_fields);
        let site = call_site(name, arg_fields);
        let scored = score_isolating(
            name,
            model.null_policy(),
            &columns,
            model.return_type(),
            &|part| self.models.score(model, &site, part),
        )
        .map_err(fail)?;
        if !scored.dead_letters.is_empty() {
            let schema = Arc::new(Schema::new(unique_fields(
                arg_fields.get(1..).unwrap_or_default(),
            )));
            for left_out in scored.dead_letters {
                let indices = UInt32Array::from(left_out.rows);
                let picked = columns
                    .iter()
                    .map(|c| take(c, &indices, None))
                    .collect::<Result<Vec<_>, _>>()?;
                let positions = match &positions {
                    Some((source, at)) => {
                        let at = take(at, &indices, None)?;
                        let at = at.as_any().downcast_ref::<UInt64Array>().cloned();
                        at.map(|at| (source.to_string(), at))
                    }
                    None => None,
                };
                self.models.reject(Rejected {
                    model: name.to_string(),
                    reason: left_out.reason,
                    rows: RecordBatch::try_new(Arc::clone(&schema), picked)?,
                    positions,
                });
            }
        }
        Ok(ColumnarValue::Array(scored.values))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A call's site: the model and the names of the argument expressions.
fn call_site(model: &str, fields: &[FieldRef]) -> String {
    let args: Vec<&str> = fields.iter().skip(1).map(|f| f.name().as_str()).collect();
    format!("predict('{model}', {})", args.join(", "))
}

/// The scores of `rows` packed rows of a replayed epoch: each row the memo holds is read
/// from it, the others are scored by the model (and counted as calls). Also returns how many
/// were scored.
fn replay_rows(
    model: &Model,
    index: &MemoIndex,
    packed: &[f32],
    rows: usize,
    epoch: u64,
) -> Result<(Vec<Vec<f32>>, usize), ModelError> {
    let k = model.features().max(1);
    let found: Vec<Option<usize>> = packed.chunks_exact(k).map(|r| index.find(r)).collect();
    let missing: Vec<usize> = (0..rows).filter(|&i| found[i].is_none()).collect();
    let fresh = if missing.is_empty() {
        Vec::new()
    } else {
        let mut input = Vec::with_capacity(missing.len() * k);
        for &i in &missing {
            input.extend_from_slice(&packed[i * k..(i + 1) * k]);
        }
        let (values, _) = model.score_packed(input, missing.len())?;
        call_log(model.name(), epoch, missing.len());
        values
    };
    model.count_memo_rows(rows - missing.len());
    let widths = model.widths();
    let mut next_fresh = 0;
    let mut values: Vec<Vec<f32>> = widths
        .iter()
        .map(|w| Vec::with_capacity(rows * w))
        .collect();
    for at in &found {
        match at {
            Some(at) => {
                for (o, out) in values.iter_mut().enumerate() {
                    out.extend_from_slice(index.output(o, *at));
                }
            }
            None => {
                for ((out, w), part) in values.iter_mut().zip(&widths).zip(&fresh) {
                    out.extend_from_slice(&part[next_fresh * w..(next_fresh + 1) * w]);
                }
                next_fresh += 1;
            }
        }
    }
    Ok((values, missing.len()))
}

/// With `VOLLEY_MODEL_CALL_LOG` set to a file, appends one line per scoring (`model epoch
/// rows pid`): an audit of what a model was run on, across restarts of the process.
fn call_log(model: &str, epoch: u64, rows: usize) {
    use std::io::Write;
    static LOG: std::sync::OnceLock<Option<Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("VOLLEY_MODEL_CALL_LOG")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = log.as_ref().filter(|_| rows > 0) {
        // One write per line: lines from several processes never interleave.
        let _ = lock(file)
            .write_all(format!("{model} {epoch} {rows} {}\n", std::process::id()).as_bytes());
    }
}

/// Argument fields renamed so no two share a name (a dead-letter row is a JSON object).
fn unique_fields(fields: &[FieldRef]) -> Vec<Field> {
    let mut seen: Vec<String> = Vec::with_capacity(fields.len());
    fields
        .iter()
        .map(|f| {
            let mut name = f.name().clone();
            let mut n = 1;
            while seen.contains(&name) {
                n += 1;
                name = format!("{}_{n}", f.name());
            }
            seen.push(name.clone());
            Field::new(name, f.data_type().clone(), true)
        })
        .collect()
}

/// `predict()` over `models`, as a UDF to register.
pub fn predict_udf(models: Arc<ModelSet>) -> ScalarUDF {
    ScalarUDF::new_from_impl(PredictFunc::new(models))
}

/// The models a logical plan calls through `predict()`, by name, sorted, each once.
pub fn models_called(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    let _ = plan.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.name() == PREDICT
                    && let Some(Expr::Literal(value, _)) = f.args.first()
                    && let Ok(name) = model_name(Some(value))
                    && !names.iter().any(|n: &String| n == name)
                {
                    names.push(name.to_string());
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    names.sort();
    names
}
