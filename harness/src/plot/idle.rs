//! Chart 7: what idle connections cost. Active throughput and p99 against the number of
//! idle connections held open, and memory per connection: the server's user-space RSS, and
//! the kernel's slab growth as a dashed line (socket buffer memory from files written
//! before slab was measured).

use std::collections::BTreeMap;

use super::axis::{Axis, Unit};
use super::common::{
    cores_phrase, cores_slug, line_values, shape_slug, standard_keys, sweep_lines,
};
use super::figure::{ChartKind, Figure, KeyItem, Panel};
use crate::analysis::{
    describe_repeats, describe_timing, fmt_bytes, p99, rss_per_conn_kib, slab_per_conn_kib,
    sock_mem_per_conn_kib, throughput, Index, Shape,
};
use crate::results::WorkloadKind;

/// One figure per idle sweep (same active workload, at least two idle counts).
pub(super) fn idle_effect(index: &Index<'_>) -> Vec<Figure> {
    let mut families: BTreeMap<Shape, Vec<Shape>> = BTreeMap::new();
    for s in index.shapes(|s| s.kind == WorkloadKind::Idle && s.rate_milli.is_none()) {
        families.entry(Shape { idle: 0, ..s }).or_default().push(s);
    }
    let mut figs = Vec::new();
    for (family, members) in families {
        let xs: Vec<f64> = members
            .iter()
            .filter(|s| index.of_shape(s).any(|g| !g.ok.is_empty()))
            .map(|s| f64::from(s.idle))
            .collect();
        let backends = index.measured_backends(&members);
        if xs.len() < 2 || backends.is_empty() {
            continue;
        }
        let idle = |s: &Shape| f64::from(s.idle);
        let x = || Axis::sweep("idle connections", Unit::Si, &xs);
        let tput = sweep_lines(index, &members, &backends, idle, throughput, true, false);
        let lat = sweep_lines(index, &members, &backends, idle, p99, true, false);
        let mut mem = sweep_lines(
            index,
            &members,
            &backends,
            idle,
            rss_per_conn_kib,
            false,
            false,
        );
        // Slab growth is the kernel's cost of a connection; socket buffer memory (all older
        // files have) stays near 0 for idle sockets and is drawn only in its absence.
        let mut kernel = sweep_lines(
            index,
            &members,
            &backends,
            idle,
            slab_per_conn_kib,
            false,
            true,
        );
        let mut kernel_text = "memory: kernel slab growth per connection (system-wide, both \
                               ends of each loopback connection)";
        if kernel.is_empty() {
            kernel = sweep_lines(
                index,
                &members,
                &backends,
                idle,
                sock_mem_per_conn_kib,
                false,
                true,
            );
            kernel_text = "memory: kernel socket buffer memory per connection (system-wide, \
                           client sockets included)";
        }
        let has_kernel = !kernel.is_empty();
        mem.extend(kernel);

        let mut panels = vec![
            Panel::of_lines(
                "active throughput",
                x(),
                Axis::value(
                    "active throughput (requests/s)",
                    Unit::Si,
                    &line_values(&tput),
                    true,
                ),
                tput.clone(),
            ),
            // Tail latency spans decades as poll(2) degrades: always logarithmic.
            Panel::of_lines(
                "p99 latency (active connections)",
                x(),
                Axis::log_value("p99 latency (µs, ms)", Unit::Micros, &line_values(&lat)),
                lat.clone(),
            ),
        ];
        let mut notes = Vec::new();
        if mem.is_empty() {
            notes.push("Memory per connection was not recorded.".to_string());
        } else {
            panels.push(Panel::of_lines(
                "memory per connection",
                x(),
                Axis::value(
                    "memory per open connection (KiB)",
                    Unit::Plain,
                    &line_values(&mem),
                    true,
                ),
                mem.clone(),
            ));
        }
        let mut all = tput;
        all.extend(lat);
        all.extend(mem);
        let mut keys = Vec::new();
        if has_kernel {
            keys.push(KeyItem::Line {
                dashed: false,
                text: "memory: server RSS growth per connection".to_string(),
            });
            keys.push(KeyItem::Line {
                dashed: true,
                text: kernel_text.to_string(),
            });
        }
        keys.extend(standard_keys(&all, &[]));
        notes.extend(index.left_out_note(&members, |s| format!("{} idle connections", s.idle)));
        let mut subtitle = vec![format!(
            "{} active echo connections, {} messages, depth {}",
            family.connections,
            fmt_bytes(family.size),
            family.depth
        )];
        subtitle.extend(describe_timing(index, &members));
        subtitle.push(cores_phrase(&family));
        subtitle.push(describe_repeats(index, &members));
        figs.push(Figure {
            name: format!(
                "idle-effect-{}{}",
                shape_slug(&family, true).trim_start_matches("idle-"),
                cores_slug(index, &family)
            ),
            kind: ChartKind::IdleEffect,
            title: "Idle connections: active throughput, tail latency and memory".to_string(),
            subtitle: subtitle.join(" · "),
            panels,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes,
            shapes: members,
        });
    }
    figs
}
