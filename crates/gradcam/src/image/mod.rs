//! Images in and out of the network: decoding (PNG, JPEG, GIF first frame, BMP, TIFF, WebP) with EXIF
//! orientation applied and any pixel format converted to 8-bit RGB; limits on pixels and on the memory a
//! decode takes, checked from the header before decoding; hostile files refused without a panic or a large
//! allocation (a JPEG as PIL refuses it: `jpeg.rs`; the other formats' headers: `probe.rs`); PIL's bilinear
//! resize reproduced exactly and normalisation into the model's input tensor (`resize.rs`).

use crate::error::{Error, Result};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

mod jpeg;
mod probe;
mod resize;

use probe::{probe_bmp, probe_png, probe_tiff, probe_webp};
pub use resize::{preprocess, resize_bilinear_pil, to_tensor};

/// Default pixel limit: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default limit on the memory a decode takes: 400 MB.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 400_000_000;

/// The longest side an image may have, whatever its pixel count: 65,535 (JPEG's and WebP's own bound is at most
/// this). An image of 50,000,000×2 pixels is within the pixel limit, but resizing and drawing it would need
/// buffers of one side times the other side's target size (gigabytes), and it is no photo.
pub const MAX_SIDE: u32 = 65_535;

/// What decoding one image may take, checked from the file's header before a pixel is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Width × height.
    pub max_pixels: u64,
    /// The bytes the decode holds at once: the decoder's output (width × height × the bytes per pixel of
    /// the colour type it decodes to, e.g. 8 for 16-bit RGBA), the working buffers that grow with the image
    /// (a progressive JPEG's coefficients, a TIFF's or a WebP's intermediate planes), the RGB copy where
    /// one is needed, and for a JPEG the file, which is decoded from memory.
    pub max_decoded_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_pixels: DEFAULT_MAX_PIXELS, max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES }
    }
}

/// Decode an image file to 8-bit RGB, refusing from the header alone one larger than `max_pixels` (and the
/// default decoded-bytes limit).
pub fn load_rgb(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage> {
    load_rgb_with(path, &ImageLimits { max_pixels, ..ImageLimits::default() })
}

/// Decode an image file to 8-bit RGB with its EXIF orientation applied, refusing from the header alone one
/// over `limits`, and refusing a file that is not a whole image (what PIL refuses, for JPEG).
pub fn load_rgb_with(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<RgbImage> {
    let path = path.as_ref();
    let meta = crate::util::file_to_read(path, "an image file", false)?;
    if meta.len() == 0 {
        return Err(Error::image(path, "the file is empty (0 bytes)"));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    decode(BufReader::new(file), meta.len(), None, path, limits)
}

/// Decode an image held in memory, as [`load_rgb_with`] does a file; `name` names it in errors.
pub fn decode_bytes(bytes: &[u8], name: impl AsRef<Path>, limits: &ImageLimits) -> Result<RgbImage> {
    let name = name.as_ref();
    if bytes.is_empty() {
        return Err(Error::image(name, "the file is empty (0 bytes)"));
    }
    decode(Cursor::new(bytes), bytes.len() as u64, Some(bytes), name, limits)
}

fn decode<R: BufRead + Seek>(
    mut r: R,
    len: u64,
    whole: Option<&[u8]>,
    path: &Path,
    limits: &ImageLimits,
) -> Result<RgbImage> {
    let io = |e| Error::io(path, e);
    let mut head = [0u8; 64];
    let n = read_up_to(&mut r, &mut head).map_err(io)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let expected = "expected PNG, JPEG, GIF, BMP, TIFF or WebP";
    let format = match image::guess_format(&head[..n]) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::Bmp)) => f,
        Ok(f @ (ImageFormat::Tiff | ImageFormat::WebP)) => f,
        Ok(f) => return Err(Error::image(path, format!("a {f:?} file, a format not supported ({expected})"))),
        Err(_) => return Err(Error::image(path, format!("unknown format ({expected})"))),
    };
    let budget = Budget { path, limits };
    let (img, orientation) = if format == ImageFormat::Jpeg {
        match whole {
            Some(bytes) => decode_jpeg(bytes, &budget)?,
            None => {
                // a JPEG is decoded from memory: the file counts against the limit
                if len > limits.max_decoded_bytes {
                    let max = limits.max_decoded_bytes;
                    return Err(budget.bad(format!(
                        "the JPEG file is {len} bytes, and a JPEG is decoded from memory: over the limit of {max} \
                         bytes (raise it with --max-decoded-bytes)"
                    )));
                }
                let mut bytes = Vec::new();
                bytes.try_reserve_exact(len as usize).map_err(|_| budget.no_memory(len))?;
                r.read_to_end(&mut bytes).map_err(io)?;
                decode_jpeg(&bytes, &budget)?
            }
        }
    } else {
        decode_other(r, format, len, &budget)?
    };
    Ok(orient(img, orientation))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The limits, and the file they apply to, for the error messages.
struct Budget<'a> {
    path: &'a Path,
    limits: &'a ImageLimits,
}

