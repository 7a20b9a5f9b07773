//! Stamps the binary with the git commit it was built from, so the control plane can log
//! "which build is this" once at start (CONVENTIONS.md). Falls back to "unknown" outside a
//! git checkout (a crate tarball, a vendored build); `EPOCHGATE_GIT_HASH` overrides it.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=EPOCHGATE_GIT_HASH");
    let hash = std::env::var("EPOCHGATE_GIT_HASH")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EPOCHGATE_GIT_HASH={hash}");

    // Rebuild when HEAD moves. Only existing files are named: cargo treats a missing
    // rerun-if-changed path as always changed and would rebuild on every run.
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let git_dir = Path::new(&git_dir);
        let mut watch = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(git_dir.join(head_ref));
        }
        for path in watch.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
