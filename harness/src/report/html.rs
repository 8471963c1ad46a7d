//! The HTML report: one self-contained file to publish or mail. It holds the markdown
//! write-up's sections (run, environment manifest, one table per workload group,
//! failures), every chart of the run as inline SVG with its caption, the terminal summary,
//! and every cell in a table that sorts by any column. Nothing is fetched: the page's
//! content security policy forbids it, so a viewer can check.

use std::fmt::Write as _;

use anyhow::Context;

use super::csv::{columns, rows};
use super::markdown::{markdown, PlotLinks};
use crate::plot::axis::fmt_sig;
use crate::plot::{footer, plan, svg_bytes};
use crate::results::ResultsFile;

/// Size the charts are drawn at; the page scales them to its width.
const CHART_SIZE: (u32, u32) = (1280, 800);

/// Columns of the per-cell table, by CSV name, with their headings.
const CELL_COLUMNS: &[(&str, &str)] = &[
    ("group", "group"),
    ("backend", "backend"),
    ("workload", "workload"),
    ("connections", "conns"),
    ("depth", "depth"),
    ("size_bytes", "size B"),
    ("rate_target", "offered req/s"),
    ("idle", "idle"),
    ("server_cores", "server cores"),
    ("repeat", "repeat"),
    ("status", "status"),
    ("throughput_rps", "req/s"),
    ("p50_us", "p50 µs"),
    ("p90_us", "p90 µs"),
    ("p99_us", "p99 µs"),
    ("p999_us", "p99.9 µs"),
    ("max_us", "max µs"),
    ("cpu_user_us_per_req", "user µs/req"),
    ("cpu_sys_us_per_req", "sys µs/req"),
    ("syscalls_per_req", "syscalls/req"),
    ("ctx_per_req", "ctx sw/req"),
    ("rss_per_conn_bytes", "RSS B/conn"),
    ("client_bound", "client-bound"),
    ("errors", "errors"),
    ("reason", "reason"),
];

const STYLE: &str = "\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1320px;margin:0 auto;padding:16px 24px 48px;background:#fff}
h1{font-size:1.7em;margin:.4em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
code{background:#f1f1f1;padding:0 3px;border-radius:3px;font-size:.92em}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f4f4f4;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:' \\25B2'}
table.sortable th[aria-sort=descending]::after{content:' \\25BC'}
figure.chart{margin:1.2em 0 2em}
figure.chart svg{display:block;width:100%;height:auto;aspect-ratio:1280/800;border:1px solid #eee}
figcaption{color:#444;margin-top:.4em}
nav ul{columns:2;font-size:14px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
";

/// Sorts `table.sortable` by a clicked (or Enter-pressed) heading: numbers by value (with
/// k/M/G and µs/ms/s read), text alphabetically, empty cells last either way.
const SCRIPT: &str = r#"(function () {
  var units = {k: 1e3, M: 1e6, G: 1e9, 'µs': 1, ms: 1e3, s: 1e6};
  function key(cell) {
    var v = (cell.getAttribute('data-v') || cell.textContent).trim();
    if (v === '') return null;
    var m = /^(-?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(k|M|G|µs|ms|s)?$/.exec(v);
    if (m) return parseFloat(m[1]) * (m[2] ? units[m[2]] : 1);
    return v.toLowerCase();
  }
  function compare(a, b) {
    if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
    var na = typeof a === 'number', nb = typeof b === 'number';
    if (na !== nb) return na ? -1 : 1;
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.tabIndex = 0;
      function sort() {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (r, n) {
          return {row: r, key: key(r.cells[i]), n: n};
        });
        rows.sort(function (x, y) {
          if (x.key === null || y.key === null) return compare(x.key, y.key) || x.n - y.n;
          return (asc ? compare(x.key, y.key) : compare(y.key, x.key)) || x.n - y.n;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }
      });
    });
  });
})();"#;

