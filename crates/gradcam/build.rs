//! Tells the tests which instruction sets the building machine has (`has_avx512`, `has_avx2`), so that a
//! kernel path this CPU lacks shows as an ignored test with its reason, never as a test that passed without
//! running. (The tests themselves assert, when they run, that the CPU has the set: a build moved to another
//! machine fails loudly there.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_avx512)");
    println!("cargo::rustc-check-cfg=cfg(has_avx2)");
    println!("cargo::rerun-if-changed=build.rs");
    let host = std::env::var("HOST").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    if host != target {
        return; // cross-compiled: the tests cannot run here anyway
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            println!("cargo::rustc-cfg=has_avx512");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            println!("cargo::rustc-cfg=has_avx2");
        }
    }
}
