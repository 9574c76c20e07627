//! A pipeline's models: loaded once per process and shared by every job that runs it, their
//! lineage handed to sinks, and the rows `predict()` left out turned into dead letters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field};
use volley_connectors::ModelLineage;
use volley_connectors::dead_letter::DeadLetterBatch;
use volley_sql::{ModelDecl, Pipeline, SqlError};
use volley_udfs::model::{Model, ModelSet};

use crate::error::{EngineError, Result};
use crate::late_letters::EPOCH_ROW;

/// Models loaded so far in this process, by what was declared (name, file, options).
static LOADED: Mutex<Vec<(String, Arc<Model>)>> = Mutex::new(Vec::new());

/// The key a declaration is loaded under: the same declaration loads once per process.
fn key(decl: &ModelDecl) -> String {
    let path =
        std::fs::canonicalize(&decl.location).unwrap_or_else(|_| PathBuf::from(&decl.location));
    format!("{}|{}|{:?}", decl.name, path.display(), decl.options)
}

/// Loads every model `pipeline` declares (each once per process) into a fresh [`ModelSet`].
///
/// # Errors
/// A model that cannot be loaded, naming the model and its declaration.
pub fn load_models(pipeline: &Pipeline) -> Result<Arc<ModelSet>> {
    let mut models = Vec::with_capacity(pipeline.models.len());
    for decl in &pipeline.models {
        let key = key(decl);
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let model = match loaded.iter().find(|(k, _)| *k == key) {
            Some((_, model)) => Arc::clone(model),
            None => {
                let model = Model::load(
                    &decl.name,
                    std::path::Path::new(&decl.location),
                    &decl.options,
                )
                .map_err(|e| SqlError::Plan {
                    at: decl.at,
                    message: e.to_string(),
                })?;
                tracing::info!(
                    model = %decl.name,
                    sha256 = model.sha256(),
                    backend = model.backend().name(),
                    device = model.device().name(),
                    "model loaded"
                );
                let model = Arc::new(model);
                loaded.push((key, Arc::clone(&model)));
                model
            }
        };
        models.push(model);
    }
    Ok(Arc::new(ModelSet::new(models)))
}

/// The lineage of the models named `names` (each once, by name).
pub fn lineage(models: &ModelSet, names: impl IntoIterator<Item = String>) -> Vec<ModelLineage> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|n| models.get(n))
        .map(|m| ModelLineage {
            name: m.name().to_string(),
            sha256: m.sha256().to_string(),
        })
        .collect()
}

/// The dead-letter source name of a model's letters.
pub fn letter_source(model: &str) -> String {
    format!("model_{model}")
}

/// The column naming the source table a model's left-out row was read from.
pub const SOURCE_TABLE: &str = "_source_table";

/// Rows `predict()` left out since the last call, as dead letters by letter source: the
/// call's inputs and, where the call was traced to a source, [`SOURCE_TABLE`] and
/// [`EPOCH_ROW`] (with the letter's epoch, the position that reads the record again).
///
/// # Errors
/// [`EngineError::Internal`] if the columns do not form a batch (a bug).
pub fn take_letters(models: &ModelSet) -> Result<BTreeMap<String, Vec<DeadLetterBatch>>> {
    let mut letters: BTreeMap<String, Vec<DeadLetterBatch>> = BTreeMap::new();
    for rejected in models.take_rejected() {
        let source = letter_source(&rejected.model);
        let rows = match rejected.positions {
            Some((table, at)) => with_positions(rejected.rows, &table, at).map_err(|e| {
                EngineError::Internal(format!("building the dead letters of {source}: {e}"))
            })?,
            None => rejected.rows,
        };
        letters
            .entry(source.clone())
            .or_default()
            .push(DeadLetterBatch {
                source,
                reason: rejected.reason,
                rows,
            });
    }
    Ok(letters)
}

/// `rows` with the source table and each row's position appended (names the call's own
/// arguments already use are not repeated).
fn with_positions(
    rows: RecordBatch,
    table: &str,
    at: UInt64Array,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let tables: ArrayRef = Arc::new(StringArray::from(vec![table; rows.num_rows()]));
    let at: ArrayRef = Arc::new(at);
    crate::late_letters::with_columns(
        rows,
        [
            (Field::new(SOURCE_TABLE, DataType::Utf8, false), tables),
            (Field::new(EPOCH_ROW, DataType::UInt64, false), at),
        ],
    )
}

/// Where dead letters go, by letter source: each table's `dead_letter` option (for rows its
/// reader rejects or its windows receive late) and each model's (for rows `predict()` leaves
/// out, under [`letter_source`]).
pub fn letter_destinations(pipeline: &Pipeline) -> BTreeMap<String, String> {
    let tables = pipeline.tables.iter().filter_map(|t| {
        t.options
            .get("dead_letter")
            .map(|d| (t.name.clone(), d.to_string()))
    });
    let models = pipeline
        .models
        .iter()
        .map(|m| (letter_source(&m.name), m.dead_letter_destination()));
    tables.chain(models).collect()
}

/// The destination of `source`'s dead letters: as configured, or `.volley/dead_letters/<source>`.
pub fn destination(destinations: &BTreeMap<String, String>, source: &str) -> String {
    destinations
        .get(source)
        .cloned()
        .unwrap_or_else(|| format!(".volley/dead_letters/{source}"))
}
