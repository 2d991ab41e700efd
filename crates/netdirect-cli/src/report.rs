//! perftest-style tables and JSON for the personas.

use serde_json::{Value, json};

use crate::perf::{BwRow, ClientRun, LatRow, Opts, Row, Stop, Test};

/// perftest's separator line.
pub const LINE: &str =
    "---------------------------------------------------------------------------------------";

/// Bandwidth in the chosen unit: MiB/s (2^20 B), or Gb/s (10^9 bit) with `--report_gbits`.
pub fn bw_unit(bytes_per_sec: f64, gbits: bool) -> f64 {
    if gbits {
        bytes_per_sec * 8.0 / 1e9
    } else {
        bytes_per_sec / (1u64 << 20) as f64
    }
}

/// perftest's header block (`ctx_print_test_info`), adapted to an iWARP soft RNIC.
pub fn header(opts: &Opts, device: &str) -> String {
    let mut s = String::new();
    s += LINE;
    s += "\n";
    s += &format!("                    {}\n", opts.test.title());
    s += &format!(" Dual-port       : OFF\t\tDevice         : {device}\n");
    s += &format!(" Number of qps   : {}\t\tTransport type : IW\n", opts.qps);
    s += " Connection type : RC\t\tUsing SRQ      : OFF\n";
    if opts.test.is_bw() {
        s += &format!(" TX depth        : {}\n", opts.tx_depth);
    }
    if matches!(opts.test, Test::ReadBw | Test::ReadLat) {
        s += &format!(" Outstand reads  : {}\n", opts.outs);
    }
    s += &format!(" Max inline data : {}[B]\n", opts.inline);
    s += " rdma_cm QPs\t : ON\n";
    s += " Data ex. method : nd send/recv (NDP1)\n";
    match opts.stop {
        Stop::Iters(n) => s += &format!(" Iterations      : {n}\n"),
        Stop::Duration(d) => s += &format!(" Duration        : {} [s]\n", d.as_secs_f64()),
        Stop::Sweep {
            max_iters,
            max_volume,
        } => {
            s += &format!(" Iterations      : min({max_iters}, {max_volume} / size)\n");
        }
    }
    s += LINE;
    s
}

/// The address lines after the header.
pub fn addresses(run: &ClientRun) -> String {
    format!(
        " local address: IP {} port {} RKey {:#010x} VAddr {:#018x}\n remote address: IP {} port {} RKey {:#010x} VAddr {:#018x}\n{LINE}",
        run.local.ip(),
        run.local.port(),
        run.buffers[0].1,
        run.buffers[0].0,
        run.remote.ip(),
        run.remote.port(),
        run.buffers[1].1,
        run.buffers[1].0,
    )
}

/// The column line of a result table.
pub fn columns(test: Test, gbits: bool) -> String {
    if test.is_bw() {
        let u = if gbits { "Gb/sec" } else { "MiB/sec" };
        format!(" #bytes     #iterations    BW peak[{u}]    BW average[{u}]   MsgRate[Mpps]")
    } else {
        " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]".to_string()
    }
}

/// One result line.
pub fn row_line(row: &Row, gbits: bool) -> String {
    match row {
        Row::Bw(r) => format!(
            " {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}",
            r.size,
            r.iters,
            bw_unit(r.peak, gbits),
            bw_unit(r.avg, gbits),
            r.msg_rate / 1e6
        ),
        Row::Lat(r) => {
            let l = lat_stats(r);
            format!(
                " {:<7} {:<10}  {:<7.2}        {:<7.2}      {:<7.2}     \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}",
                r.size, l.n, l.min, l.max, l.typical, l.avg, l.stdev, l.p99, l.p999
            )
        }
    }
}

/// perftest's `--output`: one figure of a row (bandwidth, message_rate or latency).
pub fn one_figure(row: &Row, what: &str, gbits: bool) -> String {
    match (row, what) {
        (Row::Bw(r), "message_rate") => format!("{:.6}", r.msg_rate / 1e6),
        (Row::Bw(r), _) => format!("{:.2}", bw_unit(r.avg, gbits)),
        (Row::Lat(r), _) => format!("{:.2}", lat_stats(r).typical),
    }
}

/// A latency histogram (`-H`): sample counts per bucket of the HDR histogram, in usec.
pub fn histogram(r: &LatRow) -> String {
    let mut s = format!(
        "{LINE}\n Latency histogram, {} octets ({} samples)\n {:>14}  {:>10}  {:>8}\n",
        r.size,
        r.hist.len(),
        "<= usec",
        "count",
        "cum %"
    );
    let total = r.hist.len().max(1) as f64;
    let mut cum = 0u64;
    for v in r.hist.iter_log(1000, 2.0) {
        let n = v.count_since_last_iteration();
        if n == 0 {
            continue;
        }
        cum += n;
        s += &format!(
            " {:>14.2}  {:>10}  {:>7.2}%\n",
            v.value_iterated_to() as f64 / 1000.0,
            n,
            100.0 * cum as f64 / total
        );
    }
    s
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct LatStats {
    /// Samples.
    pub n: u64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Median (perftest's t_typical).
    pub typical: f64,
    /// Mean.
    pub avg: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// The figures of a latency histogram (nanoseconds) in microseconds.
pub fn lat_stats(r: &LatRow) -> LatStats {
    let h = &r.hist;
    let us = |ns: u64| ns as f64 / 1000.0;
    LatStats {
        n: h.len(),
        min: us(h.min()),
        max: us(h.max()),
        typical: us(h.value_at_quantile(0.5)),
        avg: h.mean() / 1000.0,
        stdev: h.stdev() / 1000.0,
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
    }
}

/// A result row as perftest's JSON keys.
pub fn row_json(row: &Row, gbits: bool) -> Value {
    match row {
        Row::Bw(BwRow {
            size,
            iters,
            peak,
            avg,
            msg_rate,
            ..
        }) => json!({
            "MsgSize": size,
            "n_iterations": iters,
            "BW_peak": bw_unit(*peak, gbits),
            "BW_average": bw_unit(*avg, gbits),
            "MsgRate": msg_rate / 1e6,
        }),
        Row::Lat(r) => {
            let l = lat_stats(r);
            json!({
                "MsgSize": r.size,
                "n_iterations": l.n,
                "t_min": l.min,
                "t_max": l.max,
                "t_typical": l.typical,
                "t_avg": l.avg,
                "t_stdev": l.stdev,
                "percentile_99": l.p99,
                "percentile_99.9": l.p999,
            })
        }
    }
}

/// The whole client report as JSON (`test_info` and `results`, perftest's keys; `results` is a
/// list, one entry per size).
pub fn client_json(opts: &Opts, run: &ClientRun, gbits: bool) -> Value {
    json!({
        "test_info": {
            "test": opts.test.name(),
            "title": opts.test.title(),
            "device": "soft",
            "transport_type": "IW",
            "connection_type": "RC",
            "number_of_qps": opts.qps,
            "tx_depth": opts.tx_depth,
            "max_inline_data": opts.inline,
            "local_address": run.local.to_string(),
            "remote_address": run.remote.to_string(),
            "units": if opts.test.is_bw() { if gbits { "Gb/sec" } else { "MiB/sec" } } else { "usec" },
            "data_verified": run.verified,
        },
        "results": run.rows.iter().map(|r| row_json(r, gbits)).collect::<Vec<_>>(),
    })
}