/// The HTML report of `results`.
pub fn html(results: &ResultsFile) -> anyhow::Result<String> {
    let (figs, warnings) = plan(results);
    let foot = footer(results);
    // Chart links in the write-up become links to the charts on the page.
    let md = markdown(results, &PlotLinks::new(".", "svg"));
    let body = md.split("\n## Charts\n").next().unwrap_or(&md);

    let mut h = String::new();
    let title = format!("ringside results: {} suite", results.plan.suite);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    h.push_str(&md_to_html(body));

    h.push_str("<h2 id=\"charts\">Charts</h2>\n");
    if figs.is_empty() {
        h.push_str("<p>No charts: no cell measured anything.</p>\n");
    } else {
        h.push_str("<nav><ul>\n");
        for f in &figs {
            let _ = writeln!(
                h,
                "<li><a href=\"#chart-{}\">{}</a></li>",
                esc(&f.name),
                esc(&f.title)
            );
        }
        h.push_str("</ul></nav>\n");
    }
    for w in &warnings {
        let _ = writeln!(h, "<p><strong>Left out:</strong> {}</p>", esc(w));
    }
    for f in &figs {
        let svg = svg_bytes(f, &foot, CHART_SIZE.0, CHART_SIZE.1)?;
        let svg = String::from_utf8(svg).context("a chart's SVG is not UTF-8")?;
        let _ = writeln!(
            h,
            "<figure class=\"chart\" id=\"chart-{}\">\n{}\n<figcaption><strong>{}</strong>. {}.{}</figcaption>\n</figure>",
            esc(&f.name),
            inline_svg(&svg, &f.title),
            esc(&f.title),
            esc(&f.subtitle),
            f.notes
                .iter()
                .map(|n| format!(" {}", esc(n)))
                .collect::<String>()
        );
    }

    let mut summary = Vec::new();
    crate::compare::summary::print(results, &mut summary)
        .context("formatting the summary table")?;
    let _ = writeln!(
        h,
        "<h2 id=\"summary\">Terminal summary</h2>\n<details><summary>The table <code>harness \
         compare</code> printed</summary>\n<pre>{}</pre>\n</details>",
        esc(&String::from_utf8_lossy(&summary))
    );

    cell_table(&mut h, results);
    let _ = write!(
        h,
        "<p><small>{}</small></p>\n</main>\n<script>\n{SCRIPT}\n</script>\n</body>\n</html>\n",
        esc(&foot)
    );
    Ok(h)
}

