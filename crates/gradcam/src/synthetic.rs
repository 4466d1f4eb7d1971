//! The synthetic weights of the golden files (see tests/golden/README.md): every tensor a pure function of its
//! name and shape, so that a test rebuilds exactly the weights the reference used, without any file.

use candle_core::{Device, Result, Tensor};

/// u_i in [0, 1) for i in 0..n: splitmix64 of (crc32(name) << 32) ^ i, top 24 bits.
pub fn uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = crc32fast::hash(name.as_bytes()) as u64;
    (0..n as u64)
        .map(|i| {
            let mut z = (seed << 32) ^ i;
            z = z.wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

/// The synthetic value of tensor `name` with `shape`.
pub fn tensor(name: &str, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product::<usize>().max(1);
    let u = uniform(name, n);
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let v: Vec<f32> = if leaf == "weight" && shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let a = (3.0 / fan_in as f64).sqrt();
        u.iter().map(|u| ((2.0 * u - 1.0) * a) as f32).collect()
    } else if leaf == "weight" || leaf == "running_var" {
        u.iter().map(|u| (0.75 + 0.5 * u) as f32).collect()
    } else {
        u.iter().map(|u| ((2.0 * u - 1.0) * 0.1) as f32).collect()
    };
    Tensor::from_vec(v, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_values_of_the_golden_readme() {
        let u = super::uniform("conv1.weight", 5);
        let want = [0.25489008, 0.02529597, 0.46168578, 0.7145099, 0.7526027];
        for (a, b) in u.iter().zip(want) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }
}
