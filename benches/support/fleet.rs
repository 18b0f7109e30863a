//! A synthetic fleet shared by the benches and the load harness (`examples/loadtest.rs`
//! includes this file with `#[path]`): deterministic task ids and names, and three downloaded
//! files per task in a realistic danger-zone mix.
//!
//! The mix, by task (from a hash of its number, so any prefix of the fleet has it too):
//!
//! | share | profile | files |
//! |---|---|---|
//! | 70 % | clean | Green script, Green page, Grey document |
//! | 15 % | adware | Green JSON, Yellow installer with a `not-a-virus` detection, Grey config |
//! | 5 % | suspicious | Grey document, Orange script with a detection and a YARA rule, Green icon |
//! | 10 % | malicious | Grey document, Grey script, Red executable with two detections and two YARA rules |
//!
//! Detection and YARA names come from small pools, so the fleet-wide label cardinality stays
//! realistic (a few dozen values) however many tasks there are.

#![allow(dead_code)] // each includer uses its own subset

/// One downloaded file, independent of the simulator's and the decoder's types.
pub struct FileSpec {
    pub name: String,
    pub zone: &'static str,
    pub size: u64,
    pub file_type: &'static str,
    pub https: bool,
    pub detections: Vec<&'static str>,
    pub yara: Vec<&'static str>,
}

const RED_DETECTIONS: &[&str] = &[
    "HEUR:Trojan.Win32.Generic",
    "Trojan-Downloader.Win32.Agent.gen",
    "HEUR:Backdoor.Win32.CobaltStrike.gen",
    "Trojan-Ransom.Win32.Lockbit.gen",
    "HEUR:Trojan-PSW.Win32.Stealer.gen",
    "Trojan-Spy.Win32.AgentTesla.gen",
    "HEUR:Exploit.MSOffice.CVE-2017-11882.gen",
    "Backdoor.Win32.Remcos.gen",
];

const RED_RULES: &[&str] = &[
    "Cobalt_Strike_Beacon",
    "APT_Loader_Stage2",
    "Lockbit_Ransom_Note",
    "AgentTesla_Strings",
    "Remcos_RAT_Config",
    "Generic_Packer_UPX_Modified",
    "Win32_Process_Hollowing",
    "Suspicious_Imports_Injection",
];

const SCRIPT_DETECTIONS: &[&str] = &[
    "HEUR:Trojan.Script.Generic",
    "HEUR:Trojan-Downloader.PowerShell.Agent.gen",
    "HEUR:Exploit.Script.Blocker",
];

const SCRIPT_RULES: &[&str] = &[
    "Suspicious_PowerShell_Download",
    "Obfuscated_JS_Eval",
    "Base64_Encoded_PE",
];

const ADWARE_DETECTIONS: &[&str] = &[
    "not-a-virus:HEUR:AdWare.Win32.Generic",
    "not-a-virus:Downloader.Win32.InstallCore.gen",
    "not-a-virus:HEUR:WebToolbar.Win32.Agent.gen",
];

/// The canonical (lowercase) GUID of task `n`: random-looking, version-4 shaped, unique.
pub fn task_id(n: u64) -> String {
    let a = splitmix64(2 * n);
    let b = splitmix64(2 * n + 1);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff,
    )
}

/// A human name, as a SOC would give in the watch list.
pub fn task_name(n: u64) -> String {
    format!("case-{n:06}")
}

/// The `team` label value of task `n` (the watch list carries one label key).
pub fn team(n: u64) -> &'static str {
    ["soc", "ir", "threat-intel", "malware-lab"][(splitmix64(n ^ 0x7ea3) % 4) as usize]
}

/// Task `n`'s three files.
pub fn files(n: u64) -> Vec<FileSpec> {
    let h = splitmix64(n ^ 0x5eed);
    let pick = |pool: &[&'static str], salt: u64| {
        pool[(splitmix64(h ^ salt) % pool.len() as u64) as usize]
    };
    let file = |name: String, zone, size, file_type, https| FileSpec {
        name,
        zone,
        size,
        file_type,
        https,
        detections: Vec::new(),
        yara: Vec::new(),
    };
    let doc = || {
        file(
            format!("invoice_{}.doc", 1000 + n % 9000),
            "Grey",
            48_213 + n % 4096,
            "Microsoft Word 97-2003 Document",
            true,
        )
    };
    match h % 100 {
        0..=69 => vec![
            file(
                "jquery-3.7.1.min.js".into(),
                "Green",
                87_533,
                "JavaScript",
                true,
            ),
            file(
                "index.html".into(),
                "Green",
                15_000 + n % 2048,
                "HTML document, UTF-8 Unicode text",
                true,
            ),
            file(
                format!("statement_{}.pdf", n % 10_000),
                "Grey",
                131_072 + n % 65_536,
                "PDF document, version 1.7",
                true,
            ),
        ],
        70..=84 => {
            let mut installer = file(
                "FreePDFConverter_setup.exe".into(),
                "Yellow",
                3_145_728,
                "PE32 executable (GUI) Intel 80386, for MS Windows, Nullsoft Installer",
                false,
            );
            installer.detections.push(pick(ADWARE_DETECTIONS, 1));
            vec![
                file("offers.json".into(), "Green", 2_311, "JSON data", true),
                installer,
                file("update.cfg".into(), "Grey", 812, "ASCII text", false),
            ]
        }
        85..=89 => {
            let mut script = file(
                "stage1.ps1".into(),
                "Orange",
                3_817,
                "PowerShell script, ASCII text",
                true,
            );
            script.detections.push(pick(SCRIPT_DETECTIONS, 2));
            script.yara.push(pick(SCRIPT_RULES, 3));
            vec![
                doc(),
                script,
                file(
                    "favicon.ico".into(),
                    "Green",
                    1_150,
                    "MS Windows icon resource",
                    true,
                ),
            ]
        }
        _ => {
            let mut payload = file(
                format!("payload_{}.exe", n % 97),
                "Red",
                245_760 + (n % 64) * 512,
                "PE32 executable (GUI) Intel 80386, for MS Windows",
                false,
            );
            let (d1, d2) = (pick(RED_DETECTIONS, 4), pick(RED_DETECTIONS, 5));
            payload.detections.push(d1);
            if d2 != d1 {
                payload.detections.push(d2);
            }
            let (r1, r2) = (pick(RED_RULES, 6), pick(RED_RULES, 7));
            payload.yara.push(r1);
            if r2 != r1 {
                payload.yara.push(r2);
            }
            vec![
                doc(),
                file(
                    "stage1.ps1".into(),
                    "Grey",
                    3_817,
                    "PowerShell script, ASCII text",
                    true,
                ),
                payload,
            ]
        }
    }
}

/// A hex digest of `len` characters derived from the task and file name (what the simulator
/// does for files without hashes; the values only need to be stable and distinct).
pub fn fake_hex(task: &str, name: &str, salt: u64, len: usize) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in task.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        h = splitmix64(h);
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(len);
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
