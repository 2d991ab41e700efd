//! `ndk-conformance`: the provider-independent NDK suite (`netdirect-conformance`) against the
//! provider named on the command line, one line per case and address (passed, skipped with the
//! capability the adapter lacks, FAILED with the assertion), then a summary.
//!
//! `ndk-conformance --provider soft|verbs [--address A]… [FILTER]`; exit status 0 when
//! nothing failed, 1 when a case failed or the provider cannot be opened, 2 on a usage error.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;
use netdirect_cli::provider::{self, ProviderName};
use netdirect_conformance::{CASES, Verdict};

#[derive(Parser)]
#[command(
    name = "ndk-conformance",
    version,
    about = "Runs the provider-independent NDK conformance suite against a provider"
)]
struct Args {
    /// The provider under test: `soft` or `verbs`.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = ProviderName::Soft)]
    provider: ProviderName,
    /// Local address to run on (repeatable; connections go from it to itself)
    /// [default: 127.0.0.1 and ::1].
    #[arg(short = 'a', long = "address", value_name = "A")]
    address: Vec<String>,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// Run only the cases whose names contain this.
    #[arg(default_value = "")]
    filter: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for c in CASES {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    let addresses: Vec<IpAddr> = if args.address.is_empty() {
        vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]
    } else {
        match args
            .address
            .iter()
            .map(|a| netdirect_cli::parse_ip(a))
            .collect()
        {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ndk-conformance: error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let provider = match provider::open(args.provider) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ndk-conformance: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A case's assertion message is in its FAILED line; the default hook would print it twice.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut skipped, mut failed) = (0, 0, 0);
    for address in addresses {
        for r in netdirect_conformance::run(&*provider, address, &args.filter, |r| println!("{r}"))
        {
            match r.verdict {
                Verdict::Passed => passed += 1,
                Verdict::Skipped(_) => skipped += 1,
                Verdict::Failed(_) => failed += 1,
            }
        }
    }
    println!(
        "ndk-conformance: provider {}: {passed} passed, {skipped} skipped, {failed} failed",
        args.provider
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
