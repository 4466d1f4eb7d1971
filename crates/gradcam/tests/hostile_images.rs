//! Hostile image files: every file of tests/fixtures/hostile/img_* does what img_manifest.json says (written by
//! scripts/make_hostile_images.py from what PIL does with it), without a panic and without a big allocation;
//! decompression bombs are refused from their header; images within the limits decode with one buffer.
mod common;
mod peak_alloc;

use gradcam::image::{decode_bytes, load_rgb_with, ImageLimits, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS};
use std::io::Write;
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

const MB: u64 = 1 << 20;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradcam-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Loads `path` with `limits`, catching a panic: (Ok or Err message, or the panic's message) and the peak
/// of the bytes allocated meanwhile.
fn load(path: &Path, limits: &ImageLimits) -> (Result<(u32, u32), String>, u64) {
    let (r, peak) = peak_alloc::peak_during(|| {
        std::panic::catch_unwind(|| load_rgb_with(path, limits).map(|img| img.dimensions()).map_err(|e| e.to_string()))
    });
    match r {
        Ok(r) => (r, peak),
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
            (Err(format!("PANIC: {}", msg.unwrap_or_default())), peak)
        }
    }
}

#[test]
fn every_hostile_fixture_does_what_the_manifest_says() {
    let text = std::fs::read_to_string(fixtures().join("img_manifest.json")).unwrap();
    let manifest: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let limits = ImageLimits::default();
    let mut wrong = vec![];
    let mut n = 0;
    for (name, entry) in &manifest {
        if name.starts_with('_') {
            continue;
        }
        n += 1;
        let (expect, pil) = (entry["expect"].as_str().unwrap(), entry["pil"].as_str().unwrap());
        assert!(
            expect == pil || entry.get("why").is_some(),
            "{name}: the manifest expects {expect} where PIL says {pil} without saying why"
        );
        let path = fixtures().join(name);
        let (got, peak) = load(&path, &limits);
        let verdict = match &got {
            Ok(_) => "ok",
            Err(e) if e.starts_with("PANIC") => "panic",
            Err(_) => "error",
        };
        if verdict != expect {
            wrong.push(format!("{name}: expected {expect} (PIL: {}), got {got:?}", entry["pil_says"]));
        }
        if let Err(e) = &got {
            if !e.contains(name.as_str()) {
                wrong.push(format!("{name}: the error does not name the file: {e}"));
            }
        }
        // the fixtures are at most a few KB, and the valid pictures among them 64x48: anything near the
        // limits allocated for one of them is a bomb that went off
        if peak > 16 * MB {
            wrong.push(format!("{name}: {:.1} MB allocated to load it ({got:?})", peak as f64 / MB as f64));
        }
    }
    assert!(n >= 100, "only {n} files in the manifest");
    assert!(wrong.is_empty(), "{} of {n} files:\n{}", wrong.len(), wrong.join("\n"));
}

/// The file: a 16-bit RGBA PNG of 10000x10000 in about 800 KB, all zeros (800 MB decoded).
fn png_bomb(path: &Path, w: u32, h: u32) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let chunk = |f: &mut dyn Write, kind: &[u8], data: &[u8]| {
        f.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
        f.write_all(kind).unwrap();
        f.write_all(data).unwrap();
        let mut c = crc32fast::Hasher::new();
        c.update(kind);
        c.update(data);
        f.write_all(&c.finalize().to_be_bytes()).unwrap();
    };
    f.write_all(b"\x89PNG\r\n\x1a\n").unwrap();
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]);
    chunk(&mut f, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; 1 + w as usize * 8];
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    for part in idat.chunks(1 << 20) {
        chunk(&mut f, b"IDAT", part);
    }
    chunk(&mut f, b"IEND", b"");
}

#[test]
fn a_16bit_rgba_png_bomb_is_refused_from_its_header() {
    let p = scratch("bomb16.png");
    png_bomb(&p, 10000, 10000);
    let size = std::fs::metadata(&p).unwrap().len();
    assert!(size < 2 * MB, "{size}");
    let (got, peak) = load(&p, &ImageLimits::default());
    let e = got.expect_err("800 MB decoded must be refused");
    for want in ["bomb16.png", "10000x10000", "800000000", "400000000", "--max-decoded-bytes"] {
        assert!(e.contains(want), "the error says {want}: {e}");
    }
    assert!(peak < 4 * MB, "refused from the header, yet {peak} bytes allocated");
    // the pixel limit still comes first, with its own flag
    let (got, _) = load(&p, &ImageLimits { max_pixels: 50_000_000, ..Default::default() });
    let e = got.unwrap_err();
    assert!(e.contains("100.0 megapixels") && e.contains("--max-pixels"), "{e}");
}

