//! `nd stat`: the counters of running processes' adapters, and `--counters`: a run's own.
//!
//! A process publishes its adapters' counters when its soft provider is told to
//! (`EngineConfig::publish_counters`; `nd` does unless `--no-publish-counters`): one file per
//! adapter, `netdirect.<pid>.<n>.counters` in [`publish_dir`] (`$NETDIRECT_STAT_DIR`, else
//! `/dev/shm`), rewritten atomically every 500 ms and removed when the adapter closes. `nd stat`
//! reads those files — no shared memory mapping, no socket, nothing on the publisher's data
//! path — and removes files whose process is gone (killed before it could remove them) and
//! skips files not rewritten for 10 s (their pid was reused).
//!
//! * `nd stat`: a table per adapter (the NDK set, the detail that is not zero, FPDUs and octets
//!   by opcode, Terminates by layer/type/code);
//! * `--watch N`: the table every N seconds with per-second rates;
//! * `--json`: one JSON document;
//! * `--prometheus`: Prometheus' text exposition format (`netdirect_<counter>_total`, labels
//!   `adapter` and `pid`), for a node exporter's textfile collector or a scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use netdirect::Adapter;
use netdirect::counters::{
    COUNTERS_GUID, COUNTERS_VERSION, Counter, Counters, CountersInterface, Kind, OPCODES,
    Published, opcode_name, publish_dir,
};
use netdirect_types::Status;

use crate::error::{Error, Result};

/// `nd stat`'s flags.
#[derive(Args, Debug, Clone)]
pub struct StatArgs {
    /// Only this process's adapters.
    #[arg(long = "pid")]
    pub pid: Option<u32>,
    /// Refresh every SECS seconds with per-second rates, until interrupted (or --count).
    #[arg(short = 'w', long = "watch", value_name = "SECS")]
    pub watch: Option<f64>,
    /// With --watch: stop after this many screens.
    #[arg(long = "count")]
    pub count: Option<u64>,
    /// One JSON document.
    #[arg(long = "json", conflicts_with = "prometheus")]
    pub json: bool,
    /// Prometheus' text exposition format.
    #[arg(long = "prometheus")]
    pub prometheus: bool,
    /// Where published counters are (default: $NETDIRECT_STAT_DIR, else /dev/shm).
    #[arg(long = "dir")]
    pub dir: Option<PathBuf>,
}

/// A published file older than this is ignored (publishers rewrite theirs every 500 ms).
const STALE_MS: u64 = 10_000;

/// Whether process `pid` still runs (Linux: `/proc/<pid>`; elsewhere assumed).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Every adapter published in `dir` by a running process (`pid`: only its), sorted by pid
/// and adapter.
pub fn read_published(dir: &Path, pid: Option<u32>) -> Result<Vec<Published>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::status(
            format!("cannot read {}: {e}", dir.display()),
            Status::NOT_FOUND,
        )
    })?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix("netdirect.")
            .and_then(|r| r.strip_suffix(".counters"))
        else {
            continue;
        };
        let Some(file_pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid.is_some_and(|p| p != file_pid) {
            continue;
        }
        if !alive(file_pid) {
            // Left by a process that was killed: nobody else will remove it.
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        // A file may vanish between the listing and the read (its adapter closed).
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        // Not rewritten for a while: left by a process whose pid was reused since.
        if let Some(p) = Published::parse(&text)
            .ok()
            .filter(|p| now_ms.saturating_sub(p.time_ms) < STALE_MS)
        {
            out.push(p);
        }
    }
    out.sort_by(|a, b| (a.pid, &a.adapter).cmp(&(b.pid, &b.adapter)));
    Ok(out)
}

/// The counters as one JSON object.
pub fn counters_json(c: &Counters) -> serde_json::Value {
    let mut counters = serde_json::Map::new();
    for &k in Counter::ALL {
        counters.insert(k.name().into(), c.get(k).into());
    }
    let mut opcodes = serde_json::Map::new();
    for op in 0..OPCODES {
        let o = c.opcode(op);
        if o != Default::default() {
            opcodes.insert(
                opcode_name(op).into(),
                serde_json::json!({
                    "fpdus_in": o.fpdus_in, "octets_in": o.octets_in,
                    "fpdus_out": o.fpdus_out, "octets_out": o.octets_out,
                }),
            );
        }
    }
    let terminates: Vec<_> = c
        .terminates
        .iter()
        .map(|t| {
            serde_json::json!({
                "direction": if t.sent { "sent" } else { "received" },
                "layer": t.layer, "type": t.error_type, "code": t.error_code, "count": t.count,
            })
        })
        .collect();
    serde_json::json!({ "counters": counters, "opcodes": opcodes, "terminates": terminates })
}

/// `nd stat --json`: one document with every adapter.
pub fn json(adapters: &[Published]) -> serde_json::Value {
    let list: Vec<_> = adapters
        .iter()
        .map(|p| {
            let mut v = counters_json(&p.counters);
            v["pid"] = p.pid.into();
            v["adapter"] = p.adapter.clone().into();
            v["time_ms"] = p.time_ms.into();
            v
        })
        .collect();
    serde_json::json!({ "adapters": list })
}

