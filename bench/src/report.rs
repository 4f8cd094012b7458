//! What ipcbench prints: a table, a bar chart for a projector (log scale where the figures span
//! decades), the JSON of the issue, an SVG of the chart, and a progress line on stderr.

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::anyhow;

use crate::bare::{self, Comparison, Figures};
use crate::{Measured, Mechanism, Observer, TOTAL_BYTES};

/// `4 KiB`, `64 KiB`, `1 MiB`, `1000 B`.
pub fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `2 CPUs`, `1 CPU`.
fn cpus_text() -> String {
    match cpus() {
        1 => "1 CPU".into(),
        n => format!("{n} CPUs"),
    }
}

/// The memcpy row's throughput at chunk size `bytes`, if it was measured.
fn memcpy_at(results: &[Measured], bytes: usize) -> Option<f64> {
    let memcpy = results.iter().find(|m| m.mechanism == Mechanism::Memcpy)?;
    let found = memcpy.throughput.iter().find(|t| t.bytes == bytes)?;
    Some(found.gb_per_s)
}

/// The table: one row per mechanism, latency then throughput per chunk size with its fraction
/// of the memcpy row. A figure from data that arrived corrupted is marked `!`.
pub fn table(results: &[Measured]) -> String {
    let sizes: Vec<usize> = results
        .first()
        .map(|m| m.throughput.iter().map(|t| t.bytes).collect())
        .unwrap_or_default();
    let mut text = String::new();
    let _ = write!(text, "{:<14} {:>17}", "", "latency (µs)");
    if !sizes.is_empty() {
        let _ = write!(text, "     throughput (GB/s, % of memcpy)");
    }
    let _ = write!(text, "\n{:<14} {:>8} {:>8}", "mechanism", "p50", "p99");
    for &size in &sizes {
        let _ = write!(text, " {:>13}", size_name(size));
    }
    text.push('\n');
    let mut corrupted = false;
    for measured in results {
        let latency = &measured.latency;
        let _ = write!(
            text,
            "{:<14} {:>8.2} {:>8.2}",
            measured.mechanism.name(),
            latency.p50_us,
            latency.p99_us
        );
        for throughput in &measured.throughput {
            let mark = if throughput.verified { " " } else { "!" };
            corrupted |= !throughput.verified;
            let fraction = match memcpy_at(results, throughput.bytes) {
                Some(memcpy) if memcpy > 0.0 => {
                    format!("{:.0}%", 100.0 * throughput.gb_per_s / memcpy)
                }
                _ => "-".into(),
            };
            let _ = write!(text, " {:>7.2}{mark}{fraction:>5}", throughput.gb_per_s);
        }
        text.push('\n');
    }
    if corrupted {
        text.push_str("! data arrived corrupted (a checksum differed): verified false\n");
    }
    text
}

/// The measurements whose data arrived corrupted, as `pipe 64 KiB`.
pub fn corrupted(results: &[Measured]) -> Vec<String> {
    results
        .iter()
        .flat_map(|m| m.throughput.iter().map(move |t| (m.mechanism, t)))
        .filter(|(_, t)| !t.verified)
        .map(|(m, t)| format!("{} {}", m.name(), size_name(t.bytes)))
        .collect()
}

/// The first line: what was measured, on how many CPUs.
pub fn heading(results: &[Measured], duration: Option<std::time::Duration>) -> String {
    let moved = match duration {
        Some(d) => format!("{} s", d.as_secs_f64()),
        None => size_name(TOTAL_BYTES as usize),
    };
    let sizes = results.first().map_or(0, |m| m.throughput.len());
    let mut line = format!(
        "ipcbench on {}: latency of 64-byte round trips (median p50, 99th percentile p99)",
        cpus_text()
    );
    if sizes > 0 {
        let _ = write!(
            line,
            ";\nthroughput one way, {moved} per chunk size, every byte checked by the receiver"
        );
    }
    line
}

