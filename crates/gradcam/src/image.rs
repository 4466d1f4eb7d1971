//! Images in and out of the network: decoding (PNG, JPEG, GIF first frame, BMP, TIFF, WebP) with EXIF
//! orientation applied and any pixel format converted to 8-bit RGB; limits on pixels and on the memory a
//! decode takes, checked from the header before decoding; hostile files refused (a JPEG as PIL refuses it,
//! see the `jpeg` module below) without a panic or a large allocation; PIL's bilinear resize reproduced
//! exactly (antialiased when shrinking, fixed-point, two passes); and normalisation into the model's input
//! tensor.

use crate::error::{Error, Result};
use crate::models::Normalization;
use candle_core::{Device, Tensor};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// Default pixel limit: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default limit on the memory a decode takes: 400 MB.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 400_000_000;

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
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::image(path, "is a folder, not an image"));
    }
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
        ColorType::Rgb16 | ColorType::Rgba16 => {
            let stride = c.bytes_per_pixel() as usize;
            for i in 0..n {
                let p = stride * i;
                let v = [u16_at(&buf, p), u16_at(&buf, p + 2), u16_at(&buf, p + 4)];
                for (k, v) in v.into_iter().enumerate() {
                    buf[3 * i + k] = u16_to_u8(v);
                }
            }
            buf
        }
        ColorType::Rgb32F | ColorType::Rgba32F => {
            let stride = c.bytes_per_pixel() as usize;
            for i in 0..n {
                let p = stride * i;
                let v = [f32_at(&buf, p), f32_at(&buf, p + 4), f32_at(&buf, p + 8)];
                for (k, v) in v.into_iter().enumerate() {
                    buf[3 * i + k] = f32_to_u8(v);
                }
            }
            buf
        }
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

fn read_at<R: Read + Seek>(r: &mut R, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    r.seek(SeekFrom::Start(at))?;
    read_up_to(r, buf)
}

/// PNG: the size from the IHDR, and the compressed data (IDAT) long enough to hold it.
fn probe_png<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
    let io = |e| Error::io(budget.path, e);
    let mut ihdr = [0u8; 33];
    if read_at(r, 0, &mut ihdr).map_err(io)? < 33 || &ihdr[12..16] != b"IHDR" {
        return Ok(()); // the decoder says what is wrong
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (w, h, depth, colour) = (be32(&ihdr[16..]) as u64, be32(&ihdr[20..]) as u64, ihdr[24], ihdr[25]);
    budget.pixels(w, h)?;
    // samples per pixel in the file, and as decoded (palettes become RGB; a tRNS chunk could add alpha)
    let (raw, decoded, name) = match colour {
        0 => (1, 1, "grey"),
        2 => (3, 3, "RGB"),
        3 => (1, 3, "palette"),
        4 => (2, 2, "grey+alpha"),
        6 => (4, 4, "RGBA"),
        _ => return Ok(()),
    };
    if !matches!(depth, 1 | 2 | 4 | 8 | 16) {
        return Ok(());
    }
    let pixels = w * h;
    let out = pixels.saturating_mul(decoded * if depth == 16 { 2 } else { 1 });
    let rgb = pixels.saturating_mul(3);
    let need = out.saturating_add(if decoded < 3 { rgb } else { 0 });
    budget.bytes(&format!("{w}x{h} {depth}-bit {name}"), need.max(rgb))?;
    // the chunks: the compressed image data, and the compressed metadata
    let row = 1 + (w * raw * depth as u64).div_ceil(8);
    let filtered = h.saturating_mul(row);
    let mut idat = 0u64;
    let mut text = 0u64;
    let mut at = 8u64;
    let mut chunk = [0u8; 8];
    for _ in 0..100_000 {
        if at + 8 > len || read_at(r, at, &mut chunk).map_err(io)? < 8 {
            break;
        }
        let n = be32(&chunk) as u64;
        if at + 12 + n > len && (idat == 0 || &chunk[4..8] == b"IDAT") {
            // the decoder reads every chunk up to the image data
            let kind = String::from_utf8_lossy(&chunk[4..8]).into_owned();
            return Err(budget.bad(format!(
                "truncated PNG: the {kind} chunk at byte {at} says it holds {n} bytes, the file ends at byte {len}"
            )));
        }
        match &chunk[4..8] {
            b"IDAT" => idat += n.min(len - at),
            b"IEND" => break,
            b"tEXt" => text += n.min(len - at),
            kind @ (b"iCCP" | b"zTXt" | b"iTXt") => {
                // PIL refuses a compressed text or ICC chunk that inflates past 1 MiB, and more than 64 MiB
                // of text in all; the png decoder would inflate the ICC profile up to the memory limit
                let inflated = inflated_size(r, at + 8, n.min(len - at - 8), kind).map_err(io)?;
                if inflated > PNG_MAX_TEXT_CHUNK {
                    let what = String::from_utf8_lossy(kind);
                    return Err(budget.bad(format!(
                        "the {what} chunk at byte {at} inflates to more than {PNG_MAX_TEXT_CHUNK} bytes (a \
                         decompression bomb; PIL refuses it too)"
                    )));
                }
                if kind != b"iCCP" {
                    text += inflated;
                }
            }
            _ => {}
        }
        if text > 64 * PNG_MAX_TEXT_CHUNK {
            return Err(
                budget.bad(format!("more than {} bytes of text chunks (PIL refuses it too)", 64 * PNG_MAX_TEXT_CHUNK))
            );
        }
        at += 12 + n;
    }
    // deflate inflates at most 1032:1 (a 258-byte match in 2 bits): fewer compressed bytes cannot hold
    // the rows, the file is cut or its header is wrong - refused before the decoder allocates the image
    if idat.saturating_mul(1032) + 1024 < filtered {
        return Err(budget.bad(format!(
            "{w}x{h} {depth}-bit {name} needs {filtered} bytes of pixel data, more than its {idat} compressed \
             bytes can hold (deflate packs at most 1032:1): the file is cut or its header is wrong"
        )));
    }
    Ok(())
}

/// PIL's limit on an inflated text or ICC chunk (`ImageFile.SAFEBLOCK`).
const PNG_MAX_TEXT_CHUNK: u64 = 1 << 20;