impl Budget<'_> {
    fn pixels(&self, w: u64, h: u64) -> Result<()> {
        let pixels = w.saturating_mul(h);
        if pixels > self.limits.max_pixels {
            return Err(Error::image(
                self.path,
                format!(
                    "{w}x{h} is {:.1} megapixels, over the limit of {:.1} (raise it with --max-pixels)",
                    pixels as f64 / 1e6,
                    self.limits.max_pixels as f64 / 1e6
                ),
            ));
        }
        if pixels == 0 {
            return Err(Error::image(self.path, format!("the image is {w}x{h}")));
        }
        if w.max(h) > MAX_SIDE as u64 {
            return Err(Error::image(
                self.path,
                format!("{w}x{h}: a side longer than {MAX_SIDE} pixels is not supported (the largest a JPEG can be)"),
            ));
        }
        Ok(())
    }

    /// `what` is e.g. "10000x10000 16-bit RGBA".
    fn bytes(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.limits.max_decoded_bytes {
            return Err(self.over(what, bytes));
        }
        Ok(())
    }

    fn over(&self, what: &str, bytes: u64) -> Error {
        let max = self.limits.max_decoded_bytes;
        Error::image(
            self.path,
            format!(
                "{what} would take {bytes} bytes ({:.1} MB) to decode, over the limit of {max} bytes ({:.1} MB) \
                 (raise it with --max-decoded-bytes)",
                bytes as f64 / 1e6,
                max as f64 / 1e6
            ),
        )
    }

    fn no_memory(&self, bytes: u64) -> Error {
        Error::image(self.path, format!("out of memory: could not allocate {bytes} bytes to decode it"))
    }

    fn alloc(&self, bytes: u64) -> Result<Vec<u8>> {
        let n = usize::try_from(bytes).map_err(|_| self.no_memory(bytes))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| self.no_memory(bytes))?;
        v.resize(n, 0);
        Ok(v)
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::image(self.path, msg)
    }
}

/// Runs a decoder on data from a file: a panic in it (a bug the file found) becomes an error.
fn guarded<T>(budget: &Budget, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(budget.bad(format!("the decoder failed on it: {}", msg.unwrap_or_default())))
        }
    }
}

