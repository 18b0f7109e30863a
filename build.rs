//! Stamps the git revision into `krs_exporter_build_info` (`unknown` outside a checkout).

use std::process::Command;

fn main() {
    let revision = std::env::var("KRS_BUILD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KRS_BUILD_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=KRS_BUILD_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
