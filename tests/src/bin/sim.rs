//! `scripts/sim`: runs the deterministic cluster simulation (`tests::sim::cluster`) over
//! many seeds, and replays one.
//!
//! ```text
//! sim --seeds 100 [--from 0]      run seeds from..from+100; print failures and speed
//! sim --seed 42 --trace           replay seed 42 and print its event trace
//! ```
//!
//! Exits 1 if any seed broke an invariant, each failure printed with the command that
//! replays it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tests::sim::cluster::{run, Config};

#[derive(Debug, Parser)]
#[command(about = "Run the deterministic cluster simulation over many seeds, or replay one")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Run only this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the seed's event trace.
    #[arg(long)]
    trace: bool,
    /// Run without faults.
    #[arg(long)]
    no_faults: bool,
    /// Print the processes' logs too (a `RUST_LOG` filter, default `info`), stamped with
    /// simulated time.
    #[arg(long)]
    log: bool,
    /// The simulation's step, in milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
}

/// Log lines stamped with the simulation's clock.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        write!(w, "{:>9.3}s", at.as_secs_f64())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.log {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_timer(SimTime)
            .with_target(false)
            .with_ansi(false)
            .init();
    }
    let config = Config {
        faults: !args.no_faults,
        tick: Duration::from_millis(args.tick_ms),
        ..Config::default()
    };
    let seeds = match args.seed {
        Some(seed) => seed..seed + 1,
        None => args.from..args.from + args.seeds,
    };
    let started = Instant::now();
    let (mut ran, mut failed, mut simulated) = (0u64, 0u64, Duration::ZERO);
    for seed in seeds {
        let outcome = match run(seed, &config) {
            Ok(outcome) => outcome,
            Err(err) => {
                eprintln!("seed {seed}: the simulation could not run: {err}");
                return ExitCode::FAILURE;
            }
        };
        ran += 1;
        simulated += outcome.simulated;
        if args.trace {
            for line in &outcome.trace {
                println!("{line}");
            }
        }
        if !outcome.violations.is_empty() {
            failed += 1;
            println!("seed {seed} FAILED: {}", outcome.violations[0]);
            println!("  replay: scripts/sim --seed {seed} --trace");
        }
    }
    let real = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds, {failed} failed, in {real:.1} s: {:.2} seeds/s, {:.0} simulated s per real s",
        ran as f64 / real,
        simulated.as_secs_f64() / real
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
