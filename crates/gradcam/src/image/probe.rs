//! Checks of PNG, BMP, WebP and TIFF headers before a decoder runs: every size a decoder would allocate from,
//! and the data that must be present for it, within the file and the budget.

use super::{read_up_to, Budget};
use crate::error::{Error, Result};
use std::io::{BufRead, Read, Seek, SeekFrom};

fn read_at<R: Read + Seek>(r: &mut R, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    r.seek(SeekFrom::Start(at))?;
    read_up_to(r, buf)
}

/// PNG: the size from the IHDR, and the compressed data (IDAT) long enough to hold it.
pub(super) fn probe_png<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
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
pub(super) fn probe_bmp<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
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
pub(super) fn probe_webp<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<u64> {
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
pub(super) fn probe_tiff<R: Read + Seek>(r: &mut R, len: u64, budget: &Budget) -> Result<()> {
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
