//! Runs one INSERT's streaming plan, epoch by epoch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{collect, collect_partitioned};
use volley_sql::stream::{QueryPlan, QueryShape};

use crate::aggregate::{AggregateOutput, AggregateState};
use crate::error::{EngineError, Result};

/// What one query produced in an epoch.
#[derive(Debug, Default)]
pub struct QueryEpoch {
    /// Rows for the sink.
    pub rows: Vec<RecordBatch>,
    /// Source records that arrived after their window was emitted (every column).
    pub late: Vec<volley_sql::stream::LateRows>,
    /// Windows emitted.
    pub windows_emitted: usize,
    /// Groups forgotten by `state_ttl`.
    pub groups_expired: usize,
    /// Windows emitted again, corrected by late rows within `allowed_lateness`.
    pub windows_corrected: usize,
}

/// One INSERT: its plan and, for aggregates, its state.
#[derive(Debug)]
pub struct QueryRunner {
    plan: QueryPlan,
    state: Option<AggregateState>,
    task_ctx: Arc<TaskContext>,
}

impl QueryRunner {
    /// A runner for `plan`, executing in `task_ctx`.
    pub fn new(plan: QueryPlan, task_ctx: Arc<TaskContext>) -> Self {
        let state = match &plan.shape {
            QueryShape::Aggregate(agg) => {
                Some(AggregateState::new((**agg).clone(), Arc::clone(&task_ctx)))
            }
            QueryShape::Stateless { .. } => None,
        };
        Self {
            plan,
            state,
            task_ctx,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &QueryPlan {
        &self.plan
    }

    /// What the query's state means, as text: restoring a checkpoint into a query whose shape
    /// differs is refused. Stateless queries have no state, so any change to them is compatible.
    pub fn shape(&self) -> String {
        match &self.plan.shape {
            QueryShape::Stateless { .. } => "stateless".to_string(),
            QueryShape::Aggregate(agg) => {
                let state: Vec<String> = agg
                    .state_schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect();
                let window = agg.window.as_ref().map_or_else(
                    || "keyed".to_string(),
                    |w| format!("window {} wide", w.size_text()),
                );
                format!("{window}; state [{}]", state.join(", "))
            }
        }
    }

    /// The aggregate's state rows, their schema and the emission frontier (None: stateless).
    pub fn snapshot(&self) -> Option<(arrow::datatypes::SchemaRef, Vec<RecordBatch>, Option<i64>)> {
        let state = self.state.as_ref()?;
        let (rows, emitted_upto) = state.snapshot();
        Some((state.state_schema(), rows, emitted_upto))
    }

    /// The `state_ttl` stamps of a keyed aggregate (None: no `state_ttl`).
    ///
    /// # Errors
    /// Arrow failures.
    pub fn stamps(&self) -> Result<Option<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)>> {
        match &self.state {
            Some(state) => state.stamps(),
            None => Ok(None),
        }
    }

    /// Loads checkpointed `state_ttl` stamps (after [`QueryRunner::restore`]); groups without
    /// one are stamped with `watermark` (nanoseconds), when it is known.
    ///
    /// # Errors
    /// Stamps that do not fit the query.
    pub fn restore_stamps(&mut self, stamps: &[RecordBatch], watermark: Option<i64>) -> Result<()> {
        match self.state.as_mut() {
            Some(state) => state.restore_stamps(stamps, watermark),
            None => Ok(()),
        }
    }

    /// Loads checkpointed state (see [`QueryRunner::snapshot`]).
    ///
    /// # Errors
    /// State that does not fit this query.
    pub async fn restore(
        &mut self,
        rows: Vec<RecordBatch>,
        emitted_upto: Option<i64>,
    ) -> Result<()> {
        match self.state.as_mut() {
            Some(state) => state.restore(rows, emitted_upto).await,
            None if rows.is_empty() => Ok(()),
            None => Err(EngineError::Checkpoint(format!(
                "INSERT INTO {} is stateless but its checkpoint holds state",
                self.plan.target
            ))),
        }
    }

    /// Open windows (0 for stateless queries).
    pub fn open_windows(&self) -> usize {
        self.state.as_ref().map_or(0, AggregateState::open_windows)
    }

    /// State rows held: partial-aggregate rows across windows and shards (0 for stateless
    /// queries). One per open group once compacted.
    pub fn state_rows(&self) -> usize {
        self.state.as_ref().map_or(0, AggregateState::state_rows)
    }

    /// Processes the rows now in the source slots.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn process_epoch(&mut self) -> Result<QueryEpoch> {
        match &self.plan.shape {
            QueryShape::Stateless { plan } => {
                // Partitions are contiguous runs of the input: concatenated in order, the rows
                // keep the input's order.
                let rows = collect_partitioned(Arc::clone(plan), Arc::clone(&self.task_ctx))
                    .await
                    .map_err(EngineError::exec(format!(
                        "INSERT INTO {}",
                        self.plan.target
                    )))?;
                Ok(QueryEpoch {
                    rows: non_empty(rows.into_iter().flatten().collect()),
                    ..QueryEpoch::default()
                })
            }
            QueryShape::Aggregate(_) => {
                let Some(state) = self.state.as_mut() else {
                    return Err(EngineError::Internal(
                        "aggregate query without state".into(),
                    ));
                };
                let out = state.process_epoch().await?;
                let late = state
                    .plan()
                    .window
                    .as_ref()
                    .map(|w| w.gate.take_late())
                    .unwrap_or_default();
                let mut epoch = self.post(out).await?;
                epoch.late = late;
                Ok(epoch)
            }
        }
    }

