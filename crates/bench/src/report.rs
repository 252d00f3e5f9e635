//! Figures of one run: statistics, Markdown tables and SVG bar charts.

use std::fmt::Write as _;
use std::path::Path;

/// Median and spread of repeated measurements.
#[derive(Clone, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs: n,
        }
    }

    /// "12.3 (11.9–12.8)": median, then the range over the runs.
    pub fn show(&self, decimals: usize) -> String {
        if self.runs <= 1 {
            return format!("{:.decimals$}", self.median);
        }
        format!(
            "{:.decimals$} ({:.decimals$}–{:.decimals$})",
            self.median, self.min, self.max
        )
    }
}

/// A percentile of a sorted distribution (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub stat: Stat,
}

#[derive(Clone, Debug)]
pub struct Chart {
    /// File name without extension.
    pub slug: String,
    pub title: String,
    pub unit: String,
    pub bars: Vec<Bar>,
}

#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    pub text: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub charts: Vec<Chart>,
    pub notes: String,
    /// Set when the scenario ran but broke a rule (failed jobs): the section
    /// is still written, and the benchmark command then fails.
    pub failure: Option<String>,
}

impl Section {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            ..Default::default()
        }
    }

    pub fn headers(mut self, headers: &[&str]) -> Self {
        self.headers = headers.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: one bar per label at the median, a whisker for
/// the range over the runs.
pub fn svg(chart: &Chart) -> String {
    let label_w = 300.0;
    let plot_w = 420.0;
    let bar_h = 26.0;
    let top = 44.0;
    let height = top + bar_h * chart.bars.len() as f64 + 40.0;
    let width = label_w + plot_w + 110.0;
    let max = chart
        .bars
        .iter()
        .map(|b| b.stat.max.max(b.stat.median))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |v: f64| label_w + (v / max) * plot_w;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text><text x="10" y="36" fill="#555">{}</text>"##,
        escape(&chart.title),
        escape(&chart.unit)
    );
    for (i, bar) in chart.bars.iter().enumerate() {
        let y = top + bar_h * i as f64;
        let median = if bar.stat.median.is_finite() {
            bar.stat.median
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4a78b5"/>"##,
            label_w - 8.0,
            y + bar_h * 0.62,
            escape(&bar.label),
            y + 4.0,
            (x(median) - label_w).max(0.5),
            bar_h - 8.0,
        );
        if bar.stat.runs > 1 && bar.stat.min.is_finite() && bar.stat.max.is_finite() {
            let mid = y + bar_h / 2.0;
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#222"/>"##,
                x(bar.stat.min),
                x(bar.stat.max),
                x(bar.stat.min),
                mid - 5.0,
                x(bar.stat.min),
                mid + 5.0,
                x(bar.stat.max),
                mid - 5.0,
                x(bar.stat.max),
                mid + 5.0,
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#222">{}</text>"##,
            x(bar.stat.max.max(median)) + 6.0,
            y + bar_h * 0.62,
            escape(&format_value(median)),
        );
    }
    let axis_y = top + bar_h * chart.bars.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        r##"<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{axis_y}" stroke="#888"/><text x="{label_w}" y="{:.1}" fill="#555">0</text><text x="{:.1}" y="{:.1}" fill="#555" text-anchor="end">{}</text>"##,
        axis_y + 16.0,
        label_w + plot_w,
        axis_y + 16.0,
        escape(&format_value(max)),
    );
    out.push_str("</svg>\n");
    out
}

pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// "1,000,001": a count with its thousands separated, as the report writes
/// counts.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A Markdown table: a header line, its rule, a line per row.
pub fn table<S: AsRef<str>>(headers: &[S], rows: &[Vec<String>]) -> String {
    let mut md = String::new();
    let headers: Vec<&str> = headers.iter().map(AsRef::as_ref).collect();
    let _ = writeln!(md, "| {} |", headers.join(" | "));
    let _ = writeln!(
        md,
        "|{}",
        headers.iter().map(|_| "---|").collect::<String>()
    );
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md
}

/// The section as Markdown; its charts are written to `chart_dir`, linked
/// as `<link_prefix>/<slug>.svg`.
pub fn render(section: &Section, link_prefix: &str, chart_dir: &Path) -> anyhow::Result<String> {
    let mut md = String::new();
    let _ = writeln!(md, "\n## {}\n", section.title);
    if !section.text.is_empty() {
        let _ = writeln!(md, "{}\n", section.text.trim_end());
    }
    if !section.headers.is_empty() {
        md.push_str(&table(&section.headers, &section.rows));
        md.push('\n');
    }
    for chart in &section.charts {
        let file = format!("{}.svg", chart.slug);
        std::fs::write(chart_dir.join(&file), svg(chart))?;
        let _ = writeln!(md, "![{}]({link_prefix}/{file})\n", chart.title);
    }
    if !section.notes.is_empty() {
        let _ = writeln!(md, "{}\n", section.notes.trim_end());
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_its_header_rule_and_rows() {
        let rows = vec![
            vec!["fsync".to_owned(), "5.5%".to_owned()],
            vec!["SQLite".to_owned(), "16.9%".to_owned()],
        ];
        assert_eq!(
            table(&["Where", "Share"], &rows),
            "| Where | Share |\n|---|---|\n| fsync | 5.5% |\n| SQLite | 16.9% |\n"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(10), "10");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_000_001), "1,000,001");
    }
}