fn rotates(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

fn orient(img: RgbImage, o: Orientation) -> RgbImage {
    if o == Orientation::NoTransforms {
        return img;
    }
    let mut d = image::DynamicImage::ImageRgb8(img);
    d.apply_orientation(o);
    d.into_rgb8()
}

fn describe(c: ColorType) -> String {
    let bits = c.bytes_per_pixel() as u16 * 8 / c.channel_count() as u16;
    let kind = match c.channel_count() {
        1 => "grey",
        2 => "grey+alpha",
        3 => "RGB",
        _ => "RGBA",
    };
    if matches!(c, ColorType::Rgb32F | ColorType::Rgba32F) {
        format!("32-bit float {kind}")
    } else {
        format!("{bits}-bit {kind}")
    }
}

/// Peak bytes of a decode whose decoder writes `out` bytes of colour `c` with `working` bytes of its own
/// beside them, then is made RGB (in place unless grey) and turned by `o`.
fn peak(out: u64, working: u64, c: ColorType, w: u64, h: u64, o: Orientation) -> u64 {
    let rgb = w.saturating_mul(h).saturating_mul(3);
    let decode = out.saturating_add(working);
    let convert = out.saturating_add(if c.channel_count() < 3 { rgb } else { 0 });
    let turn = if rotates(o) { rgb.saturating_mul(2) } else { rgb };
    decode.max(convert).max(turn)
}

/// The decoder's output made 8-bit RGB, in its own buffer where the pixel is at least 3 bytes (16-bit and
/// float samples rounded as the `image` crate does, alpha dropped); grey is spread into a new buffer.
fn to_rgb8(mut buf: Vec<u8>, c: ColorType, w: u32, h: u32, budget: &Budget) -> Result<RgbImage> {
    let n = w as usize * h as usize;
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u16_to_u8 = |v: u16| ((v as u32 + 128) / 257) as u8;
    let f32_at = |b: &[u8], i: usize| f32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let f32_to_u8 = |v: f32| {
        let v = if v.is_nan() || v >= 1.0 { 1.0 } else { v.max(0.0) };
        (v * 255.0).round() as u8
    };
    let need = n as u64 * c.bytes_per_pixel() as u64;
    if (buf.len() as u64) < need {
        return Err(budget.bad(format!("the decoder gave {} bytes for {need}", buf.len())));
    }
    let grey = |luma: &dyn Fn(&[u8], usize) -> u8, stride: usize, buf: &[u8]| -> Result<Vec<u8>> {
        let mut rgb = Vec::new();
        rgb.try_reserve_exact(n * 3).map_err(|_| budget.no_memory(n as u64 * 3))?;
        for i in 0..n {
            let v = luma(buf, i * stride);
            rgb.extend_from_slice(&[v, v, v]);
        }
        Ok(rgb)
    };
    let buf = match c {
        ColorType::Rgb8 => buf,
        ColorType::Rgba8 => {
            for i in 0..n {
                buf.copy_within(4 * i..4 * i + 3, 3 * i);
            }
            buf
        }
        ColorType::Rgb16 | ColorType::Rgba16 => rgb_in_place(buf, n, c, 2, |b, p| u16_to_u8(u16_at(b, p))),
        ColorType::Rgb32F | ColorType::Rgba32F => rgb_in_place(buf, n, c, 4, |b, p| f32_to_u8(f32_at(b, p))),
        ColorType::L8 => grey(&|b, p| b[p], 1, &buf)?,
        ColorType::La8 => grey(&|b, p| b[p], 2, &buf)?,
        ColorType::L16 => grey(&|b, p| u16_to_u8(u16_at(b, p)), 2, &buf)?,
        ColorType::La16 => grey(&|b, p| u16_to_u8(u16_at(b, p)), 4, &buf)?,
        other => return Err(budget.bad(format!("pixel format {other:?} is not supported"))),
    };
    let mut buf = buf;
    buf.truncate(n * 3);
    buf.shrink_to_fit();
    RgbImage::from_raw(w, h, buf).ok_or_else(|| budget.bad("the decoded pixels do not fill the image"))
}

/// Pixels of colour `c` (3 or 4 samples of `sample_bytes` each) made 8-bit RGB in their own buffer: pixel i's
/// three bytes land at 3i, before any sample still to be read.
fn rgb_in_place(
    mut buf: Vec<u8>,
    n: usize,
    c: ColorType,
    sample_bytes: usize,
    to_u8: impl Fn(&[u8], usize) -> u8,
) -> Vec<u8> {
    let stride = c.bytes_per_pixel() as usize;
    for i in 0..n {
        let p = stride * i;
        let v = [0, 1, 2].map(|k| to_u8(&buf, p + k * sample_bytes));
        buf[3 * i..3 * i + 3].copy_from_slice(&v);
    }
    buf
}

fn image_error(budget: &Budget, e: image::ImageError) -> Error {
    match e {
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            budget.bad(format!("truncated: the file ends before the data its header describes ({e})"))
        }
        image::ImageError::Limits(l) => budget.bad(format!(
            "the decoder needs more memory than the limit of {} bytes allows ({l}; raise it with \
             --max-decoded-bytes)",
            budget.limits.max_decoded_bytes
        )),
        e => budget.bad(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// PNG, GIF, BMP, TIFF, WebP: the `image` crate's decoders, with the checks they lack done first

fn decode_other<R: BufRead + Seek>(
    mut r: R,
    format: ImageFormat,
    len: u64,
    budget: &Budget,
) -> Result<(RgbImage, Orientation)> {
    let io = |e| Error::io(budget.path, e);
    // what the header says, before the decoder reads anything: the PNG decoder reads on to the first data
    // chunk before it reports a size, the WebP decoder allocates for sizes the file does not hold
    let working = match format {
        ImageFormat::Png => {
            probe_png(&mut r, len, budget)?;
            0
        }
        ImageFormat::Bmp => {
            probe_bmp(&mut r, len, budget)?;
            0
        }
        ImageFormat::WebP => probe_webp(&mut r, len, budget)?,
        ImageFormat::Tiff => {
            probe_tiff(&mut r, len, budget)?;
            0
        }
        _ => 0,
    };
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let limits = budget.limits;
    let mut bounds = image::Limits::default();
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    bounds.max_image_width = Some(side);
    bounds.max_image_height = Some(side);
    bounds.max_alloc = Some(limits.max_decoded_bytes);
    let mut reader = ImageReader::with_format(r, format);
    reader.limits(bounds.clone());
    guarded(budget, move || {
        let mut decoder = reader.into_decoder().map_err(|e| image_error(budget, e))?;
        let (w, h) = decoder.dimensions();
        budget.pixels(w as u64, h as u64)?;
        let c = decoder.color_type();
        let out = decoder.total_bytes();
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        // the TIFF decoder decodes into a buffer of its own, then copies
        let working = if format == ImageFormat::Tiff { out } else { working };
        let need = peak(out, working, c, w as u64, h as u64, orientation);
        budget.bytes(&format!("{w}x{h} {}", describe(c)), need)?;
        // what is left of the limit bounds the decoder's own buffers (a GIF frame, TIFF strips)
        bounds.max_alloc = Some(limits.max_decoded_bytes - out);
        decoder.set_limits(bounds).map_err(|e| image_error(budget, e))?;
        let mut buf = budget.alloc(out)?;
        decoder.read_image(&mut buf).map_err(|e| image_error(budget, e))?;
        Ok((to_rgb8(buf, c, w, h, budget)?, orientation))
    })
}

// ---------------------------------------------------------------------------------------------------------
// JPEG

fn decode_jpeg(data: &[u8], budget: &Budget) -> Result<(RgbImage, Orientation)> {
    let plan = jpeg::check(data, budget)?;
    let (w, h) = (plan.frame.width as u64, plan.frame.height as u64);
    budget.pixels(w, h)?;
    let stream: &[u8] = plan.stream.as_deref().unwrap_or(&data[..plan.plain_len]);
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(stream), options);
    guarded(budget, || {
        let zune = |e: zune_jpeg::errors::DecodeErrors| budget.bad(format!("corrupt JPEG: {e}"));
        decoder.decode_headers().map_err(zune)?;
        let orientation =
            decoder.exif().and_then(|e| Orientation::from_exif_chunk(e)).unwrap_or(Orientation::NoTransforms);
        let out = w * h * 3;
        let held = data.len() as u64 + plan.stream.as_ref().map_or(0, |s| s.len() as u64);
        let need = peak(out, held + plan.working, ColorType::Rgb8, w, h, orientation);
        budget.bytes(&format!("{w}x{h} JPEG ({})", plan.describe()), need)?;
        if decoder.dimensions() != Some((w as usize, h as usize)) {
            return Err(budget.bad("corrupt JPEG: the decoder reads another size from the header"));
        }
        let mut buf = budget.alloc(out)?;
        decoder.decode_into(&mut buf).map_err(zune)?;
        let img = RgbImage::from_raw(w as u32, h as u32, buf)
            .ok_or_else(|| budget.bad("the decoded pixels do not fill the image"))?;
        Ok((img, orientation))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_to_rgb8_matches_the_image_crate() {
        use image::DynamicImage as D;
        let (w, h) = (7u32, 5u32);
        let v16 = |x: u32, y: u32, c: u32| ((x * 9001 + y * 4099 + c * 17000) % 65536) as u16;
        let f =
            |x: u32, y: u32, c: u32| [-0.5, 0.0, 0.25, 0.5, 0.999, 1.0, 2.0, f32::NAN][((x + y * 3 + c) % 8) as usize];
        let images = [
            D::ImageRgb8(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgb([x as u8 * 30, y as u8 * 50, 7]))),
            D::ImageRgba8(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgba([x as u8, y as u8 * 9, 200, 3]))),
            D::ImageLuma8(image::ImageBuffer::from_fn(w, h, |x, y| image::Luma([(x * y * 11) as u8]))),
            D::ImageLumaA8(image::ImageBuffer::from_fn(w, h, |x, y| image::LumaA([(x * 31) as u8, y as u8]))),
            D::ImageLuma16(image::ImageBuffer::from_fn(w, h, |x, y| image::Luma([v16(x, y, 0)]))),
            D::ImageLumaA16(image::ImageBuffer::from_fn(w, h, |x, y| image::LumaA([v16(x, y, 0), 9]))),
            D::ImageRgb16(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgb([0, 1, 2].map(|c| v16(x, y, c))))),
            D::ImageRgba16(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgba([0, 1, 2, 3].map(|c| v16(x, y, c))))),
            D::ImageRgb32F(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgb([0, 1, 2].map(|c| f(x, y, c))))),
            D::ImageRgba32F(image::ImageBuffer::from_fn(w, h, |x, y| image::Rgba([0, 1, 2, 3].map(|c| f(x, y, c))))),
        ];
        let limits = ImageLimits::default();
        let budget = Budget { path: Path::new("t"), limits: &limits };
        for img in images {
            let c = img.color();
            let got = to_rgb8(img.as_bytes().to_vec(), c, w, h, &budget).unwrap();
            assert_eq!(got, img.to_rgb8(), "{c:?}");
        }
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bilinear_pil(&img, 5, 4), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 99]));
        let r = resize_bilinear_pil(&img, 16, 50);
        assert!(r.pixels().all(|p| p.0 == [200, 10, 99]));
    }

    #[test]
    fn pil_reference_values() {
        // A 4x1 ramp halved: PIL gives [32, 159] for [0, 64, 128, 255] (triangle of support 2, weights
        // 1/8, 3/8, 3/8, 1/8 around centres 1 and 3): (0*3 + 64*3 + 128*1)/7 ... computed by hand below.
        let img = RgbImage::from_fn(4, 1, |x, _| {
            let v = [0u8, 64, 128, 255][x as usize];
            image::Rgb([v, v, v])
        });
        let r = resize_bilinear_pil(&img, 2, 1);
        // centre 1.0, support 2: x in [0, 3): weights tri((x+0.5-1)/2) = 0.75, 0.75, 0.25 → /1.75
        let a = ((0.0 * 0.75 + 64.0 * 0.75 + 128.0 * 0.25) / 1.75f64).round() as u8;
        // centre 3.0: x in [1, 4): weights 0.25, 0.75, 0.75
        let b = ((64.0 * 0.25 + 128.0 * 0.75 + 255.0 * 0.75) / 1.75f64).round() as u8;
        assert_eq!(r.get_pixel(0, 0).0[0], a);
        assert_eq!(r.get_pixel(1, 0).0[0], b);
    }
}
