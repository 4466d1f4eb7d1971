//! A bounded fuzz of image decoding, run by every `cargo test`: small valid images of every format (made
//! here with the `image` crate's encoders, and the committed fixtures for what it cannot write) are mutated
//! (bytes flipped or set, truncated, bytes inserted, header fields set to huge values) and decoded with a
//! small decoded-bytes limit. Property: no panic, Ok or Err, and the peak of the bytes allocated stays
//! within the limit plus a modest constant.
//!
//! More cases: `PROPTEST_CASES=20000 cargo test -p gradcam --test fuzz_images --release`; another seed:
//! `PROPTEST_RNG_SEED=7`.
mod peak_alloc;

use gradcam::image::{decode_bytes, ImageLimits};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::sync::OnceLock;

#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

const LIMITS: ImageLimits = ImageLimits { max_pixels: 4_000_000, max_decoded_bytes: 8_000_000 };
/// Allocations that do not scale with the image: tables, row buffers, the decoders' state.
const SLACK: u64 = 2 << 20;

/// (file name, bytes) of every seed image.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        use image::{DynamicImage, ImageFormat};
        let rgb = image::RgbImage::from_fn(24, 16, |x, y| {
            let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 9;
            image::Rgb([(x * 10) as u8, (y * 15) as u8, v as u8])
        });
        let rgba = DynamicImage::ImageRgb8(rgb.clone()).into_rgba8();
        let gray16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_fn(20, 12, |x, y| image::Luma([(x * y * 300) as u16]));
        let encode = |img: &DynamicImage, fmt: ImageFormat| {
            let mut out = std::io::Cursor::new(vec![]);
            img.write_to(&mut out, fmt).unwrap();
            out.into_inner()
        };
        let mut v = vec![];
        for (name, img) in [
            ("rgb", DynamicImage::ImageRgb8(rgb.clone())),
            ("rgba", DynamicImage::ImageRgba8(rgba.clone())),
            ("gray16", DynamicImage::ImageLuma16(gray16.clone())),
        ] {
            for (ext, fmt) in [
                ("png", ImageFormat::Png),
                ("bmp", ImageFormat::Bmp),
                ("tif", ImageFormat::Tiff),
                ("gif", ImageFormat::Gif),
                ("webp", ImageFormat::WebP),
                ("jpg", ImageFormat::Jpeg),
            ] {
                // the encoders take what their format holds
                let img = match (ext, name) {
                    ("gif" | "webp", "gray16") => continue,
                    ("jpg", "rgba") => DynamicImage::ImageRgb8(rgb.clone()),
                    ("jpg" | "bmp", "gray16") => DynamicImage::ImageLuma8(img.to_luma8()),
                    _ => img.clone(),
                };
                v.push((format!("{name}.{ext}"), encode(&img, fmt)));
            }
        }
        // what the encoders here do not write: progressive, restart markers, CMYK, lossy WebP, animation
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile");
        for f in [
            "img_jpeg_ok_progressive.jpg",
            "img_jpeg_ok_restart.jpg",
            "img_jpeg_ok_cmyk.jpg",
            "img_jpeg_ok_gray.jpg",
            "img_jpeg_ok_exif_rotated.jpg",
            "img_webp_ok.webp",
            "img_gif_ok.gif",
            "img_tif_ok.tif",
        ] {
            v.push((f.to_string(), std::fs::read(dir.join(f)).unwrap()));
        }
        v
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    /// xor a byte (position as a fraction of the length, in 1/65536)
    Flip(u16, u8),
    /// set a byte
    Set(u16, u8),
    /// set a 16-bit or 32-bit field in the first 64 bytes (headers) to a hostile value, either byte order
    Field { at: u8, wide: bool, big_endian: bool, value: u32 },
    /// cut the file
    Truncate(u16),
    /// insert bytes
    Insert(u16, Vec<u8>),
    /// copy a stretch over another (chunks and segments repeated)
    Copy(u16, u16, u8),
}