    /// Emits windows closed by the sources' watermarks (nanoseconds; `i64::MAX` = input ended).
    ///
    /// # Errors
    /// Execution failures.
    pub async fn advance(
        &mut self,
        watermarks: &HashMap<String, Option<i64>>,
    ) -> Result<QueryEpoch> {
        let Some(state) = self.state.as_mut() else {
            return Ok(QueryEpoch::default());
        };
        let Some(window) = &state.plan().window else {
            // Keyed: `state_ttl` forgets groups by the watermark of every source read.
            let Some(wm) = min_watermark(&self.plan.sources, watermarks) else {
                return Ok(QueryEpoch::default());
            };
            return Ok(QueryEpoch {
                groups_expired: state.expire(wm)?,
                ..QueryEpoch::default()
            });
        };
        let Some(wm_nanos) = min_watermark(&window.sources, watermarks) else {
            return Ok(QueryEpoch::default());
        };
        let wm = if wm_nanos == i64::MAX {
            i64::MAX
        } else {
            wm_nanos.div_euclid(window.nanos_per_unit())
        };
        let out = state.advance_watermark(wm).await?;
        self.post(out).await
    }

    /// End of input: emits all remaining windows.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn flush(&mut self) -> Result<QueryEpoch> {
        let Some(state) = self.state.as_mut() else {
            return Ok(QueryEpoch::default());
        };
        let out = state.flush().await?;
        self.post(out).await
    }

    /// Runs the post-aggregate segment over finalised rows.
    async fn post(&self, out: AggregateOutput) -> Result<QueryEpoch> {
        let QueryShape::Aggregate(agg) = &self.plan.shape else {
            return Ok(QueryEpoch::default());
        };
        if out.rows.is_empty() {
            return Ok(QueryEpoch {
                windows_emitted: out.windows_emitted,
                windows_corrected: out.windows_corrected,
                ..QueryEpoch::default()
            });
        }
        agg.post_slot.set(out.rows);
        let rows = collect(Arc::clone(&agg.post), Arc::clone(&self.task_ctx)).await;
        agg.post_slot.clear();
        let rows = rows.map_err(EngineError::exec(format!(
            "INSERT INTO {} (after the aggregate)",
            self.plan.target
        )))?;
        Ok(QueryEpoch {
            rows: non_empty(rows),
            windows_emitted: out.windows_emitted,
            windows_corrected: out.windows_corrected,
            ..QueryEpoch::default()
        })
    }
}

/// The smallest watermark of `sources` (nanoseconds); `None` while any is unknown.
pub fn min_watermark(sources: &[String], watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
    let mut min: Option<i64> = None;
    for source in sources {
        let wm = watermarks.get(source).copied().flatten()?;
        min = Some(min.map_or(wm, |m| m.min(wm)));
    }
    min
}

fn non_empty(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}
