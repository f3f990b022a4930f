//! `--html FILE`: a self-contained report (inline SVG and CSS, no scripts, nothing fetched)
//! with the summary, the parameters, latency over time (p50, p99 and max of each time slot, on
//! a log scale), latency by percentile (on a "nines" axis: 90%, 99%, 99.9% ... equally spaced)
//! and throughput over time.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::report::{ms, plain, Report};

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 340.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 130.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 48.0;
/// Series with at most this many points also get a dot at each point (a line of one point
/// would not show).
const DOTS_MAX_POINTS: usize = 120;
/// Points per halving of the remaining distance to 100% in the percentile plot.
const QUANTILE_TICKS_PER_HALF: u32 = 5;
/// Gridlines a linear axis aims for.
const LINEAR_TICKS: f64 = 6.0;

pub fn render(report: &Report) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>sluice bench {}</h1>\n<pre>{}</pre>\n{}",
        escape(&report.workload),
        escape(&report.summary()),
        params_table(report)
    );
    if let Some(latency) = report.latencies() {
        body += &latency_over_time(report);
        body += &percentile_plot(latency);
    }
    body += &throughput_over_time(report);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sluice bench {}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td{{padding:2px 10px;border-bottom:1px solid #ddd}}\
         pre{{white-space:pre-wrap}}svg{{display:block;margin:1.5em 0}}</style></head>\n<body>\n{body}</body></html>\n",
        escape(&report.workload)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn params_table(report: &Report) -> String {
    let mut rows = String::new();
    for (key, value) in &report.params {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(key),
            escape(&plain(value))
        );
    }
    format!("<table>{rows}</table>\n")
}

fn latency_over_time(report: &Report) -> String {
    let width = report.timeline.width().as_secs_f64();
    let mut series = [
        Series::new("p50", "#1f77b4"),
        Series::new("p99", "#ff7f0e"),
        Series::new("max", "#d62728"),
    ];
    for (i, slot) in report.timeline.slots().iter().enumerate() {
        let Some(h) = slot.latency.as_ref().filter(|h| !h.is_empty()) else {
            continue;
        };
        let t = i as f64 * width;
        series[0].points.push((t, ms(h.value_at_quantile(0.5))));
        series[1].points.push((t, ms(h.value_at_quantile(0.99))));
        series[2].points.push((t, ms(h.max())));
    }
    let x = Axis::linear("seconds since the start of measurement", time_range(report));
    let y = Axis::log("latency (ms)", value_range(&series));
    chart(
        &format!("Latency over time ({} s slots)", width),
        &x,
        &y,
        &series,
    )
}

fn percentile_plot(latency: &Histogram<u64>) -> String {
    // The last value sits at 100%, infinitely many nines out: it is drawn at the nines the
    // sample count can resolve.
    let resolvable = (latency.len() as f64).log10().max(1.0);
    let mut series = Series::new("latency", "#1f77b4");
    for v in latency.iter_quantiles(QUANTILE_TICKS_PER_HALF) {
        let q = v.quantile_iterated_to();
        let nines = if q < 1.0 {
            (-(1.0 - q).log10()).min(resolvable)
        } else {
            resolvable
        };
        series.points.push((nines, ms(v.value_iterated_to())));
    }
    let top = resolvable.ceil();
    let x = Axis {
        label: "percentile".to_string(),
        log: false,
        min: 0.0,
        max: top,
        ticks: (0..=top as u32)
            .map(|n| (n as f64, nines_label(n)))
            .collect(),
    };
    let y = Axis::linear("latency (ms)", (0.0, latency_top(&series)));
    chart("Latency by percentile", &x, &y, &[series])
}

fn latency_top(series: &Series) -> f64 {
    series.points.iter().map(|p| p.1).fold(0.0, f64::max)
}

/// 0 nines is 0%, 1 is 90%, 2 is 99%, 3 is 99.9% ...
fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
    }
}

fn throughput_over_time(report: &Report) -> String {
    let width = report.timeline.width().as_secs_f64();
    let mut series = Series::new("msgs/s", "#2ca02c");
    for (i, slot) in report.timeline.slots().iter().enumerate() {
        series
            .points
            .push((i as f64 * width, slot.records as f64 / width));
    }
    let x = Axis::linear("seconds since the start of measurement", time_range(report));
    let y = Axis::linear("records/s", (0.0, latency_top(&series)));
    chart("Throughput over time", &x, &y, &[series])
}

fn time_range(report: &Report) -> (f64, f64) {
    let slots = report.timeline.slots().len().max(1) as f64;
    (0.0, slots * report.timeline.width().as_secs_f64())
}

/// Smallest and largest value of any series (positive, for a log axis).
fn value_range(series: &[Series]) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        (0.001, 1.0)
    } else {
        (lo.max(0.001), hi)
    }
}