fn at(frac: u16, len: usize) -> usize {
    (frac as usize * len) >> 16
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(p, x) => {
                let i = at(*p, b.len());
                b[i] ^= x | 1;
            }
            Mutation::Set(p, x) => {
                let i = at(*p, b.len());
                b[i] = *x;
            }
            Mutation::Field { at, wide, big_endian, value } => {
                let bytes: Vec<u8> = match (wide, big_endian) {
                    (true, true) => value.to_be_bytes().to_vec(),
                    (true, false) => value.to_le_bytes().to_vec(),
                    (false, true) => (*value as u16).to_be_bytes().to_vec(),
                    (false, false) => (*value as u16).to_le_bytes().to_vec(),
                };
                let i = *at as usize;
                if i + bytes.len() <= b.len() {
                    b[i..i + bytes.len()].copy_from_slice(&bytes);
                }
            }
            Mutation::Truncate(p) => {
                let i = at(*p, b.len()).max(1);
                b.truncate(i);
            }
            Mutation::Insert(p, x) => {
                let i = at(*p, b.len());
                b.splice(i..i, x.iter().copied());
            }
            Mutation::Copy(from, to, n) => {
                let (f, t, n) = (at(*from, b.len()), at(*to, b.len()), *n as usize);
                let piece = b[f..(f + n).min(b.len())].to_vec();
                b.splice(t..t, piece);
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let hostile = prop_oneof![
        Just(0u32),
        Just(1),
        Just(0xFFFF),
        Just(0x7FFF_FFFF),
        Just(0xFFFF_FFFF),
        Just(65500),
        Just(16383),
        Just(9000),
        Just(3000),
        any::<u32>(),
    ];
    prop_oneof![
        3 => (any::<u16>(), any::<u8>()).prop_map(|(p, x)| Mutation::Flip(p, x)),
        2 => (any::<u16>(), any::<u8>()).prop_map(|(p, x)| Mutation::Set(p, x)),
        4 => (0u8..64, any::<bool>(), any::<bool>(), hostile)
            .prop_map(|(at, wide, big_endian, value)| Mutation::Field { at, wide, big_endian, value }),
        1 => any::<u16>().prop_map(Mutation::Truncate),
        1 => (any::<u16>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, x)| Mutation::Insert(p, x)),
        1 => (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(f, t, n)| Mutation::Copy(f, t, n)),
    ]
}

fn check(seed: usize, muts: &[Mutation]) -> Result<(), TestCaseError> {
    let (name, bytes) = &seeds()[seed];
    let data = apply(bytes.clone(), muts);
    let t = std::time::Instant::now();
    let (r, peak) = peak_alloc::peak_during(|| std::panic::catch_unwind(|| decode_bytes(&data, name, &LIMITS)));
    let took = t.elapsed();
    let r = r.map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
        TestCaseError::fail(format!("{name}: panic: {}", msg.unwrap_or_default()))
    })?;
    let bound = LIMITS.max_decoded_bytes + SLACK + data.len() as u64;
    prop_assert!(
        peak <= bound,
        "{name}: {peak} bytes allocated, bound {bound} ({:?})",
        r.as_ref().map(|i| i.dimensions())
    );
    prop_assert!(took.as_secs_f64() < 5.0, "{name}: {took:?}");
    match r {
        Ok(img) => {
            let (w, h) = img.dimensions();
            prop_assert!(w > 0 && h > 0 && w as u64 * h as u64 <= LIMITS.max_pixels, "{name}: {w}x{h}");
            prop_assert_eq!(img.as_raw().len(), w as usize * h as usize * 3);
        }
        Err(e) => {
            let e = e.to_string();
            prop_assert!(e.contains(name.as_str()), "the error names the file: {}", e);
            // a decoder's panic, caught and reported as an error, is still a bug the file found
            prop_assert!(!e.contains("the decoder failed"), "{}", e);
        }
    }
    Ok(())
}

fn runner(default_cases: u32) -> TestRunner {
    let mut config = Config {
        cases: default_cases,
        rng_seed: RngSeed::Fixed(20240611),
        failure_persistence: None,
        ..Config::default()
    };
    config = proptest::test_runner::contextualize_config(config); // PROPTEST_CASES, PROPTEST_RNG_SEED
    TestRunner::new(config)
}

#[test]
fn seeds_decode() {
    for (name, bytes) in seeds() {
        let img = decode_bytes(bytes, name, &LIMITS).unwrap_or_else(|e| panic!("{e}"));
        assert!(img.width() > 0, "{name}");
    }
}

#[test]
fn mutated_images_never_panic_nor_allocate_past_the_limit() {
    let n = seeds().len();
    runner(100_000)
        .run(&(0..n, proptest::collection::vec(mutation(), 1..6)), |(seed, muts)| check(seed, &muts))
        .unwrap();
}

#[test]
fn header_fields_set_to_huge_values() {
    // every 16/32-bit field of the first 48 bytes of every seed, set to each hostile value in turn
    let n = seeds().len();
    for seed in 0..n {
        for at in 0..48u8 {
            for value in [0u32, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF, 40000] {
                for (wide, big_endian) in [(false, true), (false, false), (true, true), (true, false)] {
                    check(seed, &[Mutation::Field { at, wide, big_endian, value }]).unwrap();
                }
            }
        }
    }
}