/// Bytes the zlib stream of a PNG iCCP, zTXt or iTXt chunk inflates to, up to PNG_MAX_TEXT_CHUNK + 1; 0 when
/// it is not compressed or not valid zlib (PIL ignores those).
fn inflated_size<R: Read + Seek>(r: &mut R, at: u64, n: u64, kind: &[u8]) -> std::io::Result<u64> {
    r.seek(SeekFrom::Start(at))?;
    let mut c = std::io::BufReader::with_capacity(4096, r.take(n));
    let skip_string = |c: &mut std::io::BufReader<std::io::Take<&mut R>>| -> std::io::Result<bool> {
        let mut s = vec![];
        Ok(c.by_ref().take(256).read_until(0, &mut s)? > 0 && s.last() == Some(&0))
    };
    if !skip_string(&mut c)? {
        return Ok(0);
    }
    let mut flags = [0u8; 2];
    let compressed = match kind {
        b"iTXt" => {
            if read_up_to(&mut c, &mut flags)? < 2 || flags[0] == 0 || !skip_string(&mut c)? || !skip_string(&mut c)? {
                return Ok(0);
            }
            true
        }
        _ => read_up_to(&mut c, &mut flags[..1])? == 1,
    };
    if !compressed {
        return Ok(0);
    }
    let mut z = flate2::read::ZlibDecoder::new(c).take(PNG_MAX_TEXT_CHUNK + 1);
    Ok(std::io::copy(&mut z, &mut std::io::sink()).unwrap_or(0))
}

/// BMP: the size, and uncompressed pixel data present in full.
fn probe_bmp<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
    let io = |e| Error::io(budget.path, e);
    let mut hd = [0u8; 34];
    if read_at(r, 0, &mut hd).map_err(io)? < 34 {
        return Ok(());
    }
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le16 = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let offset = le32(&hd[10..]) as u64;
    let (w, h, bpp, compression) = match le32(&hd[14..]) {
        12 => (le16(&hd[18..]) as u64, le16(&hd[20..]) as u64, le16(&hd[24..]), 0),
        n if n >= 40 => (
            (le32(&hd[18..]) as i32).unsigned_abs() as u64,
            (le32(&hd[22..]) as i32).unsigned_abs() as u64,
            le16(&hd[28..]),
            le32(&hd[30..]),
        ),
        _ => return Ok(()),
    };
    budget.pixels(w, h)?;
    if matches!(compression, 1 | 2) && !rle_fills(r, offset, w, h, compression == 2).map_err(io)? {
        // PIL reads RLE data to the end of the image and refuses less ("not enough image data")
        return Err(budget.bad(format!("the RLE pixel data ends before the {w}x{h} image is filled")));
    }
    if matches!(compression, 0 | 3) && matches!(bpp, 1 | 4 | 8 | 16 | 24 | 32) {
        let stride = (w * bpp as u64).div_ceil(32) * 4;
        let need = offset.saturating_add(stride.saturating_mul(h));
        if len < need {
            return Err(budget.bad(format!(
                "truncated BMP: {w}x{h} at {bpp} bits per pixel needs {need} bytes, the file has {len}"
            )));
        }
    }
    Ok(())
}

/// Whether RLE4/RLE8 data fills a w×h image, counted as PIL's BmpRleDecoder reads it.
fn rle_fills<R: Read + Seek>(r: &mut R, offset: u64, w: u64, h: u64, rle4: bool) -> std::io::Result<bool> {
    r.seek(SeekFrom::Start(offset))?;
    let mut pos = offset;
    let read = |r: &mut R, buf: &mut [u8], pos: &mut u64| -> std::io::Result<u64> {
        let k = read_up_to(r, buf)? as u64;
        *pos += k;
        Ok(k)
    };
    let dest = w * h;
    let (mut n, mut x) = (0u64, 0u64);
    let mut pair = [0u8; 2];
    let mut skip = [0u8; 256];
    while n < dest {
        if read(r, &mut pair, &mut pos)? < 2 {
            break;
        }
        let (count, code) = (pair[0] as u64, pair[1]);
        if count > 0 {
            // a run, cut at the end of the row
            let k = count.min(w.saturating_sub(x));
            n += k;
            x += k;
            continue;
        }
        match code {
            0 => {
                n = n.div_ceil(w) * w; // end of line
                x = 0;
            }
            1 => break, // end of bitmap
            2 => {
                if read(r, &mut pair, &mut pos)? < 2 {
                    break;
                }
                n += (dest - n).min(pair[0] as u64 + pair[1] as u64 * w);
                x = n % w;
            }
            k => {
                // k literal pixels, padded to a 16-bit boundary
                let data = (dest - n).min(k as u64);
                let bytes = if rle4 { data.div_ceil(2) } else { data };
                let got = read(r, &mut skip[..bytes as usize], &mut pos)?;
                if got < bytes {
                    n += if rle4 { (2 * got).min(data) } else { got };
                    break;
                }
                n += data;
                if n == dest {
                    break;
                }
                x += k as u64;
                if !pos.is_multiple_of(2) {
                    read(r, &mut skip[..1], &mut pos)?;
                }
            }
        }
    }
    Ok(n >= dest)
}