struct Series {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &'static str, color: &'static str) -> Series {
        Series {
            name,
            color,
            points: Vec::new(),
        }
    }
}

struct Axis {
    label: String,
    log: bool,
    min: f64,
    max: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// From `lo` to a round number at or above `hi`, with round gridlines.
    fn linear(label: &str, (lo, hi): (f64, f64)) -> Axis {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let raw = (hi - lo) / LINEAR_TICKS;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude);
        let top = (hi / step).ceil() * step;
        let count = ((top - lo) / step).round() as usize;
        let ticks = (0..=count)
            .map(|i| lo + i as f64 * step)
            .map(|v| (v, short_number(v)))
            .collect();
        Axis {
            label: label.to_string(),
            log: false,
            min: lo,
            max: top,
            ticks,
        }
    }

    /// Decades around `lo..hi` (both above 0).
    fn log(label: &str, (lo, hi): (f64, f64)) -> Axis {
        let first = lo.log10().floor() as i32;
        let last = (hi.log10().ceil() as i32).max(first + 1);
        Axis {
            label: label.to_string(),
            log: true,
            min: 10f64.powi(first),
            max: 10f64.powi(last),
            ticks: (first..=last)
                .map(|e| (10f64.powi(e), short_number(10f64.powi(e))))
                .collect(),
        }
    }

    /// Where `v` falls between 0 (min) and 1 (max).
    fn fraction(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.max(self.min).log10() } else { x };
        let span = f(self.max) - f(self.min);
        if span > 0.0 {
            (f(v) - f(self.min)) / span
        } else {
            0.0
        }
    }
}

/// A tick label: no trailing zeros, thousands as k and millions as M.
fn short_number(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// An SVG line chart with gridlines, tick labels, axis labels and a legend.
fn chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |v: f64| MARGIN_LEFT + x.fraction(v) * plot_w;
    let py = |v: f64| MARGIN_TOP + (1.0 - y.fraction(v)) * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-size=\"12\" font-family=\"sans-serif\">\n\
         <text x=\"{MARGIN_LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>\n\
         <rect x=\"{MARGIN_LEFT}\" y=\"{MARGIN_TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" \
         fill=\"none\" stroke=\"#999\"/>\n",
        escape(title)
    );
    for (v, label) in &x.ticks {
        let at = px(*v);
        let _ = writeln!(
            svg,
            "<line x1=\"{at:.1}\" y1=\"{MARGIN_TOP}\" x2=\"{at:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
            escape(label)
        );
    }
    for (v, label) in &y.ticks {
        let at = py(*v);
        let _ = writeln!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{at:.1}\" x2=\"{:.1}\" y2=\"{at:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            at + 4.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        escape(&x.label),
        MARGIN_TOP + plot_h / 2.0,
        escape(&y.label)
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(vx, vy)| format!("{:.1},{:.1}", px(*vx), py(*vy)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
            s.color,
            points.join(" ")
        );
        if s.points.len() <= DOTS_MAX_POINTS {
            for p in &points {
                let (cx, cy) = p.split_once(',').expect("formatted as x,y");
                let _ = write!(
                    svg,
                    "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2.5\" fill=\"{}\"/>",
                    s.color
                );
            }
        }
        let ly = MARGIN_TOP + 10.0 + i as f64 * 18.0;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            ly - 4.0,
            s.color,
            lx + 18.0,
            ly,
            escape(s.name)
        );
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_are_labelled_as_percentiles() {
        let labels: Vec<String> = (0..5).map(nines_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn linear_axes_end_on_round_numbers() {
        let axis = Axis::linear("x", (0.0, 87.0));
        assert_eq!(axis.max, 100.0);
        let labels: Vec<&str> = axis.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0", "20", "40", "60", "80", "100"]);
        assert_eq!(Axis::linear("y", (0.0, 0.0)).max, 1.0);
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let axis = Axis::log("ms", (0.3, 42.0));
        assert_eq!((axis.min, axis.max), (0.1, 100.0));
        assert_eq!(axis.fraction(1.0), 1.0 / 3.0);
        assert_eq!(short_number(25_000.0), "25k");
        assert_eq!(short_number(0.25), "0.25");
    }

    #[test]
    fn a_chart_is_an_svg_with_one_line_per_series() {
        let mut s = Series::new("p<50>", "#000");
        s.points = vec![(0.0, 1.0), (1.0, 2.0)];
        let x = Axis::linear("t", (0.0, 1.0));
        let svg = chart("T & U", &x, &Axis::linear("v", (0.0, 2.0)), &[s]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("T &amp; U") && svg.contains("p&lt;50&gt;"));
    }
}
