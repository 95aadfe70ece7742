//! What the features and the label of an experiment are: read from its experiment file and
//! flags by the driver, saved in model files, and sent to executors that read their own rows.

use serde::{Deserialize, Serialize};

/// Most label buckets: labels travel as one byte, so at most 255 classes.
pub const MAX_LABEL_BUCKETS: usize = 254;

/// How the label is made: numeric values bucketed by `buckets`, or an indexed category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub column: String,
    /// Class i holds values in [buckets[i-1], buckets[i]) (Spark's Bucketizer), with -inf and
    /// +inf implied at the ends. Empty means the column is already categorical.
    #[serde(default)]
    pub buckets: Vec<f64>,
}

/// A column computed by a SQL expression over the input columns (quote mixed-case names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedColumn {
    pub name: String,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSpec {
    pub label: LabelSpec,
    /// Used as they are (cast to double).
    pub numeric: Vec<String>,
    /// Indexed by descending frequency (ties by value), as Spark's StringIndexer does; the
    /// feature is named `<column>_index`.
    pub categorical: Vec<String>,
    pub derived: Vec<DerivedColumn>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            label: LabelSpec { column: "ArrDelay".into(), buckets: vec![-15.0, 0.0, 30.0] },
            numeric: ["DepDelay", "Distance", "DayOfMonth", "DayOfWeek", "DayOfYear"].map(String::from).to_vec(),
            categorical: ["Carrier", "Origin", "Dest", "Route"].map(String::from).to_vec(),
            derived: vec![DerivedColumn { name: "Route".into(), sql: r#""Origin" || '-' || "Dest""#.into() }],
        }
    }
}

impl FeatureSpec {
    /// Names of the feature vector, in order: numeric columns, then category indexes.
    pub fn feature_names(&self) -> Vec<String> {
        self.numeric.iter().cloned().chain(self.categorical.iter().map(|c| format!("{c}_index"))).collect()
    }

    /// What an experiment and a model file both need of their features and label.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.numeric.is_empty() && self.categorical.is_empty() {
            return Err("no feature columns: give numeric and/or categorical columns".into());
        }
        let names = self.feature_names();
        if names.len() > canopy_proto::MAX_FEATURES {
            return Err(format!("{} feature columns; executors take at most {}", names.len(), canopy_proto::MAX_FEATURES));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(format!("feature '{name}' is listed twice"));
            }
        }
        self.label.check()
    }
}

impl LabelSpec {
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.buckets.iter().any(|b| !b.is_finite()) || self.buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("label buckets must be finite and strictly increasing, got {:?}", self.buckets));
        }
        if self.buckets.len() > MAX_LABEL_BUCKETS {
            return Err(format!("at most {MAX_LABEL_BUCKETS} label buckets ({} classes)", MAX_LABEL_BUCKETS + 1));
        }
        Ok(())
    }
}
