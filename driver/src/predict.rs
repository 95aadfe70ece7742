//! `canopy-driver predict`: scores a file with a saved model, through the same feature
//! pipeline, and writes one row per input row: file row number, predicted class index and
//! name, and the actual class when the file has the label.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use canopy_proto::partition::FeatureColumns;
use canopy_tree::{ClassificationMetrics, ConfusionMatrix};
use datafusion::parquet::arrow::ArrowWriter;

use crate::data::features::{Chunk, Pipeline, Values};
use crate::data::featurized;
use crate::data::scan::Source;
use crate::error::{DriverError, Result};
use crate::model::ModelFile;
use crate::output::write_atomically;

pub struct Scored {
    pub rows: usize,
    pub metrics: Option<ClassificationMetrics>,
}

pub async fn predict(model_path: &Path, data: &Path, out: &Path) -> Result<Scored> {
    let scorer = ModelFile::load(model_path)?;
    let model = &scorer.file;
    let is_csv = match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => true,
        Some("parquet") => false,
        _ => return Err(DriverError::Write { path: out.to_path_buf(), reason: "output must end in .csv or .parquet".into() }),
    };
    let (rows, labels, columns) = featurize(data, model).await?;
    let predictions = scorer.predict(&columns)?;
    let names = &model.encoding.class_names;
    let class_name = |c: u32| names.get(c as usize).cloned().unwrap_or_default();
    let mut fields = vec![
        Field::new("row", DataType::UInt64, false),
        Field::new("prediction", DataType::UInt32, false),
        Field::new("predicted_class", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(rows)),
        Arc::new(UInt32Array::from(predictions.clone())),
        Arc::new(StringArray::from_iter_values(predictions.iter().map(|&c| class_name(c)))),
    ];
    let metrics = labels.as_ref().map(|labels| {
        let mut cm = ConfusionMatrix::new(names.len());
        labels.iter().zip(&predictions).for_each(|(&a, &p)| cm.add(usize::from(a), p as usize));
        ClassificationMetrics::from_confusion(&cm)
    });
    if let Some(labels) = &labels {
        fields.push(Field::new("label", DataType::UInt32, false));
        fields.push(Field::new("actual_class", DataType::Utf8, false));
        columns.push(Arc::new(UInt32Array::from_iter_values(labels.iter().map(|&l| u32::from(l)))));
        columns.push(Arc::new(StringArray::from_iter_values(labels.iter().map(|&l| class_name(u32::from(l))))));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| DriverError::Internal(e.to_string()))?;
    write_atomically(out, |file| {
        if is_csv {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(file);
            writer.write(&batch).map_err(|e| e.to_string())
        } else {
            let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
            writer.close().map(|_| ()).map_err(|e| e.to_string())
        }
    })?;
    Ok(Scored { rows: predictions.len(), metrics })
}

/// Row numbers, labels (when the file has them) and raw feature values of every row of `data`
/// with a label, or of every row when it has none, through the model's feature pipeline.
async fn featurize(data: &Path, model: &ModelFile) -> Result<(Vec<u64>, Option<Vec<u8>>, Vec<Vec<f64>>)> {
    let source = Source::open(data).await?;
    let pipeline = Pipeline::new(data, &source.schema, &model.features, false)?;
    let units = featurized(&source, &pipeline, "reading", |features| {
        let chunks = model.encoding.encode(&pipeline, &features, Values::Raw, 1, |_| 0, true)?;
        Ok((features.rows_read, chunks))
    })
    .await?;
    if units.iter().all(|(read, _)| *read == 0) {
        return Err(DriverError::EmptyDataset { path: data.to_path_buf(), stage: "(the file has no data rows)" });
    }
    let rows = units.iter().flat_map(|(_, chunks)| chunks).map(|c| c.rows).sum();
    let mut all = Chunk::with_capacity(Values::Raw, model.features.feature_names().len(), rows, true);
    units.into_iter().flat_map(|(_, chunks)| chunks).for_each(|chunk| all.append(chunk));
    if pipeline.has_label() && all.rows == 0 {
        return Err(DriverError::AllLabelsNull { path: data.to_path_buf(), column: model.features.label.column.clone() });
    }
    let Chunk { columns, labels, row_numbers, .. } = all;
    let columns = match columns {
        FeatureColumns::Raw(columns) => columns,
        FeatureColumns::Binned(_) => return Err(DriverError::Internal("scoring needs raw values".into())),
    };
    Ok((row_numbers, pipeline.has_label().then_some(labels), columns))
}