#[test]
fn the_defaults_are_100_megapixels_and_400_mb() {
    let d = ImageLimits::default();
    assert_eq!((d.max_pixels, d.max_decoded_bytes), (DEFAULT_MAX_PIXELS, DEFAULT_MAX_DECODED_BYTES));
    assert_eq!((DEFAULT_MAX_PIXELS, DEFAULT_MAX_DECODED_BYTES), (100_000_000, 400_000_000));
}

/// A textured RGB picture, so that JPEG has something to encode.
fn texture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7;
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, v as u8])
    })
}

fn jpeg_bytes(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).unwrap();
    out
}

/// Offset of the frame header's height field.
fn sof_size_offset(b: &[u8]) -> usize {
    let mut i = 2;
    loop {
        let m = b[i + 1];
        if (0xC0..=0xC2).contains(&m) {
            return i + 5;
        }
        i += 2 + u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
    }
}

#[test]
fn a_jpeg_whose_frame_header_lies_about_its_size_is_refused() {
    // the file: a 35 KB photo whose SOF says 9000x9000 (PIL loads it: 81 megapixels of grey)
    let photo = image::open(common::asset("examples/chelsea.png")).unwrap().to_rgb8();
    let mut b = jpeg_bytes(&photo, 90);
    let o = sof_size_offset(&b);
    b[o..o + 4].copy_from_slice(&[0x23, 0x28, 0x23, 0x28]);
    let p = scratch("sof9000.jpg");
    std::fs::write(&p, &b).unwrap();
    let (got, peak) = load(&p, &ImageLimits::default());
    let e = got.expect_err("a 9000x9000 frame cannot be in a 35 KB scan");
    assert!(e.contains("sof9000.jpg") && e.contains("9000x9000"), "{e}");
    assert!(peak < 4 * MB + b.len() as u64, "{peak} bytes allocated");
    // the same scan in a frame twice its size is possible: decoded (grey where the data runs out), as PIL does
    let mut b2 = jpeg_bytes(&photo, 90);
    let o = sof_size_offset(&b2);
    b2[o..o + 4].copy_from_slice(&(600u16).to_be_bytes().into_iter().chain(902u16.to_be_bytes()).collect::<Vec<_>>());
    std::fs::write(&p, &b2).unwrap();
    assert_eq!(load(&p, &ImageLimits::default()).0, Ok((902, 600)));
}

#[test]
fn exif_rotated_photos_still_decode() {
    let rocket = std::fs::read(common::asset("examples/rocket.jpg")).unwrap();
    let plain = load_rgb_with(common::asset("examples/rocket.jpg"), &ImageLimits::default()).unwrap();
    assert_eq!(plain.dimensions(), (640, 427));
    // the same photo with an Exif segment saying "rotate 90° clockwise" (orientation 6)
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut b = rocket[..2].to_vec();
    b.extend_from_slice(&[0xFF, 0xE1]);
    b.extend_from_slice(&(app1.len() as u16 + 2).to_be_bytes());
    b.extend_from_slice(&app1);
    b.extend_from_slice(&rocket[2..]);
    let rotated = decode_bytes(&b, "rotated.jpg", &ImageLimits::default()).unwrap();
    assert_eq!(rotated.dimensions(), (427, 640));
    assert_eq!(rotated.get_pixel(426, 0), plain.get_pixel(0, 0));
    assert_eq!(rotated.get_pixel(0, 639), plain.get_pixel(639, 426));
}

#[test]
fn images_within_the_limits_decode_without_extra_copies() {
    // 16-bit RGBA PNG, 1500x1000: 12 MB decoded; the RGB result (4.5 MB) is made in the same buffer
    let p = scratch("rgba16.png");
    let img = image::ImageBuffer::<image::Rgba<u16>, _>::from_fn(1500, 1000, |x, y| {
        image::Rgba([(x * 40) as u16, (y * 60) as u16, 999, 65535])
    });
    img.save(&p).unwrap();
    let decoded = 1500 * 1000 * 8;
    let (got, peak) = load(&p, &ImageLimits::default());
    assert_eq!(got, Ok((1500, 1000)));
    assert!(peak <= decoded + 2 * MB, "{:.1} MB for {:.1} MB of pixels", peak as f64 / 1e6, decoded as f64 / 1e6);
    // JPEG, 2000x1500: the RGB output and the file, nothing else of that size
    let p = scratch("big.jpg");
    let b = jpeg_bytes(&texture(2000, 1500), 85);
    std::fs::write(&p, &b).unwrap();
    let (got, peak) = load(&p, &ImageLimits::default());
    assert_eq!(got, Ok((2000, 1500)));
    let want = 2000 * 1500 * 3 + b.len() as u64 + 2 * MB;
    assert!(peak <= want, "{:.1} MB, want at most {:.1}", peak as f64 / 1e6, want as f64 / 1e6);
}

