//! Predictions: top-k classes with logits and softmax probabilities.

use crate::labels::Labels;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    pub logit: f32,
    pub probability: f32,
}

/// Softmax in f64 (stable), as f32.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    let e: Vec<f64> = logits.iter().map(|v| (*v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Class indices sorted by decreasing logit (ties: lower index first).
pub fn ranking(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx
}

pub fn top_k(logits: &[f32], k: usize, labels: &Labels) -> Vec<Prediction> {
    let p = softmax(logits);
    ranking(logits)
        .into_iter()
        .take(k)
        .map(|c| Prediction { class: c, label: labels.get(c).to_string(), logit: logits[c], probability: p[c] })
        .collect()
}