/// WebP: every chunk inside the file, the bitstream's size the canvas's, and the decoder's working
/// buffers (returned): the lossy planes, the lossless RGBA, an animation's canvas and frame.
fn probe_webp<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<u64> {
    let io = |e| Error::io(budget.path, e);
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let le24 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], 0]);
    let mut hd = [0u8; 30];
    let got = read_at(r, 0, &mut hd).map_err(io)?;
    if got < 30 || &hd[0..4] != b"RIFF" || &hd[8..12] != b"WEBP" {
        return Ok(0);
    }
    let truncated = |what: &str, at: u64, n: u64| {
        budget.bad(format!("truncated WebP: the {what} chunk at byte {at} is {n} bytes long, the file ends at {len}"))
    };
    // lossy planes: Y, U, V in whole macroblocks
    let vp8_planes = |w: u64, h: u64| w.div_ceil(16) * h.div_ceil(16) * 384 + 64 * w;
    // (width, height) of a VP8 bitstream starting at `at`
    let vp8_size = |r: &mut R, at: u64| -> Result<Option<(u64, u64)>> {
        let mut b = [0u8; 10];
        if read_at(r, at, &mut b).map_err(io)? < 10 || b[3..6] != [0x9d, 0x01, 0x2a] {
            return Ok(None);
        }
        let w = u16::from_le_bytes([b[6], b[7]]) & 0x3FFF;
        let h = u16::from_le_bytes([b[8], b[9]]) & 0x3FFF;
        Ok(Some((w as u64, h as u64)))
    };
    let first = &hd[12..16];
    let first_len = le32(&hd[16..]) as u64;
    match first {
        b"VP8 " => {
            let Some((w, h)) = vp8_size(r, 20)? else { return Ok(0) };
            budget.pixels(w, h)?;
            vp8_partitions(r, 20, first_len.min(len - 20), budget)?;
            Ok(vp8_planes(w, h))
        }
        b"VP8L" => {
            let bits = le32(&hd[21..]);
            let (w, h) = ((bits & 0x3FFF) as u64 + 1, ((bits >> 14) & 0x3FFF) as u64 + 1);
            budget.pixels(w, h)?;
            let alpha = (bits >> 28) & 1 == 1;
            Ok(if alpha { w * h } else { 5 * w * h })
        }
        b"VP8X" => {
            let (cw, ch) = (le24(&hd[24..]) as u64 + 1, le24(&hd[27..]) as u64 + 1);
            budget.pixels(cw, ch)?;
            let animated = hd[20] & 0x02 != 0;
            let mut at = 20 + first_len + (first_len & 1);
            let mut image: Option<(&'static str, u64, u64)> = None; // first VP8/VP8L/ANMF: (kind, start, len)
            let mut alpha = false;
            let mut hdr = [0u8; 8];
            let riff_end = len.min(8 + le32(&hd[4..]) as u64);
            while at + 8 <= riff_end {
                if read_at(r, at, &mut hdr).map_err(io)? < 8 {
                    break;
                }
                let n = le32(&hdr[4..]) as u64;
                let kind = String::from_utf8_lossy(&hdr[..4]).into_owned();
                if at + 8 + n > len {
                    return Err(truncated(&kind, at, n));
                }
                match &hdr[..4] {
                    b"VP8 " if image.is_none() => image = Some(("VP8", at + 8, n)),
                    b"VP8L" if image.is_none() => image = Some(("VP8L", at + 8, n)),
                    b"ANMF" if image.is_none() => image = Some(("ANMF", at + 8, n)),
                    b"ALPH" => alpha = true,
                    _ => {}
                }
                at += 8 + n + (n & 1);
            }
            let canvas = cw * ch * 4;
            match image {
                Some(("VP8", start, n)) if !animated => {
                    vp8_partitions(r, start, n, budget)?;
                    if let Some((w, h)) = vp8_size(r, start)? {
                        if (w, h) != (cw, ch) {
                            return Err(budget.bad(format!(
                                "the VP8 bitstream is {w}x{h}, the canvas {cw}x{ch}: the file is inconsistent"
                            )));
                        }
                    }
                    Ok(vp8_planes(cw, ch) + if alpha { cw * ch } else { 0 })
                }
                Some(("VP8L", _, _)) if !animated => Ok(5 * cw * ch),
                Some(("ANMF", start, n)) if animated => {
                    let mut f = [0u8; 24];
                    if n < 24 || read_at(r, start, &mut f).map_err(io)? < 24 {
                        return Ok(canvas);
                    }
                    let (fw, fh) = (le24(&f[6..]) as u64 + 1, le24(&f[9..]) as u64 + 1);
                    let frame = fw * fh * 4;
                    // the frame's bitstream: VP8, VP8L, or ALPH then VP8
                    let mut sub = start + 16;
                    let mut planes = 0;
                    for _ in 0..2 {
                        let mut s = [0u8; 8];
                        if sub + 8 > start + n || read_at(r, sub, &mut s).map_err(io)? < 8 {
                            break;
                        }
                        let sn = le32(&s[4..]) as u64;
                        if &s[..4] == b"VP8 " {
                            vp8_partitions(r, sub + 8, sn.min(len.saturating_sub(sub + 8)), budget)?;
                            if let Some((w, h)) = vp8_size(r, sub + 8)? {
                                if (w, h) != (fw, fh) {
                                    return Err(budget.bad(format!(
                                        "the first frame's VP8 bitstream is {w}x{h}, the frame {fw}x{fh}: the file \
                                         is inconsistent"
                                    )));
                                }
                            }
                            planes = vp8_planes(fw, fh);
                            break;
                        }
                        if &s[..4] != b"ALPH" {
                            break;
                        }
                        sub += 8 + sn + (sn & 1);
                    }
                    Ok(canvas + frame + planes + fw * fh)
                }
                _ => Ok(canvas),
            }
        }
        _ => Ok(0),
    }
}

/// A VP8 bitstream of `n` bytes at `at`: its data partitions inside it. The WebP decoder allocates each
/// partition at the size the stream gives before it reads it (up to 16 MB each); the count is in the frame
/// header, behind the boolean entropy coder (RFC 6386, 9.2 to 9.5).
fn vp8_partitions<R: Read + Seek>(r: &mut R, at: u64, n: u64, budget: &Budget) -> Result<()> {
    let io = |e| Error::io(budget.path, e);
    let mut tag = [0u8; 10];
    if n < 10 || read_at(r, at, &mut tag).map_err(io)? < 10 || tag[0] & 1 != 0 {
        return Ok(()); // not a key frame: the decoder refuses it
    }
    let first = (u32::from_le_bytes([tag[0], tag[1], tag[2], 0]) >> 5) as u64;
    if 10 + first > n {
        return Ok(()); // the decoder fails reading the first partition, at most 512 KB
    }
    let mut head = [0u8; 64];
    let got = read_at(r, at + 10, &mut head[..first.min(64) as usize]).map_err(io)?;
    let mut d = Vp8Bool::new(&head[..got]);
    d.literal(2); // colour space, clamping
    if d.flag() {
        // segmentation
        let update_map = d.flag();
        if d.flag() {
            d.flag();
            for _ in 0..4 {
                d.optional_signed(7);
            }
            for _ in 0..4 {
                d.optional_signed(6);
            }
        }
        if update_map {
            for _ in 0..3 {
                if d.flag() {
                    d.literal(8);
                }
            }
        }
    }
    d.literal(1 + 6 + 3); // filter type, level, sharpness
    if d.flag() && d.flag() {
        for _ in 0..8 {
            d.optional_signed(6);
        }
    }
    let partitions = 1u64 << d.literal(2);
    let rest = n - 10 - first;
    let mut sizes = vec![0u8; 3 * (partitions as usize - 1)];
    if read_at(r, at + 10 + first, &mut sizes).map_err(io)? < sizes.len() {
        return Ok(()); // the decoder fails reading the sizes
    }
    let total: u64 = sizes.chunks(3).map(|s| u32::from_le_bytes([s[0], s[1], s[2], 0]) as u64).sum();
    if sizes.len() as u64 + total > rest {
        return Err(budget.bad(format!(
            "corrupt WebP: the VP8 data partitions add up to {total} bytes, the bitstream holds {rest}"
        )));
    }
    Ok(())
}