/// A horizontal bar chart of `rows` (name, value): log scale if the values span more than
/// a factor of 20, with the decades marked; `unit` names the values.
pub fn bars(title: &str, unit: &str, rows: &[(&str, f64)]) -> String {
    const WIDTH: usize = 44;
    const NAME: usize = 14;
    let values = rows.iter().map(|r| r.1).filter(|v| *v > 0.0);
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if high <= 0.0 {
        return String::new();
    }
    let log = high / low > 20.0;
    let (from, to) = match log {
        true => (low.log10().floor(), high.log10().ceil()),
        false => (0.0, high),
    };
    let position = |v: f64| -> f64 {
        let x = if log { v.max(1e-300).log10() } else { v };
        ((x - from) / (to - from)).clamp(0.0, 1.0) * WIDTH as f64
    };
    let scale = if log { "log scale" } else { "linear" };
    let mut text = format!("{title} ({unit}, {scale})\n");
    // the axis: a label at each decade (log) or at 0 and the top (linear)
    let ticks: Vec<f64> = match log {
        true => (from as i32..=to as i32).map(|e| 10f64.powi(e)).collect(),
        false => vec![0.0, high],
    };
    let mut axis = vec![' '; NAME + WIDTH + 12];
    let mut marks = vec![' '; NAME + WIDTH + 1];
    let mut free_from = 0;
    for tick in ticks {
        let at = NAME + position(tick).round() as usize;
        let last = marks.len() - 1;
        marks[at.min(last)] = '|';
        let label = tick_label(tick);
        let start = at.saturating_sub(label.len() / 2);
        if start >= free_from && start + label.len() <= axis.len() {
            for (i, c) in label.chars().enumerate() {
                axis[start + i] = c;
            }
            free_from = start + label.len() + 1;
        }
    }
    text.push_str(axis.iter().collect::<String>().trim_end());
    text.push('\n');
    text.push_str(marks.iter().collect::<String>().trim_end());
    text.push('\n');
    for (name, value) in rows {
        let eighths = (position(*value) * 8.0).round() as usize;
        let mut bar = "█".repeat(eighths / 8);
        if eighths % 8 > 0 {
            bar.push([' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8]);
        }
        let _ = writeln!(text, "{name:<NAME$}{bar} {}", number(*value));
    }
    text
}

/// A figure as a person reads it: 3 significant digits, no exponent.
fn number(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        let decimals = (2 - value.log10().floor() as i32).clamp(2, 6) as usize;
        format!("{value:.decimals$}")
    }
}

/// An axis label: [`number`] without trailing zeros (`0.01`, `100`).
fn tick_label(value: f64) -> String {
    let text = number(value);
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// The two charts: latency, and throughput at the largest chunk size.
pub fn chart(results: &[Measured]) -> String {
    let latency: Vec<(&str, f64)> = results
        .iter()
        .map(|m| (m.mechanism.name(), m.latency.p50_us))
        .collect();
    let mut text = bars("64-byte round trip, p50", "µs, shorter is faster", &latency);
    if let Some((size, rows)) = largest_throughput(results) {
        text.push('\n');
        let title = format!("throughput, {} chunks", size_name(size));
        text.push_str(&bars(&title, "GB/s, longer is faster", &rows));
    }
    text
}

/// The throughput of each mechanism at the largest chunk size measured.
fn largest_throughput(results: &[Measured]) -> Option<(usize, Vec<(&str, f64)>)> {
    let size = results
        .iter()
        .flat_map(|m| m.throughput.iter().map(|t| t.bytes))
        .max()?;
    let rows = results
        .iter()
        .filter_map(|m| {
            let t = m.throughput.iter().find(|t| t.bytes == size)?;
            Some((m.mechanism.name(), t.gb_per_s))
        })
        .collect();
    Some((size, rows))
}

/// A JSON number: rounded to 4 decimals (`null` if not finite).
fn json_number(value: f64) -> String {
    let rounded = (value * 10_000.0).round() / 10_000.0;
    match rounded.is_finite() {
        true => format!("{rounded}"),
        false => "null".into(),
    }
}

/// One latency object of the JSON output; `test` is `latency` (or `bare-latency`).
pub fn json_latency(name: &str, test: &str, latency: &crate::Latency) -> String {
    format!(
        "{{\"mechanism\": \"{name}\", \"test\": \"{test}\", \"bytes\": {}, \"round_trips\": {}, \"p50_us\": {}, \"p99_us\": {}}}",
        crate::MESSAGE,
        latency.round_trips,
        json_number(latency.p50_us),
        json_number(latency.p99_us)
    )
}

/// One throughput object of the JSON output; `test` is `throughput` (or `bare-throughput`).
pub fn json_throughput(name: &str, test: &str, t: &crate::Throughput) -> String {
    format!(
        "{{\"mechanism\": \"{name}\", \"test\": \"{test}\", \"bytes\": {}, \"total_bytes\": {}, \"gb_per_s\": {}, \"verified\": {}}}",
        t.bytes, t.total_bytes, json_number(t.gb_per_s), t.verified
    )
}

/// `{"ipcbench": 1, "cpus": 2, "results": [ the `objects`, one per line `]}`.
pub fn json_document(objects: &[String]) -> String {
    format!(
        "{{\"ipcbench\": 1, \"cpus\": {}, \"results\": [\n  {}\n]}}\n",
        cpus(),
        objects.join(",\n  ")
    )
}

/// The JSON output: one object per measurement, in the shape the issue gives.
pub fn json(results: &[Measured]) -> String {
    let mut objects = Vec::new();
    for measured in results {
        let name = measured.mechanism.name();
        objects.push(json_latency(name, "latency", &measured.latency));
        for throughput in &measured.throughput {
            objects.push(json_throughput(name, "throughput", throughput));
        }
    }
    json_document(&objects)
}

/// The bare-loop comparison: each mechanism's p50 in ipcbench's loop and in the simplest loop,
/// then shm-spin's throughput next to the simplest ring; their ratio and the target for it.
pub fn bare_table(compared: &[Comparison]) -> String {
    let (latency, throughput): (Vec<&Comparison>, Vec<&Comparison>) = compared
        .iter()
        .partition(|c| matches!(c.figures, Figures::Latency { .. }));
    let runs = bare::ROUNDS;
    let mut text = String::new();
    for (rows, heading, sign) in [
        (
            latency,
            format!(
                "64-byte round trips, p50 in µs: ipcbench's own loop next to the simplest loop \
                 (median of {runs} runs each)"
            ),
            "<=",
        ),
        (
            throughput,
            format!(
                "{} chunks one way, GB/s: ipcbench's own ring next to the simplest ring of {} \
                 slots (median of {runs} runs each)",
                size_name(bare::RING_CHUNK),
                bare::RING_SLOTS
            ),
            ">=",
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        let _ = writeln!(
            text,
            "{heading}\n{:<14} {:>9} {:>9} {:>7} {:>9}",
            "mechanism", "ipcbench", "bare", "ratio", "target"
        );
        for c in rows {
            let (ipcbench, bare) = match c.figures {
                Figures::Latency { bare, ipcbench } => (ipcbench.p50_us, bare.p50_us),
                Figures::Throughput { bare, ipcbench } => (ipcbench.gb_per_s, bare.gb_per_s),
            };
            let verdict = if c.met() { "met" } else { "MISSED" };
            let _ = writeln!(
                text,
                "{:<14} {ipcbench:>9.2} {bare:>9.2} {:>7.2} {:>9} {verdict}",
                c.mechanism.name(),
                c.ratio(),
                format!("{sign} {}", c.target)
            );
        }
    }
    text
}

/// The bare-loop comparison as JSON: a `latency` and a `bare-latency` object per mechanism,
/// and a `throughput` and a `bare-throughput` object for the ring.
pub fn bare_json(compared: &[Comparison]) -> String {
    let objects: Vec<String> = compared
        .iter()
        .flat_map(|c| {
            let name = c.mechanism.name();
            match c.figures {
                Figures::Latency { bare, ipcbench } => [
                    json_latency(name, "latency", &ipcbench),
                    json_latency(name, "bare-latency", &bare),
                ],
                Figures::Throughput { bare, ipcbench } => [
                    json_throughput(name, "throughput", &ipcbench),
                    json_throughput(name, "bare-throughput", &bare),
                ],
            }
        })
        .collect();
    json_document(&objects)
}

/// The chart as an SVG picture for slides (1280×720): latency on the left, throughput at the
/// largest chunk size on the right, each on a log scale. Drawn in memory: the caller writes
/// it (see [`crate::output`]), so that a write error cannot go unnoticed.
pub fn svg(results: &[Measured]) -> anyhow::Result<String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let mut picture = String::new();
    let mut plotted = || -> Result<(), Box<dyn std::error::Error>> {
        let backend = plotters::backend::SVGBackend::with_string(&mut picture, (1280, 720));
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!("ipcbench: which IPC is fastest? ({})", cpus_text()),
            ("sans-serif", 34),
        )?;
        let latency: Vec<(&str, f64)> = results
            .iter()
            .map(|m| (m.mechanism.name(), m.latency.p50_us))
            .collect();
        let panels = match largest_throughput(results) {
            Some(_) => root.split_evenly((1, 2)),
            None => vec![root.clone()],
        };
        let mut charts = vec![(
            "64-byte round trip, p50 (µs, log)".to_string(),
            latency,
            RGBColor(200, 80, 60),
        )];
        if let Some((size, rows)) = largest_throughput(results) {
            let title = format!("throughput, {} chunks (GB/s, log)", size_name(size));
            charts.push((title, rows, RGBColor(60, 110, 190)));
        }
        for (area, (title, rows, color)) in panels.iter().zip(charts) {
            let positive = rows.iter().map(|r| r.1).filter(|v| *v > 0.0);
            let (low, high) = positive.fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
            if high <= 0.0 {
                continue;
            }
            let low = 10f64.powf(low.log10().floor());
            let high = high * 2.5; // room for the figure after the longest bar
                                   // Rows count from the bottom: the first goes on top.
            let y = |i: usize| (rows.len() - 1 - i) as f64;
            let count = rows.len();
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 26))
                .margin(20)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d((low..high).log_scale(), -0.5..count as f64 - 0.5)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(count)
                .y_label_formatter(&|v| {
                    let at = v.round();
                    match (v - at).abs() < 1e-6 && at >= 0.0 && (at as usize) < count {
                        true => rows[count - 1 - at as usize].0.to_string(),
                        false => String::new(),
                    }
                })
                .x_labels(5)
                .x_label_formatter(&|v| tick_label(*v))
                .label_style(("sans-serif", 22))
                .draw()?;
            chart.draw_series(rows.iter().enumerate().map(|(i, (_, value))| {
                Rectangle::new([(low, y(i) - 0.38), (*value, y(i) + 0.38)], color.filled())
            }))?;
            let figure = ("sans-serif", 20)
                .into_text_style(area)
                .pos(Pos::new(HPos::Left, VPos::Center));
            chart.draw_series(rows.iter().enumerate().map(|(i, (_, value))| {
                Text::new(
                    format!(" {}", number(*value)),
                    (*value, y(i)),
                    figure.clone(),
                )
            }))?;
        }
        root.present()?;
        Ok(())
    };
    plotted().map_err(|e| anyhow!("drawing the chart: {e}"))?;
    Ok(picture)
}

