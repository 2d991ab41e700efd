#!/usr/bin/env python3
"""What counters cost: the same source built with and without netdirect's `counters` feature.

Builds `nd` twice (`cargo build --release -p netdirect-cli`, then with `--no-default-features`:
the provider's counter updates compile to nothing; tracing and the capture hooks are the same
in both, tracing has no call site on the per-FPDU path and a capture costs only when on) and
prints, for 8 B RDMA writes (message rate) and 1 MiB RDMA writes (bandwidth):

* instructions per message / per MiB, counted by valgrind's callgrind (repeatable where wall
  clock is not; hardware counters are not available in every VM). Server and client both run
  under callgrind on loopback; a run of N2 messages minus a run of N1 cancels start-up and
  connection setup. Each figure is the median of --count-reps such differences.
* wall clock: `nd write-bw -D` with each binary in alternating rounds (server pinned to CPU 1,
  client to CPU 0, as ../shared/bench/side-by-side.py does), medians.

Counter publication (`nd stat`'s file, a thread every 500 ms) is off in the instruction counts
(its cost grows with valgrind's slowdown, not with the messages) and on, as nd has it, in the
wall-clock rounds.

Usage: bench/obs-cost.py [--rounds N] [--duration S] [--count-reps N] [--no-build]
                         [--skip-wall] [--skip-count] [--json FILE]
Needs: cargo, valgrind, taskset.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "obs-cost")
PORT = 23711


def build():
    os.makedirs(OUT, exist_ok=True)
    for name, extra in (("nd-on", []), ("nd-off", ["--no-default-features"])):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "netdirect-cli", "--bin", "nd"]
                       + extra, cwd=ROOT, check=True)
        shutil.copy2(os.path.join(ROOT, "target", "release", "nd"), os.path.join(OUT, name))


def start_server(cmd):
    """Starts an nd server with --json-lines and waits for its `listening` line."""
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = srv.stdout.readline()
        if not line:
            break
        if '"listening"' in line:
            return srv
    srv.kill()
    raise RuntimeError(f"server did not listen: {' '.join(cmd)}: {srv.stderr.read()}")


def collected(stderr):
    """callgrind's total: `==pid== Collected : N`."""
    m = re.findall(r"Collected\s*:\s*(\d+)", stderr)
    if not m:
        raise RuntimeError(f"no callgrind total in: {stderr[-2000:]}")
    return int(m[-1])


def count_run(nd, size, iters, port):
    """Instructions of server + client for one `write-bw -n iters -s size` run."""
    vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    args = ["write-bw", "--no-publish-counters", "-p", str(port), "-s", str(size), "-n", str(iters)]
    srv = start_server(vg + [nd] + args + ["--json-lines"])
    cli = subprocess.run(vg + [nd] + args + ["--quiet", "--json", "127.0.0.1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)
    _, serr = srv.communicate(timeout=300)
    if cli.returncode != 0 or srv.returncode != 0:
        raise RuntimeError(f"write-bw failed: {cli.stderr[-2000:]} {serr[-2000:]}")
    return collected(serr) + collected(cli.stderr)


def per_message(nd, size, n1, n2, reps, port):
    diffs = []
    for r in range(reps):
        a = count_run(nd, size, n1, port + 2 * r)
        b = count_run(nd, size, n2, port + 2 * r + 1)
        diffs.append((b - a) / (n2 - n1))
    return statistics.median(diffs), diffs


def wall_run(nd, size, duration, port):
    args = ["write-bw", "-p", str(port), "-s", str(size), "-D", str(duration)]
    srv = start_server(["taskset", "-c", "1", nd] + args + ["--json-lines"])
    cli = subprocess.run(["taskset", "-c", "0", nd] + args + ["--quiet", "--json", "127.0.0.1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=60 + 4 * duration)
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()
    try:
        d = json.loads(cli.stdout)
    except ValueError:
        return None
    r = d["results"][0] if isinstance(d.get("results"), list) else d.get("results", d)
    return float(r["msg_rate_mpps"]) if size == 8 else float(r["bw_avg_mib_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="wall-clock rounds per binary")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per wall-clock run")
    ap.add_argument("--count-reps", type=int, default=3, help="callgrind differences per figure")
    ap.add_argument("--no-build", action="store_true", help="use target/obs-cost/nd-{on,off}")
    ap.add_argument("--skip-wall", action="store_true")
    ap.add_argument("--skip-count", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not a.no_build:
        build()
    nds = {v: os.path.join(OUT, f"nd-{v}") for v in ("on", "off")}
    result = {"instructions": {}, "wall": {}}
    port = PORT
    # (label, size, N1, N2, unit divisor): 8 B per message; 1 MiB per MiB (one message).
    cases = [("8 B write, per message", 8, 20000, 60000),
             ("1 MiB write, per MiB", 1 << 20, 40, 120)]
    if not a.skip_count:
        if not shutil.which("valgrind"):
            sys.exit("valgrind is missing (apt-get install valgrind)")
        print(f"{'instructions (callgrind)':28} {'counters on':>14} {'off':>14} {'on/off':>8}")
        for label, size, n1, n2 in cases:
            row = {}
            for v, nd in nds.items():
                med, runs = per_message(nd, size, n1, n2, a.count_reps, port)
                port += 2 * a.count_reps
                row[v] = {"median": med, "runs": runs}
            ratio = row["on"]["median"] / row["off"]["median"]
            row["ratio"] = ratio
            result["instructions"][label] = row
            print(f"{label:28} {row['on']['median']:>14.0f} {row['off']['median']:>14.0f} "
                  f"{ratio:>8.4f}", flush=True)
    if not a.skip_wall:
        runs = {(label, v): [] for label, _, _, _ in cases for v in nds}
        for r in range(a.rounds):
            for label, size, _, _ in cases:
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for v in order:
                    runs[(label, v)].append(wall_run(nds[v], size, a.duration, port))
                    port += 1
        print(f"{'wall clock (median)':28} {'counters on':>14} {'off':>14} {'on/off':>8}   runs")
        for label, size, _, _ in cases:
            unit = "Mpps" if size == 8 else "MiB/s"
            med = {}
            for v in nds:
                xs = [x for x in runs[(label, v)] if x is not None]
                med[v] = statistics.median(xs) if xs else None
            ratio = med["on"] / med["off"] if med["on"] and med["off"] else None
            result["wall"][label] = {"unit": unit, "on": med["on"], "off": med["off"],
                                     "ratio": ratio,
                                     "runs": {v: runs[(label, v)] for v in nds}}
            fmt = (lambda x: "-" if x is None else f"{x:.3f}")
            print(f"{label + ' ' + unit:28} {fmt(med['on']):>14} {fmt(med['off']):>14} "
                  f"{fmt(ratio):>8}   on {[fmt(x) for x in runs[(label, 'on')]]} "
                  f"off {[fmt(x) for x in runs[(label, 'off')]]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
