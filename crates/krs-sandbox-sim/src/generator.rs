//! A living sandbox: a new task every `every`, forever. Each one uploads, waits its turn,
//! detonates (its files appearing while it does, some Red with detections, some with YARA hits)
//! and completes; a share of them fail. Only the newest `keep` generated tasks exist at any time
//! (older ones are dropped: "task not found"), so memory stays bounded however long it runs.
//!
//! Task `k` (0, 1, 2, …) is created at `start + k × every` and everything about it comes from a
//! splitmix64 stream seeded with `(seed, k)`: the same scenario gives the same tasks on every run,
//! with no wall-clock randomness. Tasks are made when the clock reaches them (the server catches
//! up on each request), so a paused test clock can jump a day ahead and find exactly the newest
//! `keep` tasks.

use std::time::Duration;

use super::lifecycle::{Offset, Sample, StateName, Step, TaskError};
use super::scenario::{SimFile, SimTask};

/// The `generator` scenario key. Build with [`Generator::every`] and the chained setters.
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    pub every: Duration,
    /// When task 0 is created; negative to have a history at start.
    pub start: Offset,
    /// `uploading` for this long, then `created`.
    pub upload: Duration,
    /// `created` (queued) for this long, then `processing`.
    pub queue: Duration,
    /// `processing` for this long, then `completed`; files appear during it.
    pub detonation: Duration,
    /// Each task downloads 1 to `files` files (0: none).
    pub files: u32,
    /// Share of tasks with a Red file (with detections).
    pub red_share: f64,
    /// Share of tasks with a YARA hit.
    pub yara_share: f64,
    /// Share of tasks that fail (a quarter of them at upload).
    pub fail_share: f64,
    /// Generated tasks kept; older ones are dropped.
    pub keep: usize,
    pub seed: u64,
}

const SAMPLES: &[(&str, &str)] = &[
    ("invoice_{n}.doc", "Microsoft Word 97-2003 Document"),
    ("scan_{n}.pdf", "PDF document"),
    (
        "setup_{n}.exe",
        "PE32 executable (GUI) Intel 80386, for MS Windows",
    ),
    ("order-{n}.zip", "Zip archive data"),
    ("payment_{n}.xlsm", "Microsoft Excel 2007+"),
    ("update_{n}.js", "JavaScript"),
    ("report_{n}.lnk", "MS Windows shortcut"),
    ("https://login-{n}.example.net/", "URL"),
];

const FILES: &[(&str, &str, &str)] = &[
    ("stage1_{n}.ps1", "Grey", "PowerShell script"),
    ("config_{n}.xml", "Green", "XML document"),
    ("jquery-{n}.min.js", "Green", "JavaScript"),
    (
        "helper_{n}.dll",
        "Grey",
        "PE32 executable (DLL) Intel 80386, for MS Windows",
    ),
    ("pixel_{n}.gif", "Orange", "GIF image data"),
    ("readme_{n}.txt", "Green", "ASCII text"),
];

const RED_DETECTIONS: &[&str] = &[
    "HEUR:Trojan.Win32.Generic",
    "Trojan-Downloader.Win32.Agent.gen",
    "HEUR:Backdoor.Win32.CobaltStrike.gen",
    "Trojan-Ransom.Win32.Lockbit.gen",
];

const YARA_RULES: &[&str] = &[
    "Cobalt_Strike_Beacon",
    "APT_Loader_Stage2",
    "Suspicious_PowerShell_Download",
    "Obfuscated_JS_Eval",
];

/// splitmix64: tiny, fast, good enough to pick shares and names.
struct Rng(u64);

impl Generator {
    /// A task every `every` with the defaults: 5 s upload, 5 s queue, 60 s detonation, 1–3
    /// files, 30 % Red, 30 % YARA, 10 % failing, the newest 200 kept, seed 1.
    pub fn every(every: Duration) -> Self {
        Generator {
            every,
            start: Offset::ZERO,
            upload: Duration::from_secs(5),
            queue: Duration::from_secs(5),
            detonation: Duration::from_secs(60),
            files: 3,
            red_share: 0.3,
            yara_share: 0.3,
            fail_share: 0.1,
            keep: 200,
            seed: 1,
        }
    }

    pub fn start(mut self, start: Offset) -> Self {
        self.start = start;
        self
    }

    pub fn detonation(mut self, d: Duration) -> Self {
        self.detonation = d;
        self
    }

    pub fn files(mut self, n: u32) -> Self {
        self.files = n;
        self
    }

