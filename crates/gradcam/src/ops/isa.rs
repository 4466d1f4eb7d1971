//! Which instruction set the kernels run with: chosen once per process, here and nowhere else.
//!
//! By default the widest set the CPU has (AVX-512, else AVX2 with FMA, else plain loops). The environment
//! variable `GRADCAM_ISA` (`avx512`, `avx2`, `scalar`) forces one, for tests and benchmarks: a set the CPU
//! lacks, or a name that is none of these, is an error from [`init`] (which the CLI and every model load call
//! first). Every set computes every element in the same order, so the choice changes the speed, never a figure
//! (the kernels' tests compare each set the machine has with the scalar one, bit for bit).

use std::sync::OnceLock;

/// An instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F (16 lanes, 32 registers, masked loads and stores).
    Avx512,
    /// AVX2 with FMA (8 lanes, 16 registers).
    Avx2,
    /// Plain loops, and the `gemm` crate (with its own dispatch) for the matrix products.
    Scalar,
}

/// The environment variable that forces a set.
pub const ENV: &str = "GRADCAM_ISA";

impl Isa {
    /// Every set, widest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Scalar];

    /// The name `GRADCAM_ISA` takes and the bench prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU runs the set.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest set this CPU has.
    pub fn best() -> Isa {
        Isa::ALL.into_iter().find(|i| i.available()).unwrap_or(Isa::Scalar)
    }

    /// Vector lanes of f32 (1 for the scalar set).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Scalar => 1,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The sets this CPU runs, widest first (`scalar` always among them).
pub fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

/// What `GRADCAM_ISA` asks for: None when unset or empty, an error naming the value when it is not a set's
/// name or the CPU lacks that set.
pub fn from_env() -> crate::Result<Option<Isa>> {
    let Some(v) = std::env::var_os(ENV) else { return Ok(None) };
    let v = v.to_string_lossy();
    if v.trim().is_empty() {
        return Ok(None);
    }
    let names = || Isa::ALL.map(Isa::name).join(", ");
    let isa = Isa::parse(&v).ok_or_else(|| {
        crate::Error::invalid(format!("{ENV}={v:?}: not an instruction set; expected one of {}", names()))
    })?;
    if !isa.available() {
        let have = available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ");
        return Err(crate::Error::invalid(format!("{ENV}={v:?}: this CPU has no {isa}; it runs {have}")));
    }
    Ok(Some(isa))
}

static CHOSEN: OnceLock<Isa> = OnceLock::new();

/// Choose the set (from `GRADCAM_ISA`, else the widest the CPU has) and report it; an error for a bad
/// `GRADCAM_ISA`. Later calls return the first choice.
pub fn init() -> crate::Result<Isa> {
    if let Some(i) = CHOSEN.get() {
        return Ok(*i);
    }
    let isa = from_env()?.unwrap_or_else(Isa::best);
    Ok(*CHOSEN.get_or_init(|| isa))
}

/// The set the kernels run with: the one [`init`] chose (where `init` was not called, or failed: the widest
/// the CPU has, never a set it lacks).
pub fn current() -> Isa {
    *CHOSEN.get_or_init(|| from_env().ok().flatten().unwrap_or_else(Isa::best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_there() {
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()), Some(i));
            assert_eq!(Isa::parse(&i.name().to_uppercase()), Some(i));
        }
        assert_eq!(Isa::parse("sse"), None);
        assert!(available().contains(&Isa::Scalar));
        assert!(current().available());
        assert_eq!(available()[0], Isa::best());
    }
}
