//! perftest-style tables and JSON for the personas.

use netdirect_types::RdmaTechnology;
use serde::Serialize;

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

/// perftest's name for a transport: `IW` for iWARP, `IB` for InfiniBand and RoCE (perftest
/// prints the link layer apart).
pub fn transport_type(technology: RdmaTechnology) -> &'static str {
    match technology {
        RdmaTechnology::IWarp => "IW",
        _ => "IB",
    }
}

/// perftest's header block (`ctx_print_test_info`), for the adapter's transport.
pub fn header(opts: &Opts, device: &str, technology: RdmaTechnology) -> String {
    let mut s = String::new();
    s += LINE;
    s += "\n";
    s += &format!("                    {}\n", opts.test.title());
    s += &format!(" Dual-port       : OFF\t\tDevice         : {device}\n");
    s += &format!(
        " Number of qps   : {}\t\tTransport type : {}\n",
        opts.qps,
        transport_type(technology)
    );
    s += &format!(
        " Connection type : RC\t\tUsing SRQ      : {}\n",
        if opts.srq { "ON" } else { "OFF" }
    );
    if opts.test.is_bw() {
        s += &format!(" TX depth        : {}\n", opts.tx_depth);
    }
    if opts.bidir {
        s += " Bidirectional   : ON\n";
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
    ResultRow::of(row, gbits).text()
}

/// perftest's `--output`: one figure of a row (bandwidth, message_rate or latency).
pub fn one_figure(row: &Row, what: &str, gbits: bool) -> String {
    match (row, what) {
        (Row::Bw(r), "message_rate") => format!("{:.6}", r.msg_rate / 1e6),
        (Row::Bw(r), _) => format!("{:.2}", bw_unit(r.avg, gbits)),
        (Row::Lat(r), _) => format!("{:.2}", lat_stats(r).typical),
    }
}

/// perftest's `-U`: every sample in run order, in usec, after a `#, usec` line.
pub fn unsorted(r: &LatRow) -> String {
    let mut s = String::with_capacity(16 * r.samples.len() + 16);
    s += "#, usec\n";
    for (i, ns) in r.samples.iter().enumerate() {
        s += &format!("{}, {:.3}\n", i + 1, *ns as f64 / 1000.0);
    }
    s
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

/// How a command prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonMode {
    /// Tables.
    Text,
    /// One JSON document on stdout (`--json`).
    Document,
    /// JSON Lines on stdout (`--json-lines`): events, then the report.
    Lines,
}

/// Prints `v` as one JSON document (pretty) or one JSON line with `"event": "report"`.
pub fn emit<T: Serialize>(mode: JsonMode, v: &T) {
    match mode {
        JsonMode::Lines => emit_line(&Event::<&T>::Report(v)),
        _ => match serde_json::to_string_pretty(v) {
            Ok(s) => crate::outln!("{s}"),
            Err(e) => eprintln!("nd: cannot print the report as JSON: {e}"),
        },
    }
}

/// Prints one JSON line.
pub fn emit_line<T: Serialize>(v: &T) {
    match serde_json::to_string(v) {
        Ok(s) => crate::outln!("{s}"),
        Err(e) => eprintln!("nd: cannot print JSON: {e}"),
    }
}

/// A line of `--json-lines` output.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<R: Serialize, W: Serialize = ResultRow> {
    /// A server listens.
    Listening {
        /// The tool (`write_bw`, `nd ping`, …).
        tool: String,
        /// The addresses listened on.
        addresses: Vec<String>,
    },
    /// A size was measured (client).
    Row(W),
    /// The report, as `--json` prints it.
    Report(R),
}