    pub fn shares(mut self, red: f64, yara: f64, fail: f64) -> Self {
        (self.red_share, self.yara_share, self.fail_share) = (red, yara, fail);
        self
    }

    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The numbers of the tasks that exist at `now`: the newest `keep` of those created by then.
    pub(crate) fn alive(&self, now: Offset) -> std::ops::Range<u64> {
        if now < self.start {
            return 0..0;
        }
        let every = i64::try_from(self.every.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let created = u64::try_from((now.as_millis() - self.start.as_millis()) / every)
            .unwrap_or(0)
            .saturating_add(1);
        created.saturating_sub(self.keep as u64)..created
    }

    /// Generated task number `k`.
    pub(crate) fn task(&self, k: u64) -> SimTask {
        let mut rng = Rng::new(self.seed, k);
        let id = rng.guid();
        let every = i64::try_from(self.every.as_millis()).unwrap_or(i64::MAX);
        let created = Offset::from_millis(
            self.start
                .as_millis()
                .saturating_add(i64::try_from(k).unwrap_or(i64::MAX).saturating_mul(every)),
        );
        let (sample, sample_type) = rng.pick(SAMPLES);
        let sample_name = sample.replace("{n}", &(k % 10_000).to_string());
        let uploaded = created.plus(self.upload);
        let processing = uploaded.plus(self.queue);
        let completed = processing.plus(self.detonation);
        let failing = rng.chance(self.fail_share);
        let upload_fails = failing && rng.next() % 4 == 0;
        let step = |at: Offset, state: &str| Step {
            at,
            state: StateName::new(state),
        };
        let mut task = SimTask::new(&id)
            .name(&sample_name)
            .created(created)
            .sample(Sample {
                original_file_name: Some(sample_name.clone()),
                file_type: sample_type.to_owned(),
                size: 1_000 + rng.next() % 5_000_000,
                ..Sample::default()
            });
        if upload_fails {
            task = task.step(step(uploaded, "upload failed")).error(TaskError {
                code: "UploadFailed".to_owned(),
                message: "the sample could not be uploaded".to_owned(),
            });
            return task;
        }
        task = task
            .step(step(uploaded, "created"))
            .step(step(processing, "processing"));
        // Files appear evenly through the detonation; a failing task stops halfway.
        let ends = if failing {
            processing.plus(self.detonation / 2)
        } else {
            completed
        };
        let count = if self.files == 0 {
            0
        } else {
            1 + rng.next() % u64::from(self.files)
        };
        let red = rng.chance(self.red_share);
        let yara = rng.chance(self.yara_share);
        for i in 0..count {
            let at = processing.plus(self.detonation.mul_f64((i + 1) as f64 / (count + 1) as f64));
            if at > ends {
                break;
            }
            let (name, zone, file_type) = rng.pick(FILES);
            let last = i + 1 == count;
            let mut file = SimFile::new(&name.replace("{n}", &k.to_string()), zone)
                .file_type(file_type)
                .size(512 + rng.next() % 400_000)
                .https(rng.next() % 2 == 0)
                .after(non_negative(at));
            if red && last {
                file = SimFile::new(&format!("payload_{k}.exe"), "Red")
                    .file_type("PE32 executable (GUI) Intel 80386, for MS Windows")
                    .size(100_000 + rng.next() % 900_000)
                    .after(non_negative(at))
                    .detection(rng.pick(RED_DETECTIONS));
            }
            if yara && last {
                file = file.yara(rng.pick(YARA_RULES));
            }
            task = task.file(file);
        }
        if failing {
            let spelling = if k % 2 == 0 {
                "Processing failed"
            } else {
                "failed"
            };
            task.step(step(ends, spelling)).error(TaskError {
                code: "ProcessingFailed".to_owned(),
                message: "the virtual machine stopped responding".to_owned(),
            })
        } else {
            let spelling = if k % 3 == 0 { "Completed" } else { "completed" };
            task.step(step(completed, spelling))
        }
    }

    pub(crate) fn is_valid_share(x: f64) -> bool {
        (0.0..=1.0).contains(&x)
    }
}

impl Rng {
    fn new(seed: u64, k: u64) -> Self {
        let mut rng = Rng(seed ^ 0x6b72_735f_6765_6e00);
        rng.0 ^= rng
            .next()
            .wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, share: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < share
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::try_from(self.next() % from.len() as u64).unwrap_or(0)]
    }

    /// A version-4-shaped GUID.
    fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 + (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

fn non_negative(at: Offset) -> Duration {
    Duration::from_millis(u64::try_from(at.as_millis()).unwrap_or(0))
}
