//! The inference memo: one epoch's model inputs and outputs, kept so that a replayed epoch
//! reads its scores instead of paying for the model again.
//!
//! A memo is per model and epoch. It is keyed by the exact bits of each row's packed `f32`
//! features, not by batch or call: a replayed epoch re-reads the same rows, but its source may
//! hand them out in other batch sizes and its partitions may run on other workers, and a
//! model's output depends only on its input row. Every `predict()` call site of the model
//! shares the memo; the sites are recorded with it, as is the SHA-256 of the model that wrote
//! it, so a changed model never reads another's scores.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};

/// Schema metadata keys of a memo file.
const MODEL: &str = "volley.model";
const SHA256: &str = "volley.sha256";
const SITES: &str = "volley.call_sites";

/// One model's scores of one epoch: each row's packed features and every output's values.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoBatch {
    /// The model's name in the pipeline.
    pub model: String,
    /// SHA-256 of the model file that computed the scores.
    pub sha256: String,
    /// Values per input row.
    pub features: usize,
    /// Values per row of each output.
    pub widths: Vec<usize>,
    /// The `predict()` calls that scored these rows.
    pub sites: BTreeSet<String>,
    /// Row-major inputs, `rows × features`.
    pub inputs: Vec<f32>,
    /// Per output, row-major values, `rows × width`.
    pub outputs: Vec<Vec<f32>>,
}

impl MemoBatch {
    /// An empty memo for a model with these shapes.
    pub fn new(model: &str, sha256: &str, features: usize, widths: Vec<usize>) -> Self {
        Self {
            model: model.to_string(),
            sha256: sha256.to_string(),
            features,
            outputs: vec![Vec::new(); widths.len()],
            widths,
            sites: BTreeSet::new(),
            inputs: Vec::new(),
        }
    }

    /// Rows memoized.
    pub fn rows(&self) -> usize {
        self.inputs.len() / self.features.max(1)
    }

    /// Adds rows scored at `site`.
    pub(super) fn append(&mut self, site: &str, inputs: &[f32], outputs: &[Vec<f32>]) {
        if !self.sites.contains(site) {
            self.sites.insert(site.to_string());
        }
        self.inputs.extend_from_slice(inputs);
        for (all, part) in self.outputs.iter_mut().zip(outputs) {
            all.extend_from_slice(part);
        }
    }

    /// The memo as one Arrow batch: `features` and `output_<i>` fixed-size lists of floats,
    /// with the model, its SHA-256 and the call sites in the schema's metadata.
    ///
    /// # Errors
    /// Arrow failures (a bug: the shapes are checked when rows are added).
    pub fn to_record_batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut fields = vec![list_field("features", self.features)];
        let mut columns = vec![list(&self.inputs, self.features)?];
        for (i, (values, width)) in self.outputs.iter().zip(&self.widths).enumerate() {
            fields.push(list_field(&format!("output_{i}"), *width));
            columns.push(list(values, *width)?);
        }
        let sites: Vec<&str> = self.sites.iter().map(String::as_str).collect();
        let metadata = HashMap::from([
            (MODEL.to_string(), self.model.clone()),
            (SHA256.to_string(), self.sha256.clone()),
            (SITES.to_string(), sites.join("\n")),
        ]);
        RecordBatch::try_new(
            Arc::new(Schema::new(fields).with_metadata(metadata)),
            columns,
        )
    }

    /// Reads a memo back from the batches of one memo file.
    ///
    /// # Errors
    /// A file that is not a memo (missing metadata or columns of another shape).
    pub fn from_record_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Self, String> {
        let meta = |key: &str| {
            schema
                .metadata()
                .get(key)
                .cloned()
                .ok_or_else(|| format!("it has no '{key}'"))
        };
        let widths: Vec<usize> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::FixedSizeList(item, w) if item.data_type() == &DataType::Float32 => {
                    usize::try_from(*w).map_err(|e| e.to_string())
                }
                other => Err(format!("column '{}' is {other}", f.name())),
            })
            .collect::<Result<_, _>>()?;
        let Some((&features, outputs)) = widths.split_first() else {
            return Err("it has no columns".into());
        };
        let mut memo = MemoBatch::new(&meta(MODEL)?, &meta(SHA256)?, features, outputs.to_vec());
        memo.sites = meta(SITES)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        for batch in batches {
            for (i, column) in batch.columns().iter().enumerate() {
                let values = column
                    .as_fixed_size_list_opt()
                    .map(|l| l.values().as_primitive::<Float32Type>())
                    .ok_or_else(|| format!("column {i} is not a list of floats"))?;
                let target = if i == 0 {
                    &mut memo.inputs
                } else {
                    &mut memo.outputs[i - 1]
                };
                target.extend_from_slice(values.values());
            }
        }
        let rows = memo.rows();
        if memo.inputs.len() != rows * features
            || memo
                .outputs
                .iter()
                .zip(&memo.widths)
                .any(|(o, w)| o.len() != rows * w)
        {
            return Err("its columns have different lengths".into());
        }
        Ok(memo)
    }
}