#[test]
fn decoded_bytes_limit_applies_to_every_format() {
    // 3000x2000 RGBA = 24 MB decoded: refused under a 16 MB limit in every format, from the header
    let img = image::RgbaImage::from_fn(3000, 2000, |x, y| image::Rgba([x as u8, y as u8, 7, 200]));
    let limits = ImageLimits { max_decoded_bytes: 16_000_000, ..Default::default() };
    for ext in ["png", "tif", "bmp", "webp", "gif"] {
        let p = scratch(&format!("rgba24mb.{ext}"));
        image::DynamicImage::ImageRgba8(img.clone()).save(&p).unwrap();
        let (got, peak) = load(&p, &limits);
        let e = got.expect_err(ext);
        assert!(e.contains("3000x2000") && e.contains("--max-decoded-bytes") && e.contains("16000000"), "{ext}: {e}");
        assert!(peak < 2 * MB + std::fs::metadata(&p).unwrap().len(), "{ext}: {peak} bytes allocated");
        // and decoded under the default limits
        assert_eq!(load(&p, &ImageLimits::default()).0, Ok((3000, 2000)), "{ext}");
    }
}

#[test]
fn a_png_with_far_too_much_pixel_data_decodes_quickly_and_small() {
    // 16x16 grey whose IDAT inflates to 64 MB
    let p = scratch("idat_bomb.png");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        z.write_all(&zeros).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in
        [(&b"IHDR"[..], &[0, 0, 0, 16, 0, 0, 0, 16, 8, 0, 0, 0, 0][..]), (b"IDAT", &idat), (b"IEND", &[])]
    {
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(kind);
        b.extend_from_slice(data);
        b.extend_from_slice(&crc32fast::hash(&[kind, data].concat()).to_be_bytes());
    }
    std::fs::write(&p, &b).unwrap();
    let t = std::time::Instant::now();
    let (got, peak) = load(&p, &ImageLimits::default());
    assert_eq!(got, Ok((16, 16)));
    assert!(peak < 4 * MB, "{peak}");
    assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
}

/// The measurement behind the JPEG rules: random corruptions of valid JPEGs, with PIL's verdicts, written by
/// `scripts/make_hostile_images.py --corpus DIR`. Every file PIL refuses must be refused here; the files PIL
/// loads and this refuses are listed by reason (the deliberate differences, see `image.rs`).
#[test]
#[ignore = "needs GRADCAM_JPEG_CORPUS=DIR, written by scripts/make_hostile_images.py --corpus DIR"]
fn jpeg_verdicts_agree_with_pil_on_a_corpus() {
    let dir = PathBuf::from(std::env::var("GRADCAM_JPEG_CORPUS").expect("GRADCAM_JPEG_CORPUS"));
    let text = std::fs::read_to_string(dir.join("img_manifest.json")).unwrap();
    let manifest: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut counts = std::collections::BTreeMap::<(String, &str, &str), usize>::new();
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    let mut accepted_wrongly = vec![];
    for (name, entry) in &manifest {
        let pil = entry["pil"].as_str().unwrap();
        let (got, _) = load(&dir.join(name), &ImageLimits::default());
        let ours = if got.is_ok() { "ok" } else { "error" };
        *counts.entry((entry["kind"].as_str().unwrap_or("").to_string(), pil, ours)).or_default() += 1;
        match (pil, &got) {
            ("error", Ok(_)) => accepted_wrongly.push(format!("{name}: PIL says {}", entry["pil_says"])),
            ("ok", Err(e)) => {
                let why = e.split("not a readable image: ").nth(1).unwrap_or(e);
                let class: String =
                    why.split(|c: char| c.is_ascii_digit()).next().unwrap_or(why).chars().take(40).collect();
                *refused.entry(class).or_default() += 1;
            }
            _ => {}
        }
    }
    for ((kind, pil, ours), n) in &counts {
        println!("{kind:14} PIL {pil:5} here {ours:5} {n:6}");
    }
    for (why, n) in &refused {
        println!("PIL loads, refused here ({n}): {why}");
    }
    assert!(accepted_wrongly.is_empty(), "PIL refuses, decoded here:\n{}", accepted_wrongly.join("\n"));
}