/// VP8's boolean entropy decoder (RFC 6386, 7.3), reading zeros past the end of its data.
struct Vp8Bool<'a> {
    data: &'a [u8],
    pos: usize,
    value: u32,
    range: u32,
    bits: u32,
}

impl<'a> Vp8Bool<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut d = Vp8Bool { data, pos: 0, value: 0, range: 255, bits: 0 };
        d.value = (d.byte() as u32) << 8 | d.byte() as u32;
        d
    }
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn bool(&mut self, prob: u32) -> bool {
        let split = 1 + (((self.range - 1) * prob) >> 8);
        let big = split << 8;
        let bit = self.value >= big;
        if bit {
            self.range -= split;
            self.value -= big;
        } else {
            self.range = split;
        }
        while self.range < 128 {
            self.value <<= 1;
            self.range <<= 1;
            self.bits += 1;
            if self.bits == 8 {
                self.bits = 0;
                self.value |= self.byte() as u32;
            }
        }
        bit
    }
    fn flag(&mut self) -> bool {
        self.bool(128)
    }
    fn literal(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| v << 1 | self.flag() as u32)
    }
    fn optional_signed(&mut self, n: u32) {
        if self.flag() {
            self.literal(n + 1);
        }
    }
}

/// TIFF: the first IFD's entries. The TIFF decoder reads a tag's values into a list of 32-byte values
/// sized by the entry's count before it reads them, with its own limit of 256 MB, before any limit of ours
/// applies.
fn probe_tiff<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
    let io = |e| Error::io(budget.path, e);
    let mut hd = [0u8; 16];
    if read_at(r, 0, &mut hd).map_err(io)? < 16 {
        return Ok(());
    }
    let le = &hd[..2] == b"II";
    let u16_ = |b: &[u8]| if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) };
    let u32_ = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let u64_ = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let big = match u16_(&hd[2..]) {
        42 => false,
        43 => true,
        _ => return Ok(()),
    };
    let ifd = if big { u64_(&hd[8..]) } else { u32_(&hd[4..]) as u64 };
    let mut count = [0u8; 8];
    if read_at(r, ifd, &mut count[..if big { 8 } else { 2 }]).map_err(io)? < if big { 8 } else { 2 } {
        return Ok(());
    }
    let entries = if big { u64_(&count) } else { u16_(&count) as u64 };
    let size = if big { 20 } else { 12 };
    let first = ifd.saturating_add(if big { 8 } else { 2 });
    if first.saturating_add(entries.saturating_mul(size)) > len {
        return Err(budget.bad(format!("truncated TIFF: {entries} directory entries at byte {ifd}, past the end")));
    }
    let mut e = [0u8; 20];
    for k in 0..entries.min(4096) {
        read_at(r, first + k * size, &mut e[..size as usize]).map_err(io)?;
        let (tag, values) = (u16_(&e), if big { u64_(&e[4..]) } else { u32_(&e[4..]) as u64 });
        let need = values.saturating_mul(32);
        if need > budget.limits.max_decoded_bytes {
            return Err(budget.over(&format!("the TIFF tag {tag} of {values} values"), need));
        }
    }
    Ok(())
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

/// A JPEG's structure checked as libjpeg (PIL's decoder) reads it, to refuse what PIL refuses - zune-jpeg,
/// the decoder here, goes on after most errors and fills the picture with grey - and to hand zune-jpeg
/// the stream in a form it reads as libjpeg does (junk and ignored segments left out, the standard Huffman
/// tables added where libjpeg supplies them, sequential scan parameters and an unknown Adobe transform set
/// to what libjpeg takes them for).
///
/// The rule: what PIL (Pillow 13, libjpeg-turbo) refuses to decode is an error here; what it opens and
/// loads, with or without warnings, decodes. Measured on crafted files (scripts/make_hostile_images.py
/// records each file's verdict in tests/fixtures/hostile/img_manifest.json), with libjpeg's messages read
/// through a small djpeg-like program:
/// - corrupt entropy-coded data decodes (garbage, and warnings PIL does not show), unless the corruption
///   makes a marker libjpeg cannot take. Fatal ("broken data stream"): SOI, SOF, a second SOS in a
///   single-scan image, a DHT/DQT/DRI/DAC that does not parse, an unknown marker. Not fatal: RSTn, EOI,
///   APPn, COM, DNL, TEM; and with restart intervals, any marker below SOF0 met before the last interval
///   (libjpeg resynchronises at the next restart marker);
/// - a file without its end-of-image marker is refused ("image file is truncated"); a truncated scan
///   followed by one decodes, the rest grey; past the scan of a single-scan image libjpeg has every pixel,
///   so a segment there running past the end of the file is not an error;
/// - in the headers: unknown markers (TEM included), a second SOI or SOF, lossless and hierarchical
///   processes, precision other than 8 bits, 2 or more than 4 components, sampling factors outside 1-4 or
///   not dividing the largest, more than 10 blocks in an MCU, a Huffman table that overflows its code space
///   or is used undefined (except tables 0 and 1 of a sequential image: libjpeg supplies the standard ones,
///   as Motion-JPEG expects), a DC table with symbols over 15, a quantisation table cut short or used
///   undefined, bad progression parameters, a scan naming a component twice or one not in the frame: all
///   refused; junk bytes between segments, APPn/COM segments shorter than their length field, DNL, garbage
///   spectral parameters in a sequential scan, an unknown Adobe transform: accepted.
///
/// On 4000 random corruptions of valid JPEGs (`--corpus`, and the ignored test
/// `jpeg_verdicts_agree_with_pil_on_a_corpus`), every one of the 1171 that PIL refuses is refused here, and
/// 2541 of the 2829 it loads decode. The 288 others are the deliberate and known differences:
/// - a scan too short to hold its frame (every 8x8 block takes at least 2 bits in a sequential scan, 1 in a
///   progressive DC scan) is refused (263): the frame header lies about the size - the 35 KB photo
///   patched to say 9000x9000, which PIL decodes into 81 megapixels of grey - or the data was cut and
///   patched with an end marker. A flat picture compresses to about these 2 bits a block, so no real file is
///   refused for it;
/// - a file without its end-of-image marker is refused even where libjpeg had read all it needed (11);
/// - zune-jpeg refuses a progressive file whose first scan holds more data than its frame needs (14),
///   where libjpeg skips the excess;
/// - arithmetic coding, which zune-jpeg does not decode, is refused.
mod jpeg {
    use super::Budget;
    use crate::error::Result;