/// The progress line on stderr: `[3/7] shm-spin: throughput, 64 KiB chunks`, rewritten in
/// place — only when stderr is a terminal (a log file gets no stream of half lines) — and a
/// line for each mechanism that is skipped.
#[derive(Debug)]
pub struct Progress {
    on: bool,
    mechanisms: Vec<Mechanism>,
}

impl Progress {
    /// A progress line through `mechanisms`, if stderr is a terminal.
    pub fn new(mechanisms: &[Mechanism]) -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            mechanisms: mechanisms.to_vec(),
        }
    }

    /// Shows `text` as the line.
    pub fn show(&self, text: &str) {
        if self.on {
            ipclab::rt::out::stderr_bytes(format!("\r\x1b[K{text}").as_bytes());
        }
    }

    /// Removes the line.
    pub fn clear(&self) {
        if self.on {
            ipclab::rt::out::stderr_bytes(b"\r\x1b[K");
        }
    }
}

impl Observer for Progress {
    /// Shows `[3/7] shm-spin: what`: `mechanism` is the third of seven.
    fn note(&self, mechanism: Mechanism, what: &str) {
        let all = &self.mechanisms;
        let at = all.iter().position(|m| *m == mechanism).unwrap_or(0);
        let count = all.len();
        self.show(&format!(
            "[{}/{count}] {}: {what}",
            at + 1,
            mechanism.name()
        ));
    }

