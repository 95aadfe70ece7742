//! Evaluation metrics, defined as Spark's MulticlassClassificationEvaluator defines them:
//! "weighted" means weighted by each class's support (its count of actual rows).
//! (linfa's multiclass precision/recall are macro averages: a different number.)

use serde::{Deserialize, Serialize};

/// Counts of (actual, predicted) pairs, row-major by actual class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub num_classes: usize,
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize) -> Self {
        ConfusionMatrix { num_classes, counts: vec![0; num_classes * num_classes] }
    }
    pub fn add(&mut self, actual: usize, predicted: usize) {
        self.counts[actual * self.num_classes + predicted] += 1;
    }
    pub fn get(&self, actual: usize, predicted: usize) -> u64 {
        self.counts[actual * self.num_classes + predicted]
    }
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Rows as nested vectors, for reports.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.num_classes.max(1)).map(<[u64]>::to_vec).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub accuracy: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub precision_by_class: Vec<f64>,
    pub recall_by_class: Vec<f64>,
    pub f1_by_class: Vec<f64>,
    pub support_by_class: Vec<u64>,
}

impl ClassificationMetrics {
    pub fn from_confusion(cm: &ConfusionMatrix) -> Self {
        let k = cm.num_classes;
        let total = cm.total();
        let ratio = |num: u64, den: u64| if den == 0 { 0.0 } else { num as f64 / den as f64 };
        let support: Vec<u64> = (0..k).map(|a| (0..k).map(|p| cm.get(a, p)).sum()).collect();
        let predicted: Vec<u64> = (0..k).map(|p| (0..k).map(|a| cm.get(a, p)).sum()).collect();
        let precision: Vec<f64> = (0..k).map(|c| ratio(cm.get(c, c), predicted[c])).collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(cm.get(c, c), support[c])).collect();
        let f1: Vec<f64> = (0..k)
            .map(|c| {
                let (p, r) = (precision[c], recall[c]);
                if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
            })
            .collect();
        let weighted = |per_class: &[f64]| -> f64 { (0..k).map(|c| per_class[c] * ratio(support[c], total)).sum() };
        ClassificationMetrics {
            accuracy: ratio((0..k).map(|c| cm.get(c, c)).sum(), total),
            weighted_precision: weighted(&precision),
            weighted_recall: weighted(&recall),
            weighted_f1: weighted(&f1),
            precision_by_class: precision,
            recall_by_class: recall,
            f1_by_class: f1,
            support_by_class: support,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: actual rows [a0: 5, a1: 3, a2: 2], matrix
    ///   [[4, 1, 0],
    ///    [1, 2, 0],
    ///    [0, 1, 1]]
    /// precision = [4/5, 2/4, 1/1], recall = [4/5, 2/3, 1/2]
    /// f1 = [0.8, 2*(1/2)(2/3)/(7/6) = 4/7, 2*(1)(1/2)/(3/2) = 2/3]
    /// weighted precision = .5*.8 + .3*.5 + .2*1 = 0.75
    /// weighted recall = .5*.8 + .3*(2/3) + .2*.5 = 0.7 = accuracy
    /// weighted f1 = .5*.8 + .3*(4/7) + .2*(2/3) = 0.4 + 0.171428... + 0.133333... = 0.704761904...
    #[test]
    fn weighted_metrics_match_hand_computation() {
        let mut cm = ConfusionMatrix::new(3);
        for (a, p, n) in [(0, 0, 4), (0, 1, 1), (1, 0, 1), (1, 1, 2), (2, 1, 1), (2, 2, 1)] {
            for _ in 0..n {
                cm.add(a, p);
            }
        }
        let m = ClassificationMetrics::from_confusion(&cm);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(m.accuracy, 0.7), "{}", m.accuracy);
        assert!(close(m.weighted_precision, 0.75), "{}", m.weighted_precision);
        assert!(close(m.weighted_recall, 0.7), "{}", m.weighted_recall);
        assert!(close(m.weighted_f1, 0.4 + 0.3 * 4.0 / 7.0 + 0.2 * 2.0 / 3.0), "{}", m.weighted_f1);
        assert_eq!(m.support_by_class, vec![5, 3, 2]);
        assert!(close(m.precision_by_class[1], 0.5) && close(m.recall_by_class[2], 0.5));
    }

    #[test]
    fn classes_never_predicted_score_zero_not_nan() {
        let mut cm = ConfusionMatrix::new(2);
        cm.add(0, 0);
        cm.add(1, 0);
        let m = ClassificationMetrics::from_confusion(&cm);
        assert_eq!((m.precision_by_class[1], m.f1_by_class[1]), (0.0, 0.0));
        assert_eq!(m.weighted_precision, 0.25);
    }
}