    #[derive(Clone, Copy)]
    pub struct Component {
        pub id: u8,
        pub h: u8,
        pub v: u8,
        pub tq: u8,
    }

    pub struct Frame {
        pub width: u16,
        pub height: u16,
        pub progressive: bool,
        pub components: Vec<Component>,
    }

    pub struct Plan {
        pub frame: Frame,
        /// the checked stream, where it differs from the file's first `plain_len` bytes
        pub stream: Option<Vec<u8>>,
        pub plain_len: usize,
        /// the decoder's working bytes beside its output: coefficient planes when it buffers the image
        pub working: u64,
    }

    impl Plan {
        pub fn describe(&self) -> String {
            let n = self.frame.components.len();
            let kind = if self.frame.progressive { ", progressive" } else { "" };
            format!("{n} component{}{kind}", if n == 1 { "" } else { "s" })
        }
    }

    /// Standard Huffman tables (ITU T.81 K.3): (class/index, counts, symbols).
    const STD_TABLES: [(u8, [u8; 16], &[u8]); 4] = [
        (0x00, [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (0x01, [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (0x10, [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d], &AC_LUMA),
        (0x11, [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77], &AC_CHROMA),
    ];
    const AC_LUMA: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
        0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72,
        0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37,
        0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3,
        0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
        0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
        0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];
    const AC_CHROMA: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
        0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1,
        0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36,
        0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
        0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A,
        0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
        0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
        0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];

    /// A defined Huffman table: None if usable, else why libjpeg refuses it when a scan uses it.
    type Table = Option<&'static str>;

    fn table_problem(dc: bool, counts: &[u8], symbols: &[u8]) -> Table {
        // libjpeg's jpeg_make_d_derived_tbl: the codes of each length must leave room (no all-ones code)
        let mut code: u32 = 0;
        for (i, &n) in counts.iter().enumerate() {
            code += n as u32;
            if n > 0 && code >= 1 << (i + 1) {
                return Some("its codes overflow the code space");
            }
            code <<= 1;
        }
        if dc && symbols.iter().any(|&s| s > 15) {
            return Some("a DC table with a symbol over 15");
        }
        None
    }

    /// Piece of the stream handed to the decoder.
    enum Piece {
        Keep(usize, usize),
        StdTables(u8),
    }

    struct Scan {
        blocks: u64,
        bits_per_block: u64,
        bytes: u64,
        at: usize,
    }

    pub fn check(b: &[u8], budget: &Budget) -> Result<Plan> {
        let bad = |msg: String| budget.bad(format!("corrupt JPEG: {msg}"));
        if b.len() < 3 || b[..3] != [0xFF, 0xD8, 0xFF] {
            return Err(bad("no marker after the start-of-image marker (PIL: cannot identify)".into()));
        }
        let truncated = || budget.bad(format!("truncated JPEG ({} bytes, no end-of-image marker)", b.len()));
        let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        let mut pieces: Vec<Piece> = vec![Piece::Keep(0, 2)];
        let keep = |pieces: &mut Vec<Piece>, from: usize, to: usize| {
            if let Some(Piece::Keep(_, end)) = pieces.last_mut() {
                if *end == from {
                    *end = to;
                    return;
                }
            }
            pieces.push(Piece::Keep(from, to));
        };
        let mut frame: Option<Frame> = None;
        let mut dht: [[Option<Table>; 4]; 2] = [[None; 4]; 2];
        let mut dqt = [false; 4];
        let mut scans: Vec<Scan> = vec![];
        let mut multi_scan = false;
        // set once a single-scan image's scan has ended: what follows is checked, not decoded
        let mut cut: Option<usize> = None;
        let mut restart_interval = 0;
        // bytes changed in the stream handed on, at their place in the file
        let mut patches: Vec<(usize, u8)> = vec![];
        let mut adobe_transform: Option<usize> = None;
        let mut pos = 2;
        let end;
        loop {
            // the next marker: libjpeg skips junk bytes (with a warning) and 0xFF fill bytes
            // (past the scan of a single-scan image libjpeg has every pixel: PIL does not mind the end)
            let ff = b[pos..].iter().position(|&x| x == 0xFF).map(|i| pos + i);
            let mut p = ff.unwrap_or(b.len());
            while p < b.len() && b[p] == 0xFF {
                p += 1;
            }
            if p >= b.len() {
                if cut.is_some() {
                    end = b.len();
                    break;
                }
                return Err(truncated());
            }
            let m = b[p];
            let at = p - 1; // the marker's 0xFF
            pos = p + 1;
            if m == 0 {
                continue; // FF 00 outside a scan: junk
            }
            let before_scan = scans.is_empty();
            // past the scan of a single-scan image, a segment libjpeg skips (APPn, COM, DNL) that runs past
            // the end of the file is where it stops reading (PIL does not mind)
            let skipped = matches!(m, 0xE0..=0xEF | 0xFE | 0xDC);
            if cut.is_some() && skipped && (pos + 2 > b.len() || pos + be16(pos) > b.len()) {
                end = b.len();
                break;
            }
            // a segment's extent, its length field included
            let segment = |min: usize| -> Result<(usize, usize)> {
                if pos + 2 > b.len() {
                    return Err(truncated());
                }
                let n = be16(pos);
                if n < min {
                    return Err(bad(format!("marker FF{m:02X} at byte {at} has length {n}, less than {min}")));
                }
                if pos + n > b.len() {
                    return Err(truncated());
                }
                Ok((pos, pos + n))
            };
            match m {
                0xD8 => return Err(bad(format!("a second start-of-image marker at byte {at}"))),
                0xD9 => {
                    if before_scan {
                        return Err(bad("no image data: end-of-image before any scan".into()));
                    }
                    end = at;
                    break;
                }
                0xD0..=0xD7 => {} // a restart marker outside a scan: ignored
                0x01 if before_scan => {
                    return Err(bad(format!("marker FF01 at byte {at} (PIL: no marker found)")));
                }
                0x01 => {}
                0xC0..=0xC2 => {
                    if frame.is_some() {
                        return Err(bad(format!("a second frame header (SOF) at byte {at}")));
                    }
                    let (s, e) = segment(8)?;
                    let f = sof(b, m, s, e).map_err(bad)?;
                    frame = Some(f);
                    if cut.is_none() {
                        keep(&mut pieces, at, e);
                    }
                    pos = e;
                }
                0xC9 | 0xCA => {
                    if frame.is_some() {
                        return Err(bad(format!("a second frame header (SOF) at byte {at}")));
                    }
                    return Err(budget.bad(format!(
                        "an arithmetic-coded JPEG (SOF{}), which the decoder does not support",
                        m - 0xC0
                    )));
                }
                0xC3 | 0xC5..=0xC8 | 0xCB | 0xCD..=0xCF => {
                    return Err(bad(format!("an unsupported JPEG process (lossless or hierarchical, SOF{})", m - 0xC0)))
                }
                0xC4 => {
                    let (s, e) = segment(2)?;
                    let mut i = s + 2;
                    while e - i > 16 {
                        let (class, index) = (b[i] >> 4, b[i] & 0x0F);
                        if class > 1 || index > 3 {
                            return Err(bad(format!("Huffman table class/index {:#04x} at byte {i}", b[i])));
                        }
                        let counts = &b[i + 1..i + 17];
                        let count: usize = counts.iter().map(|&c| c as usize).sum();
                        if count > 256 || count > e - i - 17 {
                            return Err(bad(format!("a Huffman table of {count} codes at byte {i}")));
                        }
                        let symbols = &b[i + 17..i + 17 + count];
                        dht[class as usize][index as usize] = Some(table_problem(class == 0, counts, symbols));
                        i += 17 + count;
                    }
                    if i != e {
                        return Err(bad(format!("Huffman table segment at byte {at}: {} bytes left over", e - i)));
                    }
                    if cut.is_none() {
                        keep(&mut pieces, at, e);
                    }
                    pos = e;
                }
                0xDB => {
                    let (s, e) = segment(2)?;
                    let mut i = s + 2;
                    while i < e {
                        let (precision, index) = (b[i] >> 4, b[i] & 0x0F);
                        if index > 3 {
                            return Err(bad(format!("quantisation table index {index} at byte {i}")));
                        }
                        let n = 1 + 64 * if precision == 0 { 1 } else { 2 };
                        if e - i < n {
                            return Err(bad(format!("a quantisation table cut short at byte {i}")));
                        }
                        dqt[index as usize] = true;
                        i += n;
                    }
                    if cut.is_none() {
                        keep(&mut pieces, at, e);
                    }
                    pos = e;
                }
                0xDD => {
                    let (s, e) = segment(2)?;
                    if e - s != 4 {
                        return Err(bad(format!("restart interval segment of length {} at byte {at}", e - s)));
                    }
                    restart_interval = be16(s + 2);
                    if cut.is_none() {
                        keep(&mut pieces, at, e);
                    }
                    pos = e;
                }
                0xE0..=0xEF | 0xFE | 0xDC | 0xCC => {
                    // APPn, COM, DNL (ignored by libjpeg), DAC (arithmetic conditioning, checked): a length
                    // under 2 holds nothing, what follows is junk to skip
                    if pos + 2 > b.len() {
                        return Err(truncated());
                    }
                    let n = be16(pos);
                    if n < 2 {
                        pos += 2;
                        continue;
                    }
                    if m == 0xCC {
                        // libjpeg checks each (table, value) pair as it reads it
                        let pairs = &b[pos + 2..(pos + n).min(b.len())];
                        let bad_value = pairs.chunks(2).any(|p| match *p {
                            [t, v] if t < 16 => v & 0x0F > v >> 4,
                            [t, v] if t < 32 => !(1..=63).contains(&v),
                            [_, _] => true,
                            _ => pos + n <= b.len(),
                        });
                        if bad_value {
                            return Err(bad(format!("arithmetic conditioning segment (DAC) at byte {at}")));
                        }
                    }
                    if pos + n > b.len() {
                        // past the scan of a single-scan image libjpeg has every pixel and skips past the
                        // end; before it, or between the scans of another, it needs the data
                        if before_scan || multi_scan {
                            return Err(truncated());
                        }
                        cut.get_or_insert(at);
                        end = at;
                        break;
                    }
                    if m == 0xEE && n >= 14 && &b[pos + 2..pos + 7] == b"Adobe" {
                        adobe_transform = Some(pos + 13);
                    }
                    // zune-jpeg refuses an Adobe segment too short to hold its fields; libjpeg ignores it
                    let short_adobe = m == 0xEE && n < 14 && b[pos + 2..pos + n].starts_with(b"Adobe");
                    if cut.is_none() && !matches!(m, 0xDC | 0xCC) && !short_adobe {
                        keep(&mut pieces, at, pos + n);
                    }
                    pos += n;
                }
                0xDA => {
                    let Some(f) = &frame else {
                        return Err(bad(format!("a scan (SOS) at byte {at} before the frame header")));
                    };
                    if !before_scan && !multi_scan {
                        return Err(bad(format!(
                            "a second scan at byte {at} in a single-scan image (libjpeg: end of image expected)"
                        )));
                    }
                    let (s, e) = segment(3)?;
                    let ns = b[s + 2] as usize;
                    if !(1..=4).contains(&ns) || e - s != 6 + 2 * ns {
                        return Err(bad(format!("scan header at byte {at}: {ns} components in {} bytes", e - s)));
                    }
                    let mut comps: Vec<(usize, u8, u8)> = vec![]; // (frame index, DC table, AC table)
                    for k in 0..ns {
                        let (id, t) = (b[s + 3 + 2 * k], b[s + 4 + 2 * k]);
                        let Some(ci) = f.components.iter().position(|c| c.id == id) else {
                            return Err(bad(format!("scan at byte {at} names component {id}, not in the frame")));
                        };
                        if comps.iter().any(|c| c.0 == ci) {
                            return Err(bad(format!("scan at byte {at} names component {id} twice")));
                        }
                        comps.push((ci, t >> 4, t & 0x0F));
                    }
                    let (ss, se, ah, al) = (b[e - 3], b[e - 2], b[e - 1] >> 4, b[e - 1] & 0x0F);
                    let dc_band = ss == 0;
                    if f.progressive {
                        let bad_progression = if dc_band { se != 0 } else { ss > se || se > 63 || ns != 1 }
                            || (ah != 0 && al + 1 != ah)
                            || al > 13;
                        if bad_progression {
                            return Err(bad(format!("bad progression Ss={ss} Se={se} Ah={ah} Al={al} at byte {at}")));
                        }
                    }
                    if !f.progressive && (ss, se, ah, al) != (0, 63, 0, 0) {
                        // libjpeg ignores them in a sequential scan (a warning), zune-jpeg refuses some
                        patches.extend([(e - 3, 0), (e - 2, 63), (e - 1, 0)]);
                    }
                    if ns > 1 {
                        let blocks: u32 =
                            comps.iter().map(|c| f.components[c.0].h as u32 * f.components[c.0].v as u32).sum();
                        if blocks > 10 {
                            return Err(bad(format!("{blocks} blocks in an MCU (at most 10) at byte {at}")));
                        }
                    }
                    // the tables this scan decodes with
                    let mut std_needed = 0u8;
                    for &(ci, td, ta) in &comps {
                        let mut uses = vec![];
                        if !f.progressive || (dc_band && ah == 0) {
                            uses.push((0usize, td));
                        }
                        if !f.progressive || !dc_band {
                            uses.push((1usize, ta));
                        }
                        for (class, t) in uses {
                            let which = if class == 0 { "DC" } else { "AC" };
                            match dht.get(class).and_then(|c| c.get(t as usize)) {
                                Some(Some(None)) => {}
                                Some(Some(Some(why))) => {
                                    return Err(bad(format!("{which} Huffman table {t}: {why}")));
                                }
                                Some(None) if t < 2 && !f.progressive => {
                                    std_needed |= 1 << (class * 2 + t as usize);
                                    dht[class][t as usize] = Some(None);
                                }
                                _ => return Err(bad(format!("{which} Huffman table {t} is used but not defined"))),
                            }
                        }
                        let tq = f.components[ci].tq;
                        if !dqt[tq as usize] {
                            return Err(bad(format!("quantisation table {tq} is used but not defined")));
                        }
                    }
                    if before_scan {
                        multi_scan = f.progressive || ns < f.components.len();
                    }
                    if std_needed != 0 && cut.is_none() {
                        pieces.push(Piece::StdTables(std_needed));
                    }
                    // the entropy-coded data: up to a marker other than RSTn (FF 00 is a stuffed FF). With
                    // restarts, libjpeg skips a marker below SOF0 met in the data to the next marker and
                    // resynchronises (a warning); without, it ends the scan (and is fatal after it)
                    if cut.is_none() {
                        keep(&mut pieces, at, e);
                    }
                    // restart intervals in this scan: a marker in the last one ends the scan
                    let mcus = if ns == 1 { blocks_of(f, comps[0].0) } else { mcus_of(f) };
                    let intervals = if restart_interval > 0 { mcus.div_ceil(restart_interval as u64) } else { 1 };
                    let mut restarts = 0;
                    let mut from = e;
                    let mut skipped = 0;
                    let mut q = e;
                    let stop = loop {
                        let Some(i) = b[q..].iter().position(|&x| x == 0xFF) else {
                            return Err(truncated());
                        };
                        let mut j = q + i + 1;
                        while j < b.len() && b[j] == 0xFF {
                            j += 1;
                        }
                        if j >= b.len() {
                            return Err(truncated());
                        }
                        if b[j] == 0 || (0xD0..=0xD7).contains(&b[j]) {
                            restarts += (b[j] != 0) as u64;
                            q = j + 1;
                            continue;
                        }
                        if restart_interval > 0 && b[j] < 0xC0 && restarts + 1 < intervals {
                            let junk = q + i;
                            let mut k = j + 1;
                            let next = loop {
                                let Some(i) = b[k..].iter().position(|&x| x == 0xFF) else {
                                    return Err(truncated());
                                };
                                let mut l = k + i + 1;
                                while l < b.len() && b[l] == 0xFF {
                                    l += 1;
                                }
                                if l >= b.len() {
                                    return Err(truncated());
                                }
                                if b[l] != 0 {
                                    break l - 1;
                                }
                                k = l + 1;
                            };
                            if cut.is_none() {
                                keep(&mut pieces, from, junk);
                            }
                            skipped += next - junk;
                            from = next;
                            q = next;
                            continue;
                        }
                        break q + i;
                    };
                    let blocks: u64 = comps.iter().map(|c| blocks_of(f, c.0)).sum();
                    let bits_per_block = if !f.progressive {
                        2
                    } else if dc_band {
                        1
                    } else {
                        0
                    };
                    scans.push(Scan { blocks, bits_per_block, bytes: (stop - e - skipped) as u64, at });
                    if cut.is_none() {
                        keep(&mut pieces, from, stop);
                        if !multi_scan {
                            cut = Some(stop);
                        }
                    }
                    pos = stop;
                }
                _ => return Err(bad(format!("unknown marker FF{m:02X} at byte {at}"))),
            }
        }
        let Some(frame) = frame else {
            return Err(bad("no frame header".into()));
        };
        for (k, s) in scans.iter().enumerate() {
            let need = (s.blocks * s.bits_per_block).div_ceil(8);
            if s.bytes < need {
                return Err(bad(format!(
                    "scan {} (at byte {}) holds {} bytes, too few for the {}x{} frame its header declares: its {} \
                     blocks take at least {need} (the header is wrong, or the data was cut)",
                    k + 1,
                    s.at,
                    s.bytes,
                    frame.width,
                    frame.height,
                    s.blocks
                )));
            }
        }
        // the stream the decoder gets: the pieces kept, then the end-of-image marker - the file itself
        // where that is what it holds
        let stop = cut.unwrap_or(end);
        if let Some(i) = adobe_transform {
            // libjpeg takes an unknown Adobe colour transform for YCbCr (YCCK with 4 components), with a
            // warning; zune-jpeg refuses it
            if b[i] > 2 {
                patches.push((i, if frame.components.len() == 4 { 2 } else { 1 }));
            }
        }
        let plain = patches.is_empty()
            && matches!(pieces[..], [Piece::Keep(0, e)] if e == stop)
            && b[stop..].starts_with(&[0xFF, 0xD9]);
        let stream = if plain {
            None
        } else {
            let mut s = Vec::new();
            for p in &pieces {
                match *p {
                    Piece::Keep(from, to) => {
                        let at = s.len();
                        s.extend_from_slice(&b[from..to]);
                        for &(i, v) in &patches {
                            if (from..to).contains(&i) {
                                s[at + i - from] = v;
                            }
                        }
                    }
                    Piece::StdTables(which) => {
                        let tables: Vec<_> =
                            STD_TABLES.iter().enumerate().filter(|(k, _)| which & (1 << k) != 0).collect();
                        let n: usize = tables.iter().map(|(_, t)| 17 + t.2.len()).sum();
                        s.extend_from_slice(&[0xFF, 0xC4]);
                        s.extend_from_slice(&((n + 2) as u16).to_be_bytes());
                        for (_, (tc, counts, symbols)) in tables {
                            s.push(*tc);
                            s.extend_from_slice(counts);
                            s.extend_from_slice(symbols);
                        }
                    }
                }
            }
            s.extend_from_slice(&[0xFF, 0xD9]);
            Some(s)
        };
        let working = working_bytes(&frame, multi_scan);
        Ok(Plan { frame, stream, plain_len: stop + 2, working })
    }

    /// Order of the std tables bit: DC0, DC1, AC0, AC1 (class * 2 + index).
    fn sof(b: &[u8], m: u8, s: usize, e: usize) -> std::result::Result<Frame, String> {
        let (precision, height, width, n) = (
            b[s + 2],
            u16::from_be_bytes([b[s + 3], b[s + 4]]),
            u16::from_be_bytes([b[s + 5], b[s + 6]]),
            b[s + 7] as usize,
        );
        if precision != 8 {
            return Err(format!("{precision}-bit samples (PIL reads only 8)"));
        }
        if width == 0 || height == 0 {
            return Err(format!("the frame is {width}x{height}"));
        }
        if width > 65500 || height > 65500 {
            return Err(format!("the frame is {width}x{height}, over libjpeg's 65500"));
        }
        if !matches!(n, 1 | 3 | 4) {
            return Err(format!("{n} components (PIL reads 1, 3 or 4)"));
        }
        if e - s != 8 + 3 * n {
            return Err(format!("frame header of {} bytes for {n} components", e - s));
        }
        let mut components = vec![];
        for k in 0..n {
            let c = &b[s + 8 + 3 * k..s + 11 + 3 * k];
            let (h, v) = (c[1] >> 4, c[1] & 0x0F);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(format!("sampling factors {h}x{v}"));
            }
            if c[2] > 3 {
                return Err(format!("quantisation table {} for component {}", c[2], c[0]));
            }
            components.push(Component { id: c[0], h, v, tq: c[2] });
        }
        let hmax = components.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = components.iter().map(|c| c.v).max().unwrap_or(1);
        if components.iter().any(|c| hmax % c.h != 0 || vmax % c.v != 0) {
            return Err("sampling factors that do not divide the largest (libjpeg: not implemented)".into());
        }
        Ok(Frame { width, height, progressive: m == 0xC2, components })
    }

    /// 8x8 blocks of a component.
    fn blocks_of(f: &Frame, ci: usize) -> u64 {
        let hmax = f.components.iter().map(|c| c.h).max().unwrap_or(1) as u64;
        let vmax = f.components.iter().map(|c| c.v).max().unwrap_or(1) as u64;
        let c = f.components[ci];
        let w = (f.width as u64 * c.h as u64).div_ceil(hmax);
        let h = (f.height as u64 * c.v as u64).div_ceil(vmax);
        w.div_ceil(8) * h.div_ceil(8)
    }

    /// MCUs of an interleaved scan.
    fn mcus_of(f: &Frame) -> u64 {
        let hmax = f.components.iter().map(|c| c.h).max().unwrap_or(1) as u64;
        let vmax = f.components.iter().map(|c| c.v).max().unwrap_or(1) as u64;
        (f.width as u64).div_ceil(8 * hmax) * (f.height as u64).div_ceil(8 * vmax)
    }

    /// zune-jpeg's buffers beside the output: when it must hold the whole image before the colour
    /// conversion (progressive, or scans of single components), 16-bit coefficients of every component in
    /// whole MCUs; and a few rows of MCUs.
    fn working_bytes(f: &Frame, multi_scan: bool) -> u64 {
        let hmax = f.components.iter().map(|c| c.h).max().unwrap_or(1) as u64;
        let vmax = f.components.iter().map(|c| c.v).max().unwrap_or(1) as u64;
        let mcu_x = (f.width as u64).div_ceil(8 * hmax);
        let mcu_y = (f.height as u64).div_ceil(8 * vmax);
        let n = f.components.len() as u64;
        let rows = 48 * mcu_x * 8 * hmax * vmax * n;
        if multi_scan {
            let coefficients: u64 =
                f.components.iter().map(|c| mcu_x * 8 * c.h as u64 * mcu_y * 8 * c.v as u64 * 2).sum();
            coefficients + rows
        } else {
            rows
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// resize and normalise

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's coefficients for a bilinear resample of one axis: (first input index, count) per output, and
/// fixed-point weights, `ksize` per output.
fn coeffs(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let tri = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k = vec![0f64; n];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate() {
            *kx = tri((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *kx;
        }
        for (x, kx) in k.iter().enumerate() {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize exactly as PIL's `Image.resize((w, h), Image.BILINEAR)` does for an RGB image.
pub fn resize_bilinear_pil(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let src = img.as_raw();
    let mut cur: Vec<u8>;
    let mut cw = iw as usize;
    let cur_ref: &[u8] = if iw != w {
        let (ks, b, k) = coeffs(iw as usize, w as usize);
        let w = w as usize;
        cur = vec![0u8; w * ih as usize * 3];
        for y in 0..ih as usize {
            let row = &src[y * cw * 3..(y + 1) * cw * 3];
            for (xx, &(xmin, n)) in b.iter().enumerate() {
                let kx = &k[xx * ks..xx * ks + n];
                for c in 0..3 {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, kv) in kx.iter().enumerate() {
                        ss += row[(xmin + x) * 3 + c] as i32 * kv;
                    }
                    cur[(y * w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cw = w;
        &cur
    } else {
        src
    };
    let out: Vec<u8> = if ih != h {
        let (ks, b, k) = coeffs(ih as usize, h as usize);
        let mut out = vec![0u8; cw * h as usize * 3];
        for (yy, &(ymin, n)) in b.iter().enumerate() {
            let ky = &k[yy * ks..yy * ks + n];
            for x in 0..cw * 3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (y, kv) in ky.iter().enumerate() {
                    ss += cur_ref[(ymin + y) * cw * 3 + x] as i32 * kv;
                }
                out[yy * cw * 3 + x] = clip8(ss);
            }
        }
        out
    } else {
        cur_ref.to_vec()
    };
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// (1, 3, H, W) tensor of (x/255 − mean)/std, computed in f32 as the reference does.
pub fn to_tensor(img: &RgbImage, norm: &Normalization, dev: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut v = vec![0f32; 3 * w * h];
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            v[c * w * h + i] = (p[c] as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, h, w), dev)?)
}

/// The model's input for an image: PIL bilinear resize to (h, w), no crop, then normalise.
pub fn preprocess(img: &RgbImage, size: (usize, usize), norm: &Normalization, dev: &Device) -> Result<Tensor> {
    let r = resize_bilinear_pil(img, size.1 as u32, size.0 as u32);
    to_tensor(&r, norm, dev)
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
