#!/usr/bin/env python3
"""What counters cost: the same source built with and without netdirect's `counters` feature.

Builds twice (default features, then `--no-default-features`: the provider's counter updates
compile to nothing; tracing has no call site on the per-FPDU path and a capture costs only when
on, so both are the same in the two builds) and prints, for 8 B RDMA writes (message rate) and
1 MiB RDMA writes (bandwidth), on against off:

1. Instructions per message / per MiB of the data path alone: `netdirect-proto`'s example
   `obs_cost` drives both ends of one connection in one thread as the soft provider's driver
   does on loopback, with the driver's own counting. Single-threaded, so callgrind's count is
   exact and the same every run. A run of N2 messages minus a run of N1 cancels start-up.
   Nothing else (sockets, locks, CQs, the kernel) is in the denominator, so on/off here bounds
   what counting can cost from above.
2. Instructions per message / per MiB of `nd write-bw -e`, server and client each under
   callgrind (user space only; `--fair-sched=yes`, or the server's set-up starves its progress
   thread past the MPA timeout), N2 minus N1 messages, medians of --count-reps. Completions by
   notification (`-e`): a busy-polling client's spins would swamp the count. At 8 B the
   client's figure repeats within a fraction of a percent; the server's varies with how its
   progress thread's wakeups batch the arrivals, and at 1 MiB both vary (the CQ wait spins
   while a MiB moves). Counting's share of nd is the exact difference of (1) over nd's server
   + client without counters.
3. Wall clock: `nd write-bw -D` with each binary in alternating rounds (server pinned to CPU 1,
   client to CPU 0, as ../shared/bench/side-by-side.py does), medians and ratio.

Counter publication (`nd stat`'s file, a thread every 500 ms) is off in (2) (its cost grows
with valgrind's slowdown, not with the messages) and on, as nd has it, in (3).

Usage: bench/obs-cost.py [--rounds N] [--duration S] [--count-reps N] [--no-build]
                         [--skip-nd-count] [--skip-wall] [--json FILE]
Needs: cargo, valgrind, taskset.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "obs-cost")
PORT = 23711


def build():
    os.makedirs(OUT, exist_ok=True)
    for v, extra in (("on", []), ("off", ["--no-default-features"])):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "netdirect-cli", "--bin", "nd"]
                       + extra, cwd=ROOT, check=True)
        shutil.copy2(os.path.join(ROOT, "target", "release", "nd"), os.path.join(OUT, f"nd-{v}"))
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "netdirect-proto", "--example",
                        "obs_cost"] + extra, cwd=ROOT, check=True)
        shutil.copy2(os.path.join(ROOT, "target", "release", "examples", "obs_cost"),
                     os.path.join(OUT, f"obs_cost-{v}"))


def stream_run(exe, size, count):
    """callgrind's total for one single-threaded obs_cost run (exact)."""
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", exe,
                        str(size), str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"obs_cost failed: {p.stderr[-2000:]}")
    return collected(p.stderr)


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
    """Instructions of (server, client) for one `write-bw -e -n iters -s size` run."""
    vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--fair-sched=yes"]
    # -e: completions by notification; a busy-polling client's spins would swamp the count.
    args = ["write-bw", "-e", "--no-publish-counters", "-p", str(port), "-s", str(size),
            "-n", str(iters)]
    srv = start_server(vg + [nd] + args + ["--json-lines"])
    cli = subprocess.run(vg + [nd] + args + ["--quiet", "--json", "127.0.0.1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)
    _, serr = srv.communicate(timeout=300)
    if cli.returncode != 0 or srv.returncode != 0:
        raise RuntimeError(f"write-bw failed: {cli.stderr[-2000:]} {serr[-2000:]}")
    return collected(serr), collected(cli.stderr)


def count_run_retried(nd, size, iters, port, tries=3):
    """`count_run`, again on another port when valgrind's slowness let the MPA handshake time
    out (a loaded machine)."""
    for t in range(tries):
        try:
            return count_run(nd, size, iters, port + 1000 * t)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            if t == tries - 1:
                raise
            print(f"  (retrying: {str(e).splitlines()[0][:100]})", file=sys.stderr)


def per_message(nd, size, n1, n2, reps, port):
    """Medians over `reps` of (server, client) instructions per message, and the runs."""
    runs = []
    for r in range(reps):
        a = count_run_retried(nd, size, n1, port + 2 * r)
        b = count_run_retried(nd, size, n2, port + 2 * r + 1)
        runs.append(tuple((y - x) / (n2 - n1) for x, y in zip(a, b)))
    return tuple(statistics.median(x[i] for x in runs) for i in (0, 1)), runs


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
    r = d["results"][0]
    return float(r["MsgRate"]) if size == 8 else float(r["BW_average"])


def fmt(x, prec=3):
    return "-" if x is None else f"{x:.{prec}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="wall-clock rounds per binary")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per wall-clock run")
    ap.add_argument("--count-reps", type=int, default=3, help="nd callgrind differences per figure")
    ap.add_argument("--no-build", action="store_true", help="use what target/obs-cost holds")
    ap.add_argument("--skip-nd-count", action="store_true")
    ap.add_argument("--skip-wall", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    for tool in ("valgrind", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install valgrind util-linux)")
    if not a.no_build:
        build()
    variants = ("on", "off")
    result = {"stream": {}, "nd": {}, "wall": {}}
    port = PORT
    # (label, size, stream N1, N2, nd N1, N2): 8 B per message; 1 MiB per MiB (one message).
    cases = [("8 B write / message", 8, 1000, 3000, 4000, 20000),
             ("1 MiB write / MiB", 1 << 20, 10, 30, 100, 300)]
    head = f"{'':26} {'counters on':>12} {'off':>12} {'on - off':>9} {'on/off':>8}"
    print("instructions, data path alone (obs_cost, callgrind, exact)")
    print(head)
    for label, size, n1, n2, _, _ in cases:
        row = {}
        for v in variants:
            exe = os.path.join(OUT, f"obs_cost-{v}")
            row[v] = (stream_run(exe, size, n2) - stream_run(exe, size, n1)) / (n2 - n1)
        row["diff"] = row["on"] - row["off"]
        row["ratio"] = row["on"] / row["off"]
        result["stream"][label] = row
        print(f"{label:26} {row['on']:>12.1f} {row['off']:>12.1f} {row['diff']:>9.1f} "
              f"{row['ratio']:>8.4f}", flush=True)
    if not a.skip_nd_count:
        print(f"instructions, nd write-bw -e, server and client (callgrind, user space, medians of "
              f"{a.count_reps}); on/off of server + client; share: (on - off) of the data path "
              f"above / (server + client, off)")
        print(f"{'':26} {'server on':>10} {'off':>10} {'client on':>10} {'off':>10} {'on/off':>7} "
              f"{'share':>7}   runs (server, client)")
        for label, size, _, _, n1, n2 in cases:
            row = {}
            for v in variants:
                med, runs = per_message(os.path.join(OUT, f"nd-{v}"), size, n1, n2,
                                        a.count_reps, port)
                port += 2 * a.count_reps
                row[v] = {"server": med[0], "client": med[1], "runs": runs}
            diff = result["stream"][label]["diff"]
            total = {v: row[v]["server"] + row[v]["client"] for v in variants}
            row["ratio"] = total["on"] / total["off"]
            row["share"] = diff / total["off"]
            result["nd"][label] = row
            runs = {v: [(round(s_), round(c_)) for s_, c_ in row[v]["runs"]] for v in variants}
            print(f"{label:26} {row['on']['server']:>10.0f} {row['off']['server']:>10.0f} "
                  f"{row['on']['client']:>10.0f} {row['off']['client']:>10.0f} "
                  f"{row['ratio']:>7.4f} {100 * row['share']:>6.2f}%   "
                  f"on {runs['on']} off {runs['off']}", flush=True)
    if not a.skip_wall:
        runs = {(label, v): [] for label, *_ in cases for v in variants}
        for r in range(a.rounds):
            for label, size, *_ in cases:
                for v in (variants if r % 2 == 0 else variants[::-1]):
                    nd = os.path.join(OUT, f"nd-{v}")
                    runs[(label, v)].append(wall_run(nd, size, a.duration, port))
                    port += 1
        print(f"wall clock, nd write-bw -D {a.duration:g}, medians of {a.rounds} alternating rounds")
        print(f"{'':26} {'counters on':>12} {'off':>12} {'on/off':>9}   runs")
        for label, size, *_ in cases:
            unit = "Mpps" if size == 8 else "MiB/s"
            med = {}
            for v in variants:
                xs = [x for x in runs[(label, v)] if x is not None]
                med[v] = statistics.median(xs) if xs else None
            ratio = med["on"] / med["off"] if med["on"] and med["off"] else None
            result["wall"][label] = {"unit": unit, "on": med["on"], "off": med["off"],
                                     "ratio": ratio,
                                     "runs": {v: runs[(label, v)] for v in variants}}
            name = ("8 B write " if size == 8 else "1 MiB write ") + unit
            print(f"{name:26} {fmt(med['on']):>12} {fmt(med['off']):>12} {fmt(ratio, 4):>9}   "
                  f"on {[fmt(x) for x in runs[(label, 'on')]]} "
                  f"off {[fmt(x) for x in runs[(label, 'off')]]}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
