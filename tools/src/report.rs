//! Renders timeline runs: the talk's timeline as text, the comparison table, and a
//! swimlane picture (SVG, no external references).
use std::fmt::Write as _;

use crate::timeline::Run;

/// The timeline of one run, as the talk draws it: who wrote what at which
/// resourceVersion, whose write was rejected and what happened next.
pub fn timeline_text(run: &Run, max_lines: usize) -> String {
    enum Line<'a> {
        Change(&'a crate::timeline::PoolChange),
        Conflict(&'a crate::timeline::Conflict),
    }
    let mut lines: Vec<(f64, Line)> = run
        .changes
        .iter()
        .map(|c| (c.t, Line::Change(c)))
        .chain(run.conflicts.iter().map(|c| (c.t, Line::Conflict(c))))
        .collect();
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rollout = run
        .rollout_at
        .map(|t| format!("; the template changes at {t:.3}s"))
        .unwrap_or_default();
    let quiet = run
        .contention_until
        .map(|t| format!("; the third writers stop at {t:.3}s"))
        .unwrap_or_default();
    let mut out = format!(
        "--- timeline: --conflict-strategy {} (seconds since the pool was created; pods appear at {:.3}s{rollout}, go at {:.3}s{quiet}) ---\n",
        run.strategy, run.demand_at, run.demand_gone_at
    );
    let total = lines.len();
    let mut printed = 0;
    let mut i = 0;
    while i < lines.len() && printed < max_lines {
        let (t, line) = &lines[i];
        // Runs of the third writer's own writes fold into one line.
        let only_third =
            |l: &Line| matches!(l, Line::Change(c) if c.by == [crate::timeline::THIRD_WRITER]);
        if only_third(line) {
            let start = i;
            while i + 1 < lines.len() && only_third(&lines[i + 1].1) {
                i += 1;
            }
            if i > start {
                let rv = |k: usize| match &lines[k].1 {
                    Line::Change(c) => c.resource_version.clone(),
                    Line::Conflict(_) => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{t:>8.3}s  rv {}..{} third-writer: {} annotation writes, each a new resourceVersion",
                    rv(start),
                    rv(i),
                    i - start + 1
                );
                printed += 1;
                i += 1;
                continue;
            }
        }
        i += 1;
        printed += 1;
        match line {
            Line::Change(c) => {
                let _ = writeln!(
                    out,
                    "{t:>8.3}s  rv {:<8} gen {:<3} {:<22} {}",
                    c.resource_version,
                    c.generation,
                    c.by.join("+"),
                    c.changed.join("; ")
                );
            }
            Line::Conflict(c) => {
                let next = match c.next.as_str() {
                    "requeue" => "error returned: the whole reconcile is requeued",
                    "reread_and_retry" => {
                        "re-read from the API server, change re-applied, retried after backoff"
                    }
                    "give_up" => "retries used up: the last 409 is returned",
                    _ => "no retry",
                };
                let _ = writeln!(
                    out,
                    "{t:>8.3}s  409 Conflict {:<22} {} written from rv {} (attempt {}): {next}",
                    c.operator, c.resource, c.read_resource_version, c.attempt
                );
            }
        }
    }
    if i < total {
        let _ = writeln!(out, "  ... {} more events in the JSON file", total - i);
    }
    out
}

/// One table comparing the strategies, measured in this run: one row per strategy,
/// each cell the median over that strategy's runs (`make bench` repeats them).
pub fn comparison_table(runs: &[Run]) -> String {
    let mut strategies: Vec<&str> = Vec::new();
    for r in runs {
        if !strategies.contains(&r.strategy.as_str()) {
            strategies.push(&r.strategy);
        }
    }
    type Column = (&'static str, fn(&Run) -> Option<f64>);
    let mut columns: Vec<Column> = vec![
        ("409s", |r| Some(r.total(|c| c.conflicts) as f64)),
        ("retries", |r| Some(r.total(|c| c.retries) as f64)),
        ("reconciles", |r| Some(r.total(|c| c.reconciles) as f64)),
        ("failed", |r| Some(r.total(|c| c.failed_reconciles) as f64)),
        ("update", |r| Some(r.requests("update") as f64)),
        ("apply", |r| Some(r.requests("apply") as f64)),
        ("patch", |r| Some(r.requests("patch") as f64)),
        ("get", |r| Some(r.requests("get") as f64)),
        ("skipped", |r| Some(r.total(|c| c.writes_skipped) as f64)),
        ("3rd-writer", |r| Some(r.third_writer_writes as f64)),
        ("up (s)", |r| r.converge_up),
        ("down (s)", |r| r.converge_down),
    ];
    if runs.iter().any(|r| r.rollout_at.is_some()) {
        columns.push(("rollout (s)", |r| r.converge_rollout));
    }
    let mut header = vec!["strategy".to_owned(), "runs".to_owned()];
    header.extend(columns.iter().map(|(name, _)| (*name).to_owned()));
    header.push("final".into());
    let mut rows = Vec::new();
    for strategy in &strategies {
        let group: Vec<&Run> = runs.iter().filter(|r| r.strategy == *strategy).collect();
        let mut row = vec![(*strategy).to_owned(), group.len().to_string()];
        for (name, value) in &columns {
            let values: Vec<f64> = group.iter().filter_map(|r| value(r)).collect();
            row.push(match median(values) {
                None => "timeout".into(),
                Some(m) if name.ends_with("(s)") => format!("{m:.1}"),
                Some(m) if m.fract() == 0.0 => format!("{m:.0}"),
                Some(m) => format!("{m:.1}"),
            });
        }
        let wrong: Vec<String> = group
            .iter()
            .filter(|r| !r.final_ok())
            .map(|r| r.final_problems.join("; "))
            .collect();
        row.push(if wrong.is_empty() {
            "right".into()
        } else {
            format!("WRONG: {}", wrong.join(" | "))
        });
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&header));
    let _ = writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out.push_str(
        "Each cell is the median over `runs`. 409s: conflicts both operators got; retries: re-read-and-retry\n\
         attempts; failed: reconciles that returned an error (each is requeued and runs again in full);\n\
         update/apply/patch/get: API requests by verb; skipped: writes not sent (nothing changed, or just written);\n\
         up/down/rollout: seconds to converge; final: desired size, ready nodes and every writer's fields present.\n",
    );
    out
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A swimlane chart: one panel per run, one lane per writer, a dot per write that changed
/// the pool and a red cross per 409, with the pool's desired and ready sizes beneath.
pub fn swimlane_svg(runs: &[Run]) -> String {
    const W: f64 = 1100.0;
    const LEFT: f64 = 170.0;
    const PANEL: f64 = 230.0;
    let lanes = ["autoscaler-operator", "nodepool-operator", "third-writer"];
    let colors = ["#1f77b4", "#2ca02c", "#999999"];
    let t_max = runs
        .iter()
        .flat_map(|r| {
            r.changes
                .iter()
                .map(|c| c.t)
                .chain(r.conflicts.iter().map(|c| c.t))
        })
        .fold(1.0_f64, f64::max);
    let x = |t: f64| LEFT + (t / t_max) * (W - LEFT - 20.0);
    let height = 40.0 + PANEL * runs.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"16\">Two operators, one NodePool: writes (dots) and 409 Conflicts (red x) over time, seconds</text>\n"
    );
    for (i, run) in runs.iter().enumerate() {
        let top = 40.0 + PANEL * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">--conflict-strategy {} ({} conflicts)</text>",
            top + 14.0,
            run.strategy,
            run.conflicts.len()
        );
        let marks = [
            Some((run.demand_at, "pods appear")),
            run.rollout_at.map(|t| (t, "template changed")),
            Some((run.demand_gone_at, "pods deleted")),
            run.contention_until.map(|t| (t, "third writers stop")),
        ];
        for (t, label) in marks.into_iter().flatten() {
            let _ = writeln!(
                svg,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#f0a000\" stroke-dasharray=\"4 3\"/><text x=\"{3:.1}\" y=\"{1}\" fill=\"#b07000\">{label}</text>",
                x(t),
                top + 22.0,
                top + PANEL - 20.0,
                x(t) + 4.0
            );
        }
        for (l, lane) in lanes.iter().enumerate() {
            let y = top + 35.0 + 28.0 * l as f64;
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{}\">{lane}</text><line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/>",
                y + 4.0,
                W - 20.0
            );
            for c in run
                .changes
                .iter()
                .filter(|c| c.by.iter().any(|b| b == lane))
            {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"4\" fill=\"{}\"><title>{:.3}s rv {}: {}</title></circle>",
                    x(c.t),
                    colors[l],
                    c.t,
                    c.resource_version,
                    xml(&c.changed.join("; "))
                );
            }
            for c in run.conflicts.iter().filter(|c| c.operator == *lane) {
                let (cx, s) = (x(c.t), 5.0);
                let _ = writeln!(
                    svg,
                    "<path d=\"M{} {} L{} {} M{} {} L{} {}\" stroke=\"#d62728\" stroke-width=\"2\"><title>{:.3}s 409 on {} from rv {} -> {}</title></path>",
                    cx - s,
                    y - s,
                    cx + s,
                    y + s,
                    cx - s,
                    y + s,
                    cx + s,
                    y - s,
                    c.t,
                    c.resource,
                    c.read_resource_version,
                    c.next
                );
            }
        }
        // Desired (spec.replicas) and ready nodes as step lines.
        let base = top + 35.0 + 28.0 * 3.0 + 70.0;
        let scale = 10.0;
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\">nodes: desired (blue),</text><text x=\"10\" y=\"{}\">ready (green),</text><text x=\"10\" y=\"{}\">up to date (orange)</text><line x1=\"{LEFT}\" x2=\"{}\" y1=\"{base}\" y2=\"{base}\" stroke=\"#ccc\"/>",
            base - 44.0,
            base - 30.0,
            base - 16.0,
            W - 20.0
        );
        for (color, value) in [
            (
                "#1f77b4",
                (|c: &crate::timeline::PoolChange| c.spec_replicas)
                    as fn(&crate::timeline::PoolChange) -> i32,
            ),
            ("#2ca02c", |c| c.ready_replicas),
            ("#f0a000", |c| c.updated_replicas),
        ] {
            let mut d = String::new();
            let mut last_y = None;
            for c in &run.changes {
                let y = base - scale * f64::from(value(c));
                match last_y {
                    None => {
                        let _ = write!(d, "M{:.1} {y:.1}", x(c.t));
                    }
                    Some(_) => {
                        let _ = write!(d, " H{:.1} V{y:.1}", x(c.t));
                    }
                }
                last_y = Some(y);
            }
            if last_y.is_some() {
                let _ = write!(d, " H{:.1}", W - 20.0);
                let _ = writeln!(
                    svg,
                    "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>"
                );
            }
        }
    }
    // Time axis.
    let bottom = height - 8.0;
    for s in 0..=(t_max.ceil() as usize) {
        if s % 5 == 0 {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{bottom}\" fill=\"#666\">{s}s</text>",
                x(s as f64)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
