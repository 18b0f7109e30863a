//! The simulated fleet's lifecycle mix (`--mix`).
//!
//! - `finished` (default, as before lifecycles): every task exists from start, its three files
//!   already downloaded, completed.
//! - `realistic`: what an appliance that has run for a while holds. Tasks were created evenly
//!   over the last `--history` (24 h by default), task 0 the newest, and each took 2–30 min to
//!   analyse; the newest `--detonating` tasks (40 by default, a few dozen as an appliance's VMs
//!   allow) are still detonating at start, their files appearing over the first
//!   `--detonation` (10 min) of the run, then complete. About 2 % of the finished tasks failed.
//!   With `--arrival-every`, a generator also submits new samples for as long as the run lasts.
//!
//! Either way the files are those of `benches/support/fleet.rs`, so series counts compare.

use std::time::Duration;

use krs_sandbox_sim::{Generator, Offset, Sample, SimFile, SimTask};

/// Which lifecycle the fleet's tasks have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    #[default]
    Finished,
    Realistic,
}

/// The `--mix` knobs.
#[derive(Clone, Copy, Debug)]
pub struct MixArgs {
    pub mix: Mix,
    pub tasks: u64,
    pub detonating: u64,
    pub history: Duration,
    pub detonation: Duration,
    pub arrival_every: Option<Duration>,
}

/// Task `n` with its files (`files` already built from the fleet) and its lifecycle.
pub fn task(n: u64, files: Vec<SimFile>, args: &MixArgs) -> SimTask {
    let task = SimTask::new(&super::fleet::task_id(n)).name(&super::fleet::task_name(n));
    if args.mix == Mix::Finished {
        return task.files(files);
    }
    let h = splitmix(n);
    let sample = Sample {
        original_file_name: Some(super::fleet::task_name(n)),
        size: 1_000 + h % 5_000_000,
        ..Sample::default()
    };
    let task = task.sample(sample);
    if n < args.detonating {
        // Started detonating a little before start; finishes within `detonation` of it.
        let started = Offset::before(Duration::from_secs(30 + h % 300));
        let ends = detonation_ends(n, args);
        let appear = appearances(n, files.len(), args);
        let files = files.into_iter().zip(appear).map(|(f, at)| f.after(at));
        return task
            .created(started)
            .state_at(started.plus(Duration::from_secs(5)), "processing")
            .state_at(Offset::after(ends), "completed")
            .files(files);
    }
    // Finished: spread over the history, newest first.
    let share =
        (n - args.detonating) as f64 / args.tasks.saturating_sub(args.detonating).max(1) as f64;
    let created = Offset::before(args.history.mul_f64(share).max(Duration::from_secs(3600)));
    let analysed = created.plus(Duration::from_secs(120 + h % 1680));
    let analysed = analysed.min(Offset::before(Duration::from_secs(1)));
    let outcome = if h.is_multiple_of(50) {
        "Processing failed"
    } else {
        "completed"
    };
    task.created(created)
        .state_at(created.plus(Duration::from_secs(5)), "processing")
        .state_at(analysed, outcome)
        .files(files)
}

/// When detonating task `n` completes, since simulator start.
pub fn detonation_ends(n: u64, args: &MixArgs) -> Duration {
    args.detonation
        .mul_f64((n + 1) as f64 / args.detonating.max(1) as f64)
}

/// When each of the `count` files of detonating task `n` appears, since simulator start: evenly
/// over its detonation, the last as it completes.
pub fn appearances(n: u64, count: usize, args: &MixArgs) -> Vec<Duration> {
    let ends = detonation_ends(n, args);
    let c = count.max(1) as f64;
    (0..count)
        .map(|i| ends.mul_f64((i + 1) as f64 / c))
        .collect()
}

/// New samples during the run, beside the fleet (`--arrival-every`).
pub fn arrivals(args: &MixArgs) -> Option<Generator> {
    let every = args.arrival_every?;
    Some(
        Generator::every(every)
            .detonation(Duration::from_secs(120))
            .keep(
                usize::try_from(args.tasks)
                    .unwrap_or(usize::MAX)
                    .clamp(1, 1_000_000),
            ),
    )
}

fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