/// Every cell, one row each, sortable; the CSV has every column at full precision.
fn cell_table(h: &mut String, results: &ResultsFile) {
    let names = columns();
    let picks: Vec<(usize, &str)> = CELL_COLUMNS
        .iter()
        .filter_map(|(name, head)| names.iter().position(|n| n == name).map(|i| (i, *head)))
        .collect();
    let _ = writeln!(
        h,
        "<h2 id=\"cells\">Every cell</h2>\n<p>One row per cell and repeat, in run order; \
         click a heading to sort. Latency is corrected for coordinated omission under open \
         loop. <code>harness report --format csv</code> has every figure at full \
         precision.</p>\n<div class=\"wide\"><table class=\"sortable\" id=\"cells-table\">\
         \n<thead><tr>"
    );
    for (_, head) in &picks {
        let _ = write!(h, "<th>{}</th>", esc(head));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in rows(results) {
        h.push_str("<tr>");
        for (i, _) in &picks {
            let v = row.get(*i).map(String::as_str).unwrap_or("");
            match v.parse::<f64>() {
                Ok(n) if n.is_finite() => {
                    let _ = write!(
                        h,
                        "<td class=\"num\" data-v=\"{}\">{}</td>",
                        esc(v),
                        esc(&fmt_sig(n, 4))
                    );
                }
                _ => {
                    let _ = write!(h, "<td>{}</td>", esc(v));
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

/// `svg` with its fixed size dropped (the page sizes it) and its title as a label.
fn inline_svg(svg: &str, title: &str) -> String {
    let body = svg.trim_start();
    let body = match body.find("<svg") {
        Some(i) => &body[i..],
        None => body,
    };
    let open_end = body.find('>').unwrap_or(0);
    let (open, rest) = body.split_at(open_end);
    let open = open
        .replacen(&format!(" width=\"{}\"", CHART_SIZE.0), "", 1)
        .replacen(&format!(" height=\"{}\"", CHART_SIZE.1), "", 1);
    format!(
        "{open} role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"xMidYMid meet\"{rest}",
        esc(title)
    )
}

/// `s` safe in HTML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The markdown the write-up uses (headings, pipe tables, lists, paragraphs; inline code,
/// bold and links) as HTML. Only ringside's own markdown passes through here.
fn md_to_html(md: &str) -> String {
    let lines: Vec<&str> = md.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() {
            i += 1;
            continue;
        }
        let heading = [("### ", 3), ("## ", 2), ("# ", 1)]
            .into_iter()
            .find_map(|(p, n)| l.strip_prefix(p).map(|t| (n, t)));
        if let Some((n, text)) = heading {
            let _ = writeln!(
                out,
                "<h{n} id=\"{}\">{}</h{n}>",
                slug(text),
                inline_md(text)
            );
            i += 1;
        } else if l.starts_with('|') {
            let start = i;
            while i < lines.len() && lines[i].starts_with('|') {
                i += 1;
            }
            table(&mut out, &lines[start..i]);
        } else if l.starts_with("- ") {
            out.push_str("<ul>\n");
            while i < lines.len() && lines[i].starts_with("- ") {
                let _ = writeln!(out, "<li>{}</li>", inline_md(&lines[i][2..]));
                i += 1;
            }
            out.push_str("</ul>\n");
        } else {
            let mut para = Vec::new();
            while i < lines.len()
                && !lines[i].trim().is_empty()
                && !lines[i].starts_with('#')
                && !lines[i].starts_with('|')
                && !lines[i].starts_with("- ")
            {
                para.push(inline_md(lines[i]));
                i += 1;
            }
            let _ = writeln!(out, "<p>{}</p>", para.join("<br>\n"));
        }
    }
    out
}

fn table(out: &mut String, lines: &[&str]) {
    let rows: Vec<Vec<String>> = lines.iter().map(|l| split_row(l)).collect();
    let Some(head) = rows.first() else { return };
    let is_rule = |r: &[String]| {
        !r.is_empty()
            && r.iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')))
    };
    let (aligns, body): (Vec<bool>, &[Vec<String>]) = match rows.get(1) {
        Some(r) if is_rule(r) => (r.iter().map(|c| c.ends_with(':')).collect(), &rows[2..]),
        _ => (vec![false; head.len()], &rows[1..]),
    };
    let class = |i: usize| {
        if aligns.get(i).copied().unwrap_or(false) {
            " class=\"num\""
        } else {
            ""
        }
    };
    // A key–value table (empty headings) has nothing to sort by.
    let sortable = head.iter().any(|c| !c.is_empty());
    if sortable {
        out.push_str("<div class=\"wide\"><table class=\"sortable\">\n<thead><tr>");
        for (i, c) in head.iter().enumerate() {
            let _ = write!(out, "<th{}>{}</th>", class(i), inline_md(c));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
    } else {
        out.push_str("<div class=\"wide\"><table>\n<tbody>\n");
    }
    for r in body {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(i), inline_md(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

/// A pipe-table row's cells, `\|` read as a literal pipe.
fn split_row(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    cells.push(cur.trim().to_string());
    cells
}

/// Inline markdown: `code`, **bold**, [text](href); everything else escaped. A link to a
/// chart file ("name.svg") points at the chart on this page.
fn inline_md(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let mut bold = false;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                let _ = write!(out, "<code>{}</code>", esc(&after[..end]));
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some((text, tail)) = after.split_once("](") {
                if let Some((href, tail)) = tail.split_once(')') {
                    let href = match href.strip_suffix(".svg") {
                        Some(stem) if !stem.contains('/') => format!("#chart-{stem}"),
                        _ => href.to_string(),
                    };
                    let _ = write!(out, "<a href=\"{}\">{}</a>", esc(&href), inline_md(text));
                    rest = tail;
                    continue;
                }
            }
        }
        out.push_str(&esc(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// An id from heading text: letters, digits and '-'.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    format!("s-{}", out.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_subset_converts() {
        let html = md_to_html(
            "# Title\n\nSome `code` and **bold**\nsecond line\n\n| a | b |\n| --- | ---: |\n\
             | x\\|y | 1.5k |\n\n- [chart](churn.svg)\n- [ext](../x.png)\n",
        );
        assert!(html.contains("<h1 id=\"s-title\">Title</h1>"), "{html}");
        assert!(html
            .contains("<p>Some <code>code</code> and <strong>bold</strong><br>\nsecond line</p>"));
        assert!(html.contains("<table class=\"sortable\">"));
        assert!(html.contains("<th class=\"num\">b</th>"));
        assert!(html.contains("<td>x|y</td><td class=\"num\">1.5k</td>"));
        assert!(html.contains("<li><a href=\"#chart-churn\">chart</a></li>"));
        assert!(html.contains("<a href=\"../x.png\">ext</a>"));
        // A key–value table has no heading row to sort by.
        let kv = md_to_html("| | |\n| --- | --- |\n| host | vm |\n");
        assert_eq!(
            kv,
            "<div class=\"wide\"><table>\n<tbody>\n<tr><td>host</td><td>vm</td></tr>\n</tbody>\n</table></div>\n"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(inline_md("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(esc("<script>"), "&lt;script&gt;");
    }

    #[test]
    fn svg_loses_its_fixed_size() {
        let s = inline_svg(
            "<svg width=\"1280\" height=\"800\" viewBox=\"0 0 1280 800\" xmlns=\"x\">\n<rect/></svg>",
            "T \"q\"",
        );
        assert!(s.starts_with("<svg viewBox=\"0 0 1280 800\" xmlns=\"x\" role=\"img\" aria-label=\"T &quot;q&quot;\""), "{s}");
        assert!(s.ends_with("<rect/></svg>"));
    }
}