impl Event<()> {
    /// A `listening` line.
    pub fn listening(tool: &str, addrs: &[std::net::SocketAddr]) -> Event<()> {
        Event::Listening {
            tool: tool.to_string(),
            addresses: addrs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A bandwidth row with perftest's JSON keys (bandwidth in the report's unit).
#[derive(Debug, Clone, Serialize)]
pub struct BwResult {
    /// Message size.
    #[serde(rename = "MsgSize")]
    pub size: usize,
    /// Operations.
    pub n_iterations: u64,
    /// Peak bandwidth.
    #[serde(rename = "BW_peak")]
    pub peak: f64,
    /// Average bandwidth.
    #[serde(rename = "BW_average")]
    pub average: f64,
    /// Messages per second, millions.
    #[serde(rename = "MsgRate")]
    pub msg_rate: f64,
    /// With `-b`: `both` (the sum of the two directions), or with `--report-both` `tx` (this
    /// side's sending) and `rx` (the peer's); absent without `-b`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
}

/// A latency row with perftest's JSON keys (microseconds).
#[derive(Debug, Clone, Serialize)]
pub struct LatResult {
    /// Message size.
    #[serde(rename = "MsgSize")]
    pub size: usize,
    /// Samples.
    pub n_iterations: u64,
    /// Minimum.
    pub t_min: f64,
    /// Maximum.
    pub t_max: f64,
    /// Median.
    pub t_typical: f64,
    /// Mean.
    pub t_avg: f64,
    /// Standard deviation.
    pub t_stdev: f64,
    /// 99th percentile.
    pub percentile_99: f64,
    /// 99.9th percentile.
    #[serde(rename = "percentile_99.9")]
    pub percentile_99_9: f64,
    /// `-U`: every sample in run order, usec (absent without `-U`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_usec: Option<Vec<f64>>,
}

/// A result row as perftest's JSON keys.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ResultRow {
    /// Bandwidth.
    Bw(BwResult),
    /// Latency.
    Lat(LatResult),
}

impl ResultRow {
    /// The row as perftest's table prints it.
    pub fn text(&self) -> String {
        match self {
            ResultRow::Bw(r) => {
                let dir = match r.direction {
                    Some("tx") => "   TX",
                    Some("rx") => "   RX",
                    _ => "",
                };
                format!(
                    " {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}{dir}",
                    r.size, r.n_iterations, r.peak, r.average, r.msg_rate
                )
            }
            ResultRow::Lat(l) => format!(
                " {:<7} {:<10}  {:<7.2}        {:<7.2}      {:<7.2}     \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}",
                l.size,
                l.n_iterations,
                l.t_min,
                l.t_max,
                l.t_typical,
                l.t_avg,
                l.t_stdev,
                l.percentile_99,
                l.percentile_99_9
            ),
        }
    }

    /// The row of a measurement; bandwidth in Gb/s with `gbits`, else MiB/s.
    pub fn of(row: &Row, gbits: bool) -> ResultRow {
        match row {
            Row::Bw(BwRow {
                size,
                iters,
                peak,
                avg,
                msg_rate,
                ..
            }) => ResultRow::Bw(BwResult {
                size: *size,
                n_iterations: *iters,
                peak: bw_unit(*peak, gbits),
                average: bw_unit(*avg, gbits),
                msg_rate: msg_rate / 1e6,
                direction: None,
            }),
            Row::Lat(r) => {
                let l = lat_stats(r);
                ResultRow::Lat(LatResult {
                    size: r.size,
                    n_iterations: l.n,
                    t_min: l.min,
                    t_max: l.max,
                    t_typical: l.typical,
                    t_avg: l.avg,
                    t_stdev: l.stdev,
                    percentile_99: l.p99,
                    percentile_99_9: l.p999,
                    samples_usec: (!r.samples.is_empty())
                        .then(|| r.samples.iter().map(|ns| *ns as f64 / 1000.0).collect()),
                })
            }
        }
    }
}

/// The rows of one measurement: the row itself, or with `-b` (`dirs` = [TX, RX]) the sum
/// marked `both`, or with `--report-both` each direction.
pub fn rows_of(
    row: &Row,
    dirs: Option<&[BwRow; 2]>,
    report_both: bool,
    gbits: bool,
) -> Vec<ResultRow> {
    let directed = |r: &BwRow, dir: &'static str| match ResultRow::of(&Row::Bw(*r), gbits) {
        ResultRow::Bw(mut b) => {
            b.direction = Some(dir);
            ResultRow::Bw(b)
        }
        other => other,
    };
    match (row, dirs) {
        (Row::Bw(_), Some([tx, rx])) if report_both => vec![directed(tx, "tx"), directed(rx, "rx")],
        (Row::Bw(sum), Some(_)) => vec![directed(sum, "both")],
        _ => vec![ResultRow::of(row, gbits)],
    }
}

