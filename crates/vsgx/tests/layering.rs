//! The layer walls of ARCHITECTURE.md, checked on the crates' manifests: a lower layer never
//! depends on a higher one, and the guest depends on the architecture crate only.

use std::path::Path;

/// Each crate and the vsgx crates it may depend on.
const ALLOWED: [(&str, &[&str]); 8] = [
    ("vsgx-isa", &[]),
    ("vsgx-hw", &["vsgx-isa"]),
    ("vsgx-hv", &["vsgx-isa", "vsgx-hw"]),
    ("vsgx-guest", &["vsgx-isa"]),
    ("vsgx-toolstack", &["vsgx-isa", "vsgx-hw", "vsgx-hv"]),
    ("vsgx-runtime", &["vsgx-isa", "vsgx-hv", "vsgx-guest"]),
    ("vsgx-daemon", &["vsgx-isa", "vsgx-hw", "vsgx-hv", "vsgx-toolstack", "vsgx-runtime"]),
    ("vsgx", &["vsgx-isa", "vsgx-hw", "vsgx-hv", "vsgx-guest", "vsgx-toolstack", "vsgx-runtime", "vsgx-daemon"]),
];

const ALL: [&str; 8] =
    ["vsgx-isa", "vsgx-hw", "vsgx-hv", "vsgx-guest", "vsgx-toolstack", "vsgx-runtime", "vsgx-daemon", "vsgx"];

#[test]
fn no_crate_depends_on_a_higher_layer() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, allowed) in ALLOWED {
        let manifest = std::fs::read_to_string(crates.join(name).join("Cargo.toml")).unwrap();
        // Only [dependencies] matter for the walls; dev-dependencies may cross-check.
        let deps_section = manifest.split("\n[").find(|s| s.starts_with("dependencies]")).unwrap_or("");
        for line in deps_section.lines().skip(1) {
            let dep = line.split(['=', ' ']).next().unwrap_or("").trim();
            if ALL.contains(&dep) {
                assert!(allowed.contains(&dep), "{name} must not depend on {dep} (see ARCHITECTURE.md, Walls)");
            }
        }
    }
}
