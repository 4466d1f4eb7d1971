//! Image decoding, preprocessing against the reference's input tensors, and bad images.
mod common;
use candle_core::Device;
use common::*;
use gradcam::image::{load_rgb, preprocess, DEFAULT_MAX_PIXELS};
use gradcam::models::Normalization;

#[test]
fn preprocessing_matches_the_reference_input_tensors() {
    for (model, norm) in
        [("lite0", Normalization::LITE), ("resnet50", Normalization::IMAGENET), ("resnet18", Normalization::IMAGENET)]
    {
        for (dir, _, _) in golden_images(model) {
            let stem = dir.rsplit('/').next().unwrap();
            let file = ["png", "jpg"]
                .iter()
                .map(|e| format!("examples/{stem}.{e}"))
                .find(|f| gradcam::models::zoo::home().join(f).exists())
                .unwrap_or_else(|| format!("examples/{stem}.png"));
            let img = load_rgb(asset(&file), DEFAULT_MAX_PIXELS).unwrap();
            let x = preprocess(&img, (224, 224), &norm, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let want = golden(&format!("{dir}/input.npy")).data;
            let mean = x.iter().zip(&want).map(|(a, b)| (a - b).abs()).sum::<f32>() / x.len() as f32;
            let max = max_abs_diff(&x, &want);
            // tolerances from the issue, in normalised units: mean |Δ| ≤ 0.01, max |Δ| ≤ 0.05
            assert!(mean <= 0.01 && max <= 0.05, "{model} {stem}: mean {mean} max {max}");
        }
    }
}

#[test]
fn other_pixel_formats_become_rgb8() {
    for f in ["camera.png", "no_time_for_that_tiny.gif", "multipage.tif", "logo.png"] {
        let img = load_rgb(asset(&format!("examples/{f}")), DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(img.width() > 0 && img.height() > 0, "{f}");
    }
    // 16-bit grayscale, written here
    let dir = std::env::temp_dir().join(format!("gradcam-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("gray16.png");
    let g = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(8, 4, |x, _| image::Luma([x as u16 * 8000]));
    g.save(&p).unwrap();
    let img = load_rgb(&p, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(img.get_pixel(7, 0).0, [218, 218, 218]); // 56000/65535·255 ≈ 217.9
                                                        // RGBA TIFF, BMP and WebP written here: alpha dropped, colours kept
    let rgba = image::RgbaImage::from_fn(6, 5, |x, y| image::Rgba([x as u8 * 40, y as u8 * 50, 9, 100]));
    for ext in ["tif", "bmp", "webp"] {
        let p = dir.join(format!("rgba.{ext}"));
        image::DynamicImage::ImageRgba8(rgba.clone()).save(&p).unwrap();
        let img = load_rgb(&p, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(img.get_pixel(5, 4).0, [200, 200, 9], "{ext}");
    }
}

fn bad(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("gradcam-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let e = match load_rgb(&p, DEFAULT_MAX_PIXELS) {
        Ok(_) => panic!("{name}: decoded without an error"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(name), "the error names the file: {e}");
    e
}

/// A PNG whose header claims 100000×100000 (valid signature and IHDR with its CRC, no pixel data).
pub fn huge_png_header() -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32fast::hash(&ihdr);
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

#[test]
fn bad_images_give_clear_errors() {
    let e = load_rgb("/nonexistent/cat.png", DEFAULT_MAX_PIXELS).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/cat.png"), "{e}");
    let e = bad("zero.png", b"");
    assert!(e.contains("empty"), "{e}");
    let e = bad("text.png", b"this is text, not a picture\n");
    assert!(e.contains("not a readable image"), "{e}");
    let jpg = std::fs::read(asset("examples/rocket.jpg")).unwrap();
    bad("truncated.jpg", &jpg[..jpg.len() / 3]);
    let e = bad("huge.png", &huge_png_header());
    assert!(e.contains("100000x100000") && e.contains("--max-pixels"), "{e}");
}
