//! A JPEG's structure checked as libjpeg (PIL's decoder) reads it, to refuse what PIL refuses - zune-jpeg,
//! the decoder here, goes on after most errors and fills the picture with grey - and to hand zune-jpeg
//! the stream in a form it reads as libjpeg does (junk and ignored segments left out, the standard Huffman
//! tables added where libjpeg supplies them, sequential scan parameters and an unknown Adobe transform set
//! to what libjpeg takes them for).
//!
//! The rule: what PIL (Pillow 13, libjpeg-turbo) refuses to decode is an error here; what it opens and
//! loads, with or without warnings, decodes. Measured on crafted files (scripts/make_hostile_images.py
//! records each file's verdict in tests/fixtures/hostile/img_manifest.json), with libjpeg's messages read
//! through a small djpeg-like program:
//! - corrupt entropy-coded data decodes (garbage, and warnings PIL does not show), unless the corruption
//!   makes a marker libjpeg cannot take. Fatal ("broken data stream"): SOI, SOF, a second SOS in a
//!   single-scan image, a DHT/DQT/DRI/DAC that does not parse, an unknown marker. Not fatal: RSTn, EOI,
//!   APPn, COM, DNL, TEM; and with restart intervals, any marker below SOF0 met before the last interval
//!   (libjpeg resynchronises at the next restart marker);
//! - a file without its end-of-image marker is refused ("image file is truncated"); a truncated scan
//!   followed by one decodes, the rest grey; past the scan of a single-scan image libjpeg has every pixel,
//!   so a segment there running past the end of the file is not an error;
//! - in the headers: unknown markers (TEM included), a second SOI or SOF, lossless and hierarchical
//!   processes, precision other than 8 bits, 2 or more than 4 components, sampling factors outside 1-4 or
//!   not dividing the largest, more than 10 blocks in an MCU, a Huffman table that overflows its code space
//!   or is used undefined (except tables 0 and 1 of a sequential image: libjpeg supplies the standard ones,
//!   as Motion-JPEG expects), a DC table with symbols over 15, a quantisation table cut short or used
//!   undefined, bad progression parameters, a scan naming a component twice or one not in the frame: all
//!   refused; junk bytes between segments, APPn/COM segments shorter than their length field, DNL, garbage
//!   spectral parameters in a sequential scan, an unknown Adobe transform: accepted.
//!
//! On 4000 random corruptions of valid JPEGs (`--corpus`, and the ignored test
//! `jpeg_verdicts_agree_with_pil_on_a_corpus`), every one of the 1171 that PIL refuses is refused here, and
//! 2541 of the 2829 it loads decode. The 288 others are the deliberate and known differences:
//! - a scan too short to hold its frame (every 8x8 block takes at least 2 bits in a sequential scan, 1 in a
//!   progressive DC scan) is refused (263): the frame header lies about the size - the 35 KB photo
//!   patched to say 9000x9000, which PIL decodes into 81 megapixels of grey - or the data was cut and
//!   patched with an end marker. A flat picture compresses to about these 2 bits a block, so no real file is
//!   refused for it;
//! - a file without its end-of-image marker is refused even where libjpeg had read all it needed (11);
//! - zune-jpeg refuses a progressive file whose first scan holds more data than its frame needs (14),
//!   where libjpeg skips the excess;
//! - arithmetic coding, which zune-jpeg does not decode, is refused.

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
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
    0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
    0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A,
    0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65,
    0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9,
    0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA,
    0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA,
    0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
];
const AC_CHROMA: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
    0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16,
    0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39,
    0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8,
    0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9,
    0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
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
                return Err(budget
                    .bad(format!("an arithmetic-coded JPEG (SOF{}), which the decoder does not support", m - 0xC0)));
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
                    let tables: Vec<_> = STD_TABLES.iter().enumerate().filter(|(k, _)| which & (1 << k) != 0).collect();
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
        let coefficients: u64 = f.components.iter().map(|c| mcu_x * 8 * c.h as u64 * mcu_y * 8 * c.v as u64 * 2).sum();
        coefficients + rows
    } else {
        rows
    }
}