/// The client report's `test_info` (perftest's keys where perftest has them).
#[derive(Debug, Clone, Serialize)]
pub struct TestInfo {
    /// `write_bw`, …
    pub test: &'static str,
    /// perftest's title.
    pub title: &'static str,
    /// Always `soft`.
    pub device: &'static str,
    /// `IW`.
    pub transport_type: &'static str,
    /// `RC`.
    pub connection_type: &'static str,
    /// QPs.
    pub number_of_qps: usize,
    /// Requests in flight per QP.
    pub tx_depth: usize,
    /// Inline size.
    pub max_inline_data: u32,
    /// Our address.
    pub local_address: String,
    /// The server's.
    pub remote_address: String,
    /// The unit of the results.
    pub units: &'static str,
    /// Whether both sides found the data they expected (`null`: not checked, as against a
    /// perftest peer, whose buffers hold no known pattern).
    pub data_verified: Option<bool>,
    /// Whether Ctrl-C ended the run early.
    pub interrupted: bool,
    /// `-b`: both sides ran the test toward each other at once; results are their sum (or,
    /// with `--report-both`, each direction).
    pub bidirectional: bool,
}

/// A perftest persona's client report (`test_info`, `results`: one entry per size).
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    /// What ran.
    pub test_info: TestInfo,
    /// One row per size.
    pub results: Vec<ResultRow>,
    /// Per row: this process's CPU use, percent of all processors.
    pub cpu_util_percent: Vec<f64>,
}

impl ClientReport {
    /// The report of a client run.
    pub fn new(opts: &Opts, run: &ClientRun, gbits: bool) -> ClientReport {
        ClientReport {
            test_info: TestInfo {
                test: opts.test.name(),
                title: opts.test.title(),
                device: crate::conn::provider_args().provider.as_str(),
                transport_type: "IW",
                connection_type: "RC",
                number_of_qps: opts.qps,
                tx_depth: opts.tx_depth,
                max_inline_data: opts.fit(&run.info).inline,
                local_address: run.local.to_string(),
                remote_address: run.remote.to_string(),
                units: if opts.test.is_bw() {
                    if gbits { "Gb/sec" } else { "MiB/sec" }
                } else {
                    "usec"
                },
                data_verified: Some(run.verified),
                interrupted: run.interrupted,
                bidirectional: opts.bidir,
            },
            results: run
                .rows
                .iter()
                .enumerate()
                .flat_map(|(k, r)| rows_of(r, run.directions.get(k), opts.report_both, gbits))
                .collect(),
            cpu_util_percent: run.cpu.clone(),
        }
    }
}

/// A perftest persona's server report.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// `server`.
    pub role: &'static str,
    /// `write_bw`, …
    pub test: &'static str,
    /// Whether perftest's rdma_cm exchange (`-R`) was spoken.
    pub rdma_cm: bool,
    /// The addresses listened on.
    pub listening: Vec<String>,
    /// The client's address.
    pub peer: Option<String>,
    /// Sizes served.
    pub sizes: usize,
    /// The server's data check (`null` where none applies: `-R`).
    pub data_verified: Option<bool>,
    /// Rows: the server's own measurement or the client's report (`-R`).
    pub results: Vec<ResultRow>,
    /// Whether `results` is the client's report.
    pub results_from_client: bool,
}

/// The median of `v` (the mean of the middle two for an even count; 0 for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_type_is_perftest_s_name_for_the_technology() {
        assert_eq!(transport_type(RdmaTechnology::IWarp), "IW");
        assert_eq!(transport_type(RdmaTechnology::RoCEv2), "IB");
        assert_eq!(transport_type(RdmaTechnology::InfiniBand), "IB");
    }
}
