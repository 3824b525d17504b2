//! Link flags for the `quarantine` binary.
//!
//! `-z pack-relative-relocs` (DT_RELR, glibc 2.36 and binutils 2.38 or later): the binary stays a PIE (ASLR
//! kept), but its ~8,600 relative relocations are stored as a compact bitmap instead of 24-byte RELA entries, so
//! the dynamic loader reads a few KiB instead of ~200 KiB at every start. `hold` is one process per message
//! (docs/PERFORMANCE.md, "Where a hold's time goes"). The linker marks the binary as needing
//! `GLIBC_ABI_DT_RELR`, so an older glibc refuses to load it with a clear error instead of misbehaving.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu {
        println!("cargo:rustc-link-arg-bin=quarantine=-Wl,-z,pack-relative-relocs");
    }
}
