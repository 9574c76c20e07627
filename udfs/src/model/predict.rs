//! `predict('model', x1, x2, …)`: a declared ONNX model as a SQL function over whole batches.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use super::isolate::score_isolating;
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
}

/// The models a pipeline declares, by name, and the rows their calls left out so far.
#[derive(Debug, Default)]
pub struct ModelSet {
    models: BTreeMap<String, Arc<Model>>,
    rejected: Mutex<Vec<Rejected>>,
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
        }
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
        self.rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(rejected);
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
#[derive(Debug)]
pub struct PredictFunc {
    models: Arc<ModelSet>,
    signature: Signature,
}

impl PredictFunc {
    /// The function over `models`.
    pub fn new(models: Arc<ModelSet>) -> Self {
        Self {
            models,
            // Stable, not immutable: a call on literals is not run while planning.
            signature: Signature::variadic_any(Volatility::Stable),
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
        Arc::ptr_eq(&self.models, &other.models)
    }
}

impl Eq for PredictFunc {}

impl Hash for PredictFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        PREDICT.hash(state);
        self.models.models.keys().for_each(|k| k.hash(state));
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
        let types: Vec<DataType> = args
            .arg_fields
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
        let columns: Vec<ArrayRef> = args
            .args
            .iter()
            .skip(1)
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let fail = |e: ModelError| exec_datafusion_err!("{e}");
        let scored = score_isolating(
            name,
            model.null_policy(),
            &columns,
            model.return_type(),
            &|part| model.predict(part),
        )
        .map_err(fail)?;
        if !scored.dead_letters.is_empty() {
            let schema = Arc::new(Schema::new(unique_fields(
                args.arg_fields.get(1..).unwrap_or_default(),
            )));
            for left_out in scored.dead_letters {
                let indices = UInt32Array::from(left_out.rows);
                let picked = columns
                    .iter()
                    .map(|c| take(c, &indices, None))
                    .collect::<Result<Vec<_>, _>>()?;
                self.models.reject(Rejected {
                    model: name.to_string(),
                    reason: left_out.reason,
                    rows: RecordBatch::try_new(Arc::clone(&schema), picked)?,
                });
            }
        }
        Ok(ColumnarValue::Array(scored.values))
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
