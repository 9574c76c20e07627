//! Query execution: every INSERT over the epoch's input, then watermarks advanced and closed
//! windows emitted.

use std::collections::{BTreeMap, HashMap};

use arrow::record_batch::RecordBatch;
use volley_connectors::dead_letter::DeadLetterBatch;

use super::ingest::Fresh;
use super::{RunSummary, StreamJob};
use crate::error::Result;

impl StreamJob {
    /// Runs every INSERT: over the input when it reads a source with new rows, then up to
    /// the watermarks, then (once every source ended) to the end. Returns the rows per sink;
    /// late rows and rows `predict()` left out become dead letters.
    pub(super) async fn execute(
        &mut self,
        fresh: &Fresh,
        all_done: bool,
        summary: &mut RunSummary,
        letters: &mut BTreeMap<String, Vec<DeadLetterBatch>>,
    ) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
        let watermarks: HashMap<String, Option<i64>> = self
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.watermark()))
            .collect();
        let mut outputs: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for (index, query) in self.queries.iter_mut().enumerate() {
            let rows_in: u64 = query
                .plan()
                .sources
                .iter()
                .filter_map(|s| fresh.get(s))
                .sum();
            let parts = query.run_epoch(rows_in > 0, &watermarks, all_done).await?;
            let target = query.plan().target.clone();
            if let Some(reporter) = &mut self.metrics {
                let rows_out = parts
                    .iter()
                    .flat_map(|p| &p.rows)
                    .map(|b| b.num_rows() as u64)
                    .sum();
                reporter.query_rows(index, rows_in, rows_out);
            }
            for part in parts {
                summary.windows_emitted += part.windows_emitted as u64;
                summary.groups_expired += part.groups_expired as u64;
                summary.windows_corrected += part.windows_corrected as u64;
                outputs.entry(target.clone()).or_default().extend(part.rows);
                for late in part.late {
                    summary.late_rows += late.rows.num_rows() as u64;
                    let reason = format!(
                        "late: its window had already been emitted ({}, INSERT INTO {target}, {})",
                        part.late_at,
                        query.plan().at
                    );
                    summary
                        .sources
                        .entry(late.source.clone())
                        .or_default()
                        .found_late(
                            &format!("INSERT INTO {target} ({})", query.plan().at),
                            late.rows.num_rows() as u64,
                            &reason,
                        );
                    letters
                        .entry(late.source.clone())
                        .or_default()
                        .push(crate::late_letters::letter(late, reason)?);
                }
            }
        }
        for source in &self.sources {
            source.slot.clear();
        }
        summary.models = self
            .models
            .iter()
            .map(|m| (m.name().to_string(), m.stats()))
            .collect();
        for (source, batches) in crate::models::take_letters(&self.models)? {
            summary.rejected_by_models += batches
                .iter()
                .map(|b| b.rows.num_rows() as u64)
                .sum::<u64>();
            letters.entry(source).or_default().extend(batches);
        }
        Ok(outputs)
    }
}
