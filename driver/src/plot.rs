//! The run-comparison picture: time, speedup, and accuracy / weighted F1 against the executor
//! count. Drawn from a sweep's report (`scaling.svg`) or from the same series in Prometheus
//! (`canopy-driver plot-runs`), so what Grafana shows can be looked at without Grafana.

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde_json::Value;

use crate::error::{DriverError, Result};

/// One executor count's results.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPoint {
    pub executors: usize,
    pub train_seconds: f64,
    pub total_seconds: f64,
    pub speedup: f64,
    pub accuracy: f64,
    pub weighted_f1: f64,
}

/// Executor counts are whole numbers: label only those ticks.
fn integer_ticks(x: &f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() }
}

fn plot_err(e: &dyn std::fmt::Display) -> DriverError {
    DriverError::Internal(format!("plot: {e}"))
}

/// Draws `lines` (label, color, y values aligned with `xs`) on one panel.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    xs: &[f64],
    lines: &[(&str, RGBColor, Vec<f64>)],
    y_range: std::ops::Range<f64>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let max_x = xs.iter().copied().fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..max_x + 0.5, y_range)
        .map_err(|e| plot_err(&e))?;
    chart.configure_mesh().x_desc("executors").x_label_formatter(&integer_ticks).y_desc(y_desc).draw().map_err(|e| plot_err(&e))?;
    for (label, color, ys) in lines {
        let points: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).filter(|(_, y)| y.is_finite()).collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| plot_err(&e))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| plot_err(&e))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| plot_err(&e))?;
    Ok(())
}

/// Three panels side by side; `source` names where the numbers came from.
pub fn runs_svg(points: &[RunPoint], source: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1320, 430)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&e))?;
        let panels = root.split_evenly((1, 3));
        let xs: Vec<f64> = points.iter().map(|p| p.executors as f64).collect();
        let col = |f: fn(&RunPoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        let top = |values: &[f64]| values.iter().copied().filter(|v| v.is_finite()).fold(1e-3, f64::max) * 1.15;
        let (train, total) = (col(|p| p.train_seconds), col(|p| p.total_seconds));
        panel(
            &panels[0],
            &format!("Time vs executors ({source})"),
            "seconds",
            &xs,
            &[("train", BLUE, train.clone()), ("total", RED, total.clone())],
            0.0..top(&[train, total].concat()),
        )?;
        let base = xs.first().copied().unwrap_or(1.0);
        let ideal: Vec<f64> = xs.iter().map(|x| x / base).collect();
        let speedup = col(|p| p.speedup);
        panel(
            &panels[1],
            "Training speedup",
            "speedup",
            &xs,
            &[("ideal", RGBColor(150, 150, 150), ideal.clone()), ("measured", GREEN, speedup.clone())],
            0.0..top(&[ideal, speedup].concat()),
        )?;
        let (accuracy, f1) = (col(|p| p.accuracy), col(|p| p.weighted_f1));
        let low = accuracy.iter().chain(&f1).copied().filter(|v| v.is_finite()).fold(1.0, f64::min);
        panel(
            &panels[2],
            "Accuracy and weighted F1",
            "score",
            &xs,
            &[("accuracy", BLUE, accuracy), ("weighted F1", MAGENTA, f1)],
            (low - 0.02).max(0.0)..1.0_f64.min(low + 0.1),
        )?;
        root.present().map_err(|e| plot_err(&e))?;
    }
    Ok(svg)
}

/// Runs an instant query; returns `executors` label -> value.
async fn by_executors(prometheus: &str, expr: &str) -> Result<BTreeMap<usize, f64>> {
    let path = format!("/api/v1/query?query={}", encode(expr));
    let failed = |reason: String| DriverError::Unreachable { addr: prometheus.to_string(), reason };
    let (status, body) = crate::http::send(crate::http::Method::GET, prometheus, &path, "text/plain", Vec::new()).await.map_err(failed)?;
    let answer: Value = serde_json::from_slice(&body).map_err(|e| failed(format!("answer is not JSON: {e}")))?;
    if status != 200 || answer["status"] != "success" {
        return Err(failed(format!("query {expr} failed with HTTP {status}: {}", answer["error"])));
    }
    let mut out = BTreeMap::new();
    for sample in answer["data"]["result"].as_array().into_iter().flatten() {
        let executors = sample["metric"]["executors"].as_str().and_then(|e| e.parse().ok());
        let value = sample["value"][1].as_str().and_then(|v| v.parse().ok());
        if let (Some(e), Some(v)) = (executors, value) {
            out.insert(e, v);
        }
    }
    Ok(out)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The run-comparison dashboard's series, read from Prometheus.
pub async fn points_from_prometheus(prometheus: &str) -> Result<Vec<RunPoint>> {
    let train = by_executors(prometheus, "max by (executors) (canopy_run_train_seconds)").await?;
    let total = by_executors(prometheus, "max by (executors) (canopy_run_total_seconds)").await?;
    let accuracy = by_executors(prometheus, "max by (executors) (canopy_run_accuracy)").await?;
    let f1 = by_executors(prometheus, "max by (executors) (canopy_run_weighted_f1)").await?;
    let Some(&base) = train.values().next() else {
        return Err(DriverError::Config(format!("Prometheus at {prometheus} has no canopy_run_train_seconds series: run a sweep first")));
    };
    let get = |m: &BTreeMap<usize, f64>, e: &usize| m.get(e).copied().unwrap_or(f64::NAN);
    Ok(train
        .iter()
        .map(|(e, t)| RunPoint {
            executors: *e,
            train_seconds: *t,
            total_seconds: get(&total, e),
            speedup: base / t,
            accuracy: get(&accuracy, e),
            weighted_f1: get(&f1, e),
        })
        .collect())
}