/// A label value escaped for the text format (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP, TYPE, then its samples (`labels`, value); nothing when it has
/// no samples.
fn family(out: &mut String, name: &str, kind: Kind, help: &str, samples: &[(String, u64)]) {
    if samples.is_empty() {
        return;
    }
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// `nd stat --prometheus`: the text exposition format. Counters are
/// `netdirect_<snake_name>_total`, gauges (`ActiveConnection`, the high-water marks)
/// `netdirect_<snake_name>`; per-opcode families carry an `opcode` label, Terminates
/// `direction`, `layer`, `type` and `code`; every sample `adapter` and `pid`.
pub fn prometheus(adapters: &[Published]) -> String {
    let mut out = String::new();
    let base = |p: &Published| format!("adapter=\"{}\",pid=\"{}\"", label(&p.adapter), p.pid);
    for &k in Counter::ALL {
        let name = match k.kind() {
            Kind::Counter => format!("netdirect_{}_total", k.snake_name()),
            Kind::Gauge => format!("netdirect_{}", k.snake_name()),
        };
        let samples: Vec<_> = adapters
            .iter()
            .map(|p| (base(p), p.counters.get(k)))
            .collect();
        family(&mut out, &name, k.kind(), k.help(), &samples);
    }
    type Field = fn(&netdirect::counters::OpcodeCounts) -> u64;
    let fields: [(&str, &str, Field); 4] = [
        ("fpdus_in", "FPDUs received, by RDMAP opcode.", |o| {
            o.fpdus_in
        }),
        (
            "octets_in",
            "Payload octets received, by RDMAP opcode.",
            |o| o.octets_in,
        ),
        ("fpdus_out", "FPDUs sent, by RDMAP opcode.", |o| o.fpdus_out),
        ("octets_out", "Payload octets sent, by RDMAP opcode.", |o| {
            o.octets_out
        }),
    ];
    for (name, help, get) in fields {
        let mut samples = Vec::new();
        for p in adapters {
            for op in 0..OPCODES {
                let o = p.counters.opcode(op);
                if o != Default::default() {
                    samples.push((
                        format!("{},opcode=\"{}\"", base(p), opcode_name(op)),
                        get(&o),
                    ));
                }
            }
        }
        family(
            &mut out,
            &format!("netdirect_{name}_total"),
            Kind::Counter,
            help,
            &samples,
        );
    }
    let mut samples = Vec::new();
    for p in adapters {
        for t in &p.counters.terminates {
            samples.push((
                format!(
                    "{},direction=\"{}\",layer=\"{}\",type=\"{}\",code=\"{}\"",
                    base(p),
                    if t.sent { "sent" } else { "received" },
                    t.layer,
                    t.error_type,
                    t.error_code
                ),
                t.count,
            ));
        }
    }
    family(
        &mut out,
        "netdirect_terminate_codes_total",
        Kind::Counter,
        "Terminate messages by direction, layer, error type and error code.",
        &samples,
    );
    out
}

/// Per second, from `before` to `now` over `secs` (counters only; "-" without an interval).
fn rate(now: u64, before: Option<u64>, secs: f64) -> String {
    match before {
        Some(b) if secs > 0.0 => format!("{:.0}", now.saturating_sub(b) as f64 / secs),
        _ => "-".into(),
    }
}

/// The table of one adapter; with `before` (and the seconds between), per-second rates.
pub fn table(p: &Published, before: Option<&Published>) -> String {
    let secs = before.map_or(0.0, |b| p.time_ms.saturating_sub(b.time_ms) as f64 / 1000.0);
    let prev = before.map(|b| &b.counters);
    let c = &p.counters;
    let mut s = String::new();
    let _ = writeln!(s, "pid {}  adapter {}", p.pid, p.adapter);
    let _ = writeln!(s, "  {:<22} {:>16} {:>12}", "counter", "value", "/s");
    for &k in Counter::ALL {
        // The NDK set always; the detail when it is not zero.
        if (k as usize) >= 10 && c.get(k) == 0 {
            continue;
        }
        let r = match k.kind() {
            Kind::Counter => rate(c.get(k), prev.map(|x| x.get(k)), secs),
            Kind::Gauge => String::new(),
        };
        let line = format!("  {:<22} {:>16} {:>12}", k.name(), c.get(k), r);
        let _ = writeln!(s, "{}", line.trim_end());
    }
    let rows: Vec<usize> = (0..OPCODES)
        .filter(|&op| c.opcode(op) != Default::default())
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            s,
            "  {:<18} {:>10} {:>14} {:>10} {:>14} {:>12} {:>12}",
            "opcode", "FPDUs in", "octets in", "FPDUs out", "octets out", "in B/s", "out B/s"
        );
        for op in rows {
            let o = c.opcode(op);
            let b = prev.map(|x| x.opcode(op));
            let _ = writeln!(
                s,
                "  {:<18} {:>10} {:>14} {:>10} {:>14} {:>12} {:>12}",
                opcode_name(op),
                o.fpdus_in,
                o.octets_in,
                o.fpdus_out,
                o.octets_out,
                rate(o.octets_in, b.map(|b| b.octets_in), secs),
                rate(o.octets_out, b.map(|b| b.octets_out), secs),
            );
        }
    }
    for t in &c.terminates {
        let _ = writeln!(
            s,
            "  Terminate {:<8} layer {} type {} code {}: {}",
            if t.sent { "sent" } else { "received" },
            t.layer,
            t.error_type,
            t.error_code,
            t.count
        );
    }
    s
}