    /// `ipcbench: skipped msgq: msgget(key 0x8000): …` on a line of its own.
    fn skipped(&self, mechanism: Mechanism, error: &anyhow::Error) {
        self.clear();
        ipclab::rt::out::warn(format_args!("skipped {}: {error:#}", mechanism.name()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(1 << 20), "1 MiB");
        assert_eq!(size_name(1000), "1000 B");
        assert_eq!(size_name(65536), "64 KiB");
    }

    #[test]
    fn figures_that_span_decades_get_a_log_scale() {
        let chart = bars("t", "µs", &[("fast", 0.05), ("slow", 12.0)]);
        assert!(chart.contains("log scale"), "{chart}");
        let lines: Vec<&str> = chart.lines().collect();
        assert!(
            lines[1].contains("0.01") && lines[1].contains("100"),
            "{chart}"
        );
        let bar = |name: &str| {
            let line = lines.iter().find(|l| l.starts_with(name)).unwrap();
            line.chars().filter(|c| "█▏▎▍▌▋▊▉".contains(*c)).count()
        };
        assert!(bar("fast") > 0 && bar("fast") < bar("slow"), "{chart}");
        let linear = bars("t", "GB/s", &[("a", 2.0), ("b", 4.0)]);
        assert!(linear.contains("linear"), "{linear}");
    }

    #[test]
    fn the_bare_table_shows_each_ratio_against_its_target() {
        let latency = |p50_us| crate::Latency {
            round_trips: 300,
            p50_us,
            p99_us: p50_us,
        };
        let throughput = |gb_per_s| crate::Throughput {
            bytes: bare::RING_CHUNK,
            total_bytes: 1 << 28,
            gb_per_s,
            verified: true,
        };
        let compared = [
            Comparison {
                mechanism: Mechanism::Pipe,
                figures: Figures::Latency {
                    bare: latency(2.0),
                    ipcbench: latency(2.2),
                },
                target: 1.25,
            },
            Comparison {
                mechanism: Mechanism::ShmSpin,
                figures: Figures::Throughput {
                    bare: throughput(20.0),
                    ipcbench: throughput(10.0),
                },
                target: 0.8,
            },
        ];
        let table = bare_table(&compared);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .filter(|l| l.starts_with("pipe") || l.starts_with("shm-spin"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["pipe", "2.20", "2.00", "1.10", "<=", "1.25", "met"]
        );
        assert_eq!(
            rows[1],
            ["shm-spin", "10.00", "20.00", "0.50", ">=", "0.8", "MISSED"]
        );
        assert!(table.contains("1 MiB chunks one way, GB/s"), "{table}");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(12.44), "12.4");
        assert_eq!(number(0.5234), "0.523");
        assert_eq!(number(0.01), "0.0100");
        assert_eq!(number(250.0), "250");
        assert_eq!(tick_label(0.01), "0.01");
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(json_number(0.123456), "0.1235");
        assert_eq!(json_number(f64::NAN), "null");
    }
}