fn list_field(name: &str, width: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            i32::try_from(width).unwrap_or(i32::MAX),
        ),
        false,
    )
}

fn list(values: &[f32], width: usize) -> Result<ArrayRef, arrow::error::ArrowError> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let width = i32::try_from(width)
        .map_err(|e| arrow::error::ArrowError::InvalidArgumentError(e.to_string()))?;
    Ok(Arc::new(FixedSizeListArray::try_new(
        item,
        width,
        Arc::new(Float32Array::from(values.to_vec())),
        None,
    )?))
}

/// A memo read back for a replayed epoch, indexed by the bits of each input row.
#[derive(Debug)]
pub(super) struct MemoIndex {
    memo: MemoBatch,
    rows: HashMap<Box<[u32]>, u32>,
}

impl MemoIndex {
    pub(super) fn new(memo: MemoBatch) -> Self {
        let k = memo.features.max(1);
        let rows = memo
            .inputs
            .chunks_exact(k)
            .enumerate()
            .map(|(i, row)| (bits(row), i as u32))
            .collect();
        Self { memo, rows }
    }

    /// The memo row holding `row`'s scores, if it has them.
    pub(super) fn find(&self, row: &[f32]) -> Option<usize> {
        self.rows.get(&bits(row)).map(|i| *i as usize)
    }

    /// Output `o`'s values for memo row `at`.
    pub(super) fn output(&self, o: usize, at: usize) -> &[f32] {
        let w = self.memo.widths[o];
        &self.memo.outputs[o][at * w..(at + 1) * w]
    }
}

/// A row's exact bits (so −0 and 0, and NaN payloads, are told apart).
fn bits(row: &[f32]) -> Box<[u32]> {
    row.iter().map(|v| v.to_bits()).collect()
}

#[cfg(test)]
mod tests {
    use arrow::ipc::reader::FileReader;
    use arrow::ipc::writer::FileWriter;

    use super::*;

    fn sample() -> MemoBatch {
        let mut memo = MemoBatch::new("fraud", "ab12", 2, vec![1, 3]);
        memo.append(
            "predict('fraud', a, b)",
            &[1.0, -0.0, f32::NAN, f32::INFINITY],
            &[vec![0.25, 0.5], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        );
        memo.append(
            "predict('fraud', b, a)",
            &[0.0, 1.0],
            &[vec![0.75], vec![7.0, 8.0, 9.0]],
        );
        memo
    }

    #[test]
    fn a_memo_survives_arrow_ipc() {
        let memo = sample();
        let batch = memo.to_record_batch().unwrap();
        let mut bytes = Vec::new();
        {
            let mut writer = FileWriter::try_new(&mut bytes, &batch.schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
        }
        let reader = FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let schema = reader.schema();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let back = MemoBatch::from_record_batches(&schema, &batches).unwrap();
        assert_eq!(back.rows(), 3);
        assert_eq!(back.sites.len(), 2);
        assert_eq!(back.outputs, memo.outputs);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.inputs), bits(&memo.inputs));
    }

    #[test]
    fn rows_are_found_by_their_exact_bits() {
        let index = MemoIndex::new(sample());
        assert_eq!(index.find(&[f32::NAN, f32::INFINITY]), Some(1));
        assert_eq!(index.output(1, 1), &[4.0, 5.0, 6.0]);
        // 0 and −0 are different rows.
        assert_eq!(index.find(&[0.0, 1.0]), Some(2));
        assert_eq!(index.find(&[-0.0, 1.0]), None);
        assert_eq!(index.find(&[1.0, 0.0]), None);
        assert_eq!(index.output(0, 2), &[0.75]);
    }

    #[test]
    fn a_file_that_is_not_a_memo_is_refused() {
        let schema = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
        assert!(MemoBatch::from_record_batches(&schema, &[]).is_err());
        let batch = sample().to_record_batch().unwrap();
        let bare = batch
            .schema()
            .as_ref()
            .clone()
            .with_metadata(HashMap::new());
        let err = MemoBatch::from_record_batches(&bare, &[batch]).unwrap_err();
        assert!(err.contains("volley.model"), "{err}");
    }
}