/// `nd stat`.
pub fn run(a: &StatArgs) -> Result<()> {
    let dir = a.dir.clone().unwrap_or_else(publish_dir);
    let Some(every) = a.watch else {
        let list = read_published(&dir, a.pid)?;
        if a.json {
            crate::outln!("{}", json(&list));
        } else if a.prometheus {
            crate::out!("{}", prometheus(&list));
        } else if list.is_empty() {
            crate::outln!(
                "no published counters in {} (nd publishes them while it runs; library users set EngineConfig::publish_counters)",
                dir.display()
            );
        } else {
            for p in &list {
                crate::outln!("{}", table(p, None));
            }
        }
        return Ok(());
    };
    if !(every > 0.0 && every.is_finite()) {
        return Err(Error::msg(
            "--watch: the interval must be a positive number of seconds",
        ));
    }
    let mut before: HashMap<(u32, String), Published> = HashMap::new();
    let mut screens = 0u64;
    loop {
        let list = read_published(&dir, a.pid)?;
        if a.json {
            crate::outln!("{}", json(&list));
        } else if a.prometheus {
            crate::out!("{}", prometheus(&list));
        } else {
            // Clear the screen and go home, then one table per adapter.
            let mut screen = String::from("\x1b[H\x1b[2J");
            let _ = writeln!(
                screen,
                "nd stat — every {every} s, {} adapter(s), {}",
                list.len(),
                dir.display()
            );
            for p in &list {
                let key = (p.pid, p.adapter.clone());
                screen.push('\n');
                screen.push_str(&table(p, before.get(&key)));
            }
            crate::out!("{screen}");
        }
        before = list
            .into_iter()
            .map(|p| ((p.pid, p.adapter.clone()), p))
            .collect();
        screens += 1;
        if a.count.is_some_and(|n| screens >= n) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

/// The adapters this process opened, for `--counters`: each one's interface and counters
/// when it was opened.
static RUN: Mutex<Vec<(String, Arc<CountersInterface>, Counters)>> = Mutex::new(Vec::new());

/// Remembers an adapter for `--counters` (every [`crate::conn::Side::open`] calls it).
pub fn track(adapter: &dyn Adapter, address: &str) {
    let Ok(ext) = adapter.query_extension(&COUNTERS_GUID, COUNTERS_VERSION) else {
        return;
    };
    if let Ok(i) = ext.dispatch.downcast::<CountersInterface>() {
        let now = i.query();
        if let Ok(mut run) = RUN.lock() {
            run.push((address.to_string(), i, now));
        }
    }
}

/// `--counters`: what happened on each adapter this process opened, since it was opened (the
/// interface outlives the adapter, so this works after the run closed them).
pub fn run_deltas() -> String {
    let Ok(run) = RUN.lock() else {
        return String::new();
    };
    let mut s = String::new();
    for (address, i, at_open) in run.iter() {
        if !i.counting() {
            let _ = writeln!(
                s,
                "counters of this run: none on {address} (built without the `counters` feature)"
            );
            continue;
        }
        let delta = i.query().delta(at_open);
        let p = Published {
            pid: std::process::id(),
            adapter: address.clone(),
            time_ms: 0,
            counters: delta,
        };
        let _ = writeln!(s, "counters of this run:");
        s.push_str(&table(&p, None));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_and_labels() {
        let mut c = Counters::default();
        c.set(Counter::Connect, 2);
        c.opcodes[0].octets_out = 5;
        c.add_terminate(true, 1, 1, 0, 1);
        c.derive_totals();
        let text = prometheus(&[Published {
            pid: 7,
            adapter: "a\"b".into(),
            time_ms: 1,
            counters: c,
        }]);
        assert!(text.contains("# TYPE netdirect_connect_total counter\n"));
        assert!(text.contains("netdirect_connect_total{adapter=\"a\\\"b\",pid=\"7\"} 2\n"));
        assert!(text.contains("# TYPE netdirect_active_connection gauge\n"));
        assert!(text.contains(
            "netdirect_octets_out_total{adapter=\"a\\\"b\",pid=\"7\",opcode=\"Write\"} 5\n"
        ));
        assert!(text.contains("direction=\"sent\",layer=\"1\",type=\"1\",code=\"0\"} 1\n"));
    }
}
