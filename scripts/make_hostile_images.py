#!/usr/bin/env python3
"""Hostile image files for crates/gradcam/tests/hostile_images.rs, with what PIL does with each.

Writes small files (a few KB each) named img_*.{jpg,png,gif,bmp,tif,webp} into tests/fixtures/hostile/ and
img_manifest.json there: for every file, what Pillow (with libjpeg-turbo) does when it opens and loads it
("ok" or "error", and its message), and what gradcam must do ("expect"). `expect` equals `pil` except where
`why` explains the difference (a limit of ours that PIL does not have, or a file PIL loads as garbage that
we refuse on purpose). The Rust tests read only the files and the manifest: they need no Python.

    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow numpy
    /tmp/pil/bin/python scripts/make_hostile_images.py            # writes tests/fixtures/hostile/img_*
    /tmp/pil/bin/python scripts/make_hostile_images.py --check    # only compares PIL with the manifest
    /tmp/pil/bin/python scripts/make_hostile_images.py --corpus /tmp/jpeg-corpus --count 4000
        # random corruptions of valid JPEGs with PIL's verdicts, for the ignored test
        # GRADCAM_JPEG_CORPUS=/tmp/jpeg-corpus cargo test -p gradcam --test hostile_images -- --ignored

Every mutation is deterministic (fixed seeds), so a rerun with the same Pillow writes the same files.
"""

import argparse
import io
import json
import random
import re
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hostile"


# ---------------------------------------------------------------------------------------------------------
# what PIL does


def pil_verdict(data: bytes):
    """("ok", "WxH MODE") when PIL opens and loads the file (warnings or not), else ("error", message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return "ok", f"{im.size[0]}x{im.size[1]} {im.mode}"
    except Exception as e:  # noqa: BLE001 - every refusal counts
        return "error", re.sub(r" at 0x[0-9a-f]+", "", f"{type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------------------
# source pictures: textured, deterministic, small


def picture(w=64, h=48, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    img[h // 4 : h // 2, w // 3 : w // 2] = [250, 30, 30]  # a red block: edges for the AC coefficients
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def jpeg(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def segments(b: bytes):
    """(marker, offset, length) of every segment, and ("scan", offset, length) for entropy-coded data."""
    out, i = [], 2
    while i + 1 < len(b):
        if b[i] != 0xFF:
            raise ValueError(f"no marker at {i}")
        m = b[i + 1]
        if m == 0xD9:
            out.append((m, i, 2))
            break
        n = int.from_bytes(b[i + 2 : i + 4], "big")
        out.append((m, i, n + 2))
        i += 2 + n
        if m == 0xDA:
            j = i
            while j + 1 < len(b) and not (b[j] == 0xFF and b[j + 1] != 0 and not 0xD0 <= b[j + 1] <= 0xD7):
                j += 1
            out.append(("scan", i, j - i))
            i = j
    return out


def seg(b, marker, nth=0):
    return [s for s in segments(b) if s[0] == marker][nth]


def scans(b):
    return [s for s in segments(b) if s[0] == "scan"]


def patch(b, offset, new: bytes):
    bb = bytearray(b)
    bb[offset : offset + len(new)] = new
    return bytes(bb)


def sof_offset(b):
    for m, o, _ in segments(b):
        if isinstance(m, int) and 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return o
    raise ValueError("no SOF")


def with_sof_size(b, w, h):
    o = sof_offset(b)
    return patch(b, o + 5, struct.pack(">HH", h, w))


def exif_orientation(value: int) -> bytes:
    """An APP1 Exif segment holding only the orientation tag (big-endian TIFF)."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x0112, 3, 1, value << 16) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def insert_after_soi(b, seg_bytes):
    return b[:2] + seg_bytes + b[2:]


# ---------------------------------------------------------------------------------------------------------
# JPEG: valid ones, and corruptions of them


def jpeg_files():
    pic = picture()
    base = jpeg(pic, quality=75)  # 4:2:0, standard Huffman tables
    f = {}
    f["img_jpeg_ok_baseline.jpg"] = base
    f["img_jpeg_ok_444.jpg"] = jpeg(pic, quality=75, subsampling=0)
    f["img_jpeg_ok_gray.jpg"] = jpeg(pic.convert("L"), quality=75)
    f["img_jpeg_ok_progressive.jpg"] = jpeg(pic, quality=75, progressive=True)
    f["img_jpeg_ok_optimized.jpg"] = jpeg(pic, quality=75, optimize=True)
    f["img_jpeg_ok_restart.jpg"] = jpeg(pic, quality=75, restart_marker_blocks=4)
    f["img_jpeg_ok_cmyk.jpg"] = jpeg(pic.convert("CMYK"), quality=75)
    f["img_jpeg_ok_odd_size.jpg"] = jpeg(picture(37, 23, seed=2), quality=80)
    f["img_jpeg_ok_1x1.jpg"] = jpeg(picture(1, 1, seed=3), quality=80)
    f["img_jpeg_ok_exif_rotated.jpg"] = insert_after_soi(jpeg(picture(40, 24, seed=4), quality=80), exif_orientation(6))
    f["img_jpeg_ok_exif_bogus_orientation.jpg"] = insert_after_soi(base, exif_orientation(77))
    f["img_jpeg_ok_trailing_garbage.jpg"] = base + bytes(random.Random(5).randrange(256) for _ in range(300))
    app0_end = seg(base, 0xE0)[1] + seg(base, 0xE0)[2]
    f["img_jpeg_ok_garbage_between_segments.jpg"] = base[:app0_end] + b"\x00\x12\x34garbage" + base[app0_end:]
    f["img_jpeg_garbage_after_soi.jpg"] = insert_after_soi(base, b"\x00\x12\x34garbage")  # not a JPEG
    f["img_jpeg_ok_comment.jpg"] = insert_after_soi(base, b"\xff\xfe\x00\x07hello")
    # the Huffman tables left out: libjpeg (and zune-jpeg) use the standard ones, as Motion-JPEG relies on
    dht = [s for s in segments(base) if s[0] == 0xC4]
    no_dht = base
    for _, o, n in reversed(dht):
        no_dht = no_dht[:o] + no_dht[o + n :]
    f["img_jpeg_ok_no_huffman_tables.jpg"] = no_dht

    sc = scans(base)[0]
    s0, sl = sc[1], sc[2]

    # single bytes flipped in the scan: libjpeg warns (bad Huffman code) and goes on
    for k in range(4):
        r = random.Random(100 + k)
        bb = bytearray(base)
        for _ in range(3):
            p = r.randrange(s0, s0 + sl)
            v = r.randrange(256)
            bb[p] = v if v != 0xFF else 0x7F
        f[f"img_jpeg_scan_flips_{k}.jpg"] = bytes(bb)

    # a stretch of the scan overwritten with random bytes: refused when it happens to hold a marker
    # libjpeg cannot take (most of them), loaded otherwise
    for k in range(6):
        r = random.Random(200 + k)
        n = [24, 64, 200, 400, 400, 400][k]
        p = r.randrange(s0, s0 + sl - n)
        f[f"img_jpeg_scan_random_{k}.jpg"] = patch(base, p, bytes(r.randrange(256) for _ in range(n)))

    # one marker written into the middle of the scan
    mid = s0 + sl // 2
    for m in [0x01, 0xC0, 0xC4, 0xC9, 0xCC, 0xD0, 0xD8, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xE1, 0xF0, 0xFE]:
        f[f"img_jpeg_scan_marker_{m:02x}.jpg"] = patch(base, mid, bytes([0xFF, m]))

    # truncated: without the end-of-image marker PIL says "image file is truncated"; with one it loads the
    # rest as grey (libjpeg: "premature end of data segment", a warning)
    for frac in [0.1, 0.5, 0.95]:
        cut = s0 + int(sl * frac)
        f[f"img_jpeg_truncated_{int(frac * 100)}.jpg"] = base[:cut]
        f[f"img_jpeg_truncated_{int(frac * 100)}_eoi.jpg"] = base[:cut] + b"\xff\xd9"
    f["img_jpeg_truncated_header.jpg"] = base[: seg(base, 0xC0)[1] + 10]
    f["img_jpeg_only_soi.jpg"] = b"\xff\xd8"
    f["img_jpeg_no_scan.jpg"] = base[:s0 - 14] + b"\xff\xd9"  # headers then EOI: no SOS at all

    # frame header (SOF) fields
    f["img_jpeg_sof_9000x9000.jpg"] = with_sof_size(base, 9000, 9000)
    f["img_jpeg_sof_2000x1500.jpg"] = with_sof_size(base, 2000, 1500)
    f["img_jpeg_sof_65535x65535.jpg"] = with_sof_size(base, 65535, 65535)
    f["img_jpeg_sof_width_0.jpg"] = with_sof_size(base, 0, 48)
    f["img_jpeg_sof_height_0.jpg"] = with_sof_size(base, 64, 0)
    f["img_jpeg_sof_smaller.jpg"] = with_sof_size(base, 32, 16)
    f["img_jpeg_sof_128x96.jpg"] = with_sof_size(base, 128, 96)  # twice the size: the scan can hold it
    o = sof_offset(base)
    f["img_jpeg_sof_precision_12.jpg"] = patch(base, o + 4, b"\x0c")
    f["img_jpeg_sof_precision_0.jpg"] = patch(base, o + 4, b"\x00")
    f["img_jpeg_sof_components_0.jpg"] = patch(base, o + 9, b"\x00")
    f["img_jpeg_sof_components_4.jpg"] = patch(base, o + 9, b"\x04")
    f["img_jpeg_sof_sampling_0.jpg"] = patch(base, o + 11, b"\x00")
    f["img_jpeg_sof_sampling_5x5.jpg"] = patch(base, o + 11, b"\x55")
    f["img_jpeg_sof_quant_table_3.jpg"] = patch(base, o + 12, b"\x03")
    f["img_jpeg_sof_lossless.jpg"] = patch(base, o + 1, b"\xc3")
    f["img_jpeg_sof_arithmetic.jpg"] = patch(base, o + 1, b"\xc9")
    f["img_jpeg_sof_progressive_on_baseline_data.jpg"] = patch(base, o + 1, b"\xc2")
    f["img_jpeg_sof_length_short.jpg"] = patch(base, o + 2, b"\x00\x05")
    f["img_jpeg_sof_length_long.jpg"] = patch(base, o + 2, b"\x7f\xff")
    f["img_jpeg_two_sof.jpg"] = base[: sc[1] - 14] + base[o : o + 19] + base[sc[1] - 14 :]

    # Huffman tables
    d0 = dht[0][1]  # first DHT segment: class/index byte at +4, 16 counts at +5
    f["img_jpeg_dht_index_7.jpg"] = patch(base, d0 + 4, b"\x07")
    f["img_jpeg_dht_counts_overflow.jpg"] = patch(base, d0 + 5, bytes([0, 5, 7] + [0] * 13))
    f["img_jpeg_dht_counts_too_many.jpg"] = patch(base, d0 + 5, bytes([0, 255] + [0] * 14))
    f["img_jpeg_dht_length_long.jpg"] = patch(base, d0 + 2, b"\xff\x00")
    f["img_jpeg_dht_dc_symbol_200.jpg"] = patch(base, d0 + 5 + 16, b"\xc8")
    ac = dht[1][1]
    f["img_jpeg_dht_ac_symbols_shuffled.jpg"] = patch(
        base, ac + 5 + 16, bytes(random.Random(7).sample(list(base[ac + 5 + 16 : ac + 5 + 16 + 40]), 40))
    )
    # quantisation tables
    q0 = seg(base, 0xDB)[1]
    f["img_jpeg_dqt_index_9.jpg"] = patch(base, q0 + 4, b"\x09")
    f["img_jpeg_dqt_zeros.jpg"] = patch(base, q0 + 5, bytes(64))
    f["img_jpeg_dqt_length_short.jpg"] = patch(base, q0 + 2, b"\x00\x10")
    # scan header (SOS)
    sos = seg(base, 0xDA)[1]
    f["img_jpeg_sos_components_0.jpg"] = patch(base, sos + 4, b"\x00")
    f["img_jpeg_sos_bad_component_id.jpg"] = patch(base, sos + 5, b"\x09")
    f["img_jpeg_sos_table_3.jpg"] = patch(base, sos + 6, b"\x33")
    f["img_jpeg_sos_spectral_garbage.jpg"] = patch(base, sos + 11, b"\x05\x02\x11")
    # markers and structure
    f["img_jpeg_two_soi.jpg"] = insert_after_soi(base, b"\xff\xd8")
    f["img_jpeg_unknown_marker_in_header.jpg"] = insert_after_soi(base, b"\xff\xf0\x00\x04ab")
    f["img_jpeg_app_length_past_end.jpg"] = insert_after_soi(base, b"\xff\xe5\xff\xf0abc")
    f["img_jpeg_app_length_1.jpg"] = insert_after_soi(base, b"\xff\xe5\x00\x01abc")
    f["img_jpeg_dri_bad_length.jpg"] = insert_after_soi(base, b"\xff\xdd\x00\x06\x00\x04\x00\x00")
    f["img_jpeg_dri_without_restarts.jpg"] = insert_after_soi(base, b"\xff\xdd\x00\x04\x00\x02")
    # restart markers out of order, and the progressive file cut after its first scans
    rst = bytearray(f["img_jpeg_ok_restart.jpg"])
    for i in range(2, len(rst) - 1):
        if rst[i] == 0xFF and 0xD0 <= rst[i + 1] <= 0xD7:
            rst[i + 1] = 0xD0 + (rst[i + 1] - 0xD0 + 3) % 8
    f["img_jpeg_restart_out_of_order.jpg"] = bytes(rst)
    prog = f["img_jpeg_ok_progressive.jpg"]
    ps = scans(prog)
    f["img_jpeg_progressive_first_scan_only.jpg"] = prog[: ps[0][1] + ps[0][2]] + b"\xff\xd9"
    f["img_jpeg_progressive_9000x9000.jpg"] = with_sof_size(prog, 9000, 9000)
    f["img_jpeg_progressive_truncated.jpg"] = prog[: ps[2][1] + ps[2][2] // 2]
    f["img_jpeg_progressive_sof_1x1.jpg"] = with_sof_size(prog, 1, 1)
    no_dht = prog
    for _, o, n in reversed([s for s in segments(prog) if s[0] == 0xC4]):
        no_dht = no_dht[:o] + no_dht[o + n :]
    f["img_jpeg_progressive_no_huffman_tables.jpg"] = no_dht  # no standard tables in progressive mode
    # the end-of-image marker replaced by bytes the decoder does not need
    f["img_jpeg_no_eoi_garbage_tail.jpg"] = base[:-2] + bytes(range(1, 100))
    f["img_jpeg_no_eoi_app_marker.jpg"] = base[:-1] + b"\xe4"  # FF E4 whose length runs past the end
    f["img_jpeg_truncated_1_eoi.jpg"] = base[: s0 + 3] + b"\xff\xd9"
    # restart intervals: libjpeg resynchronises past a stray marker below SOF0, except in the last interval
    rj = f["img_jpeg_ok_restart.jpg"]
    rsts = [i for i in range(len(rj) - 1) if rj[i] == 0xFF and 0xD0 <= rj[i + 1] <= 0xD7]
    f["img_jpeg_restart_stray_marker.jpg"] = patch(rj, (rsts[0] + rsts[1]) // 2, b"\xff\x34")
    f["img_jpeg_restart_stray_marker_last.jpg"] = patch(rj, (rsts[-1] + len(rj)) // 2, b"\xff\x34")
    # Adobe segment: an unknown colour transform (libjpeg warns), too short to hold one (ignored)
    cmyk = f["img_jpeg_ok_cmyk.jpg"]
    adobe = cmyk.index(b"Adobe")
    f["img_jpeg_adobe_bad_transform.jpg"] = patch(cmyk, adobe + 11, b"\xd2")
    f["img_jpeg_adobe_short.jpg"] = insert_after_soi(base, b"\xff\xee\x00\x09Adobe\x00\x64")
    return f


# ---------------------------------------------------------------------------------------------------------
# other formats: hostile headers


def png_chunk(kind: bytes, data: bytes, length=None):
    n = len(data) if length is None else length
    return struct.pack(">I", n) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, depth=8, colour=2, idat=None, extra=b"", interlace=0):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
    if idat is not None:
        out += png_chunk(b"IDAT", idat)
    return out + png_chunk(b"IEND", b"")


def deflate_zeros(n, level=9):
    z = zlib.compressobj(level)
    out, chunk = [], bytes(1 << 20)
    while n > 0:
        out.append(z.compress(chunk[: min(n, len(chunk))]))
        n -= min(n, len(chunk))
    out.append(z.flush())
    return b"".join(out)


def other_files():
    f = {}
    pic = picture()
    buf = io.BytesIO()
    pic.save(buf, "PNG")
    ok_png = buf.getvalue()
    f["img_png_ok.png"] = ok_png
    # 10000x10000 16-bit RGBA (800 MB decoded): the header and a little zlib data, no more
    f["img_png_16bit_rgba_10000.png"] = png(10000, 10000, 16, 6, idat=deflate_zeros(4096))
    f["img_png_100000x100000.png"] = png(100000, 100000, 8, 2)
    f["img_png_width_0.png"] = png(0, 10, 8, 2, idat=zlib.compress(b""))
    f["img_png_width_2pow31.png"] = png(1 << 31, 1, 8, 0, idat=zlib.compress(b"\x00"))
    f["img_png_bad_depth.png"] = png(8, 8, 7, 2, idat=zlib.compress(bytes(8 * 25)))
    f["img_png_bad_colour.png"] = png(8, 8, 8, 5, idat=zlib.compress(bytes(8 * 25)))
    ihdr_end = 8 + 25
    f["img_png_huge_chunk_length.png"] = ok_png[:ihdr_end] + struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"abc"
    f["img_png_huge_idat_length.png"] = ok_png[:ihdr_end] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + b"\x78\x9c"
    f["img_png_bad_crc.png"] = ok_png[:ihdr_end - 1] + bytes([ok_png[ihdr_end - 1] ^ 0xFF]) + ok_png[ihdr_end:]
    # 16x16 grey whose IDAT inflates to 4 MB: far more data than the image needs
    f["img_png_idat_bomb.png"] = png(16, 16, 8, 0, idat=deflate_zeros(4 << 20))
    # an iCCP and a zTXt that each inflate to 4 MB
    bomb = deflate_zeros(4 << 20)
    f["img_png_iccp_bomb.png"] = png(8, 8, 8, 2, idat=zlib.compress(bytes(8 * 25)),
                                     extra=png_chunk(b"iCCP", b"bomb\x00\x00" + bomb))
    f["img_png_ztxt_bomb.png"] = png(8, 8, 8, 2, idat=zlib.compress(bytes(8 * 25)),
                                     extra=png_chunk(b"zTXt", b"bomb\x00\x00" + bomb))
    # APNG claiming 2^31 frames
    f["img_png_apng_frames.png"] = png(8, 8, 8, 2, idat=zlib.compress(bytes(8 * 25)),
                                       extra=png_chunk(b"acTL", struct.pack(">II", 0x7FFFFFFF, 0)))
    f["img_png_truncated.png"] = ok_png[: len(ok_png) // 2]

    # GIF
    def gif(sw, sh, fw, fh, frames=1, left=0, top=0, lzw=None):
        out = b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
        for _ in range(frames):
            out += b"\x2c" + struct.pack("<HHHHB", left, top, fw, fh, 0)
            data = lzw if lzw is not None else b"\x02\x02\x44\x01\x00"  # a tiny LZW stream
            out += data
        return out + b"\x3b"

    buf = io.BytesIO()
    pic.convert("P").save(buf, "GIF")
    f["img_gif_ok.gif"] = buf.getvalue()
    f["img_gif_screen_65535.gif"] = gif(65535, 65535, 1, 1)
    f["img_gif_frame_65535.gif"] = gif(8, 8, 65535, 65535)
    f["img_gif_frame_outside.gif"] = gif(8, 8, 4, 4, left=60000, top=60000)
    f["img_gif_zero.gif"] = gif(0, 0, 0, 0)
    buf = io.BytesIO()
    frames = [Image.new("RGB", (4, 4), (i % 256, (i // 256) * 60, 9)) for i in range(150)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=10)
    f["img_gif_many_frames.gif"] = buf.getvalue()
    f["img_gif_truncated.gif"] = f["img_gif_ok.gif"][:40]

    # BMP
    def bmp(w, h, bpp=24, offset=54, compression=0, colours=0, data=None):
        data = bytes(64) if data is None else data  # pixel data: a few rows at most, hostile sizes or not
        info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(data), 2835, 2835, colours, 0)
        hdr = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(data), 0, 0, offset)
        return hdr + info + data

    buf = io.BytesIO()
    pic.save(buf, "BMP")
    f["img_bmp_ok.bmp"] = buf.getvalue()
    f["img_bmp_100000x100000.bmp"] = bmp(100000, 100000)
    f["img_bmp_9000x9000.bmp"] = bmp(9000, 9000)
    f["img_bmp_width_0.bmp"] = bmp(0, 10)
    f["img_bmp_height_min.bmp"] = bmp(4, -(1 << 31))
    f["img_bmp_offset_past_end.bmp"] = bmp(4, 4, offset=0x7FFFFFFF)
    f["img_bmp_palette_huge.bmp"] = bmp(4, 4, bpp=8, colours=0x7FFFFFFF)
    f["img_bmp_bpp_7.bmp"] = bmp(4, 4, bpp=7)
    # RLE8 that asks for a 4000x4000 image (48 MB decoded) in 60 bytes
    f["img_bmp_rle_4000.bmp"] = bmp(4000, 4000, bpp=8, compression=1, colours=2, offset=54 + 8,
                                   data=bytes(8) + b"\x00\x02\xff\xff" * 10 + b"\x00\x01")

    # TIFF (little-endian, one IFD)
    def tiff(entries, extra=b"", next_ifd=0):
        n = len(entries)
        ifd = struct.pack("<H", n)
        for tag, typ, count, value in sorted(entries):
            ifd += struct.pack("<HHII", tag, typ, count, value)
        ifd += struct.pack("<I", next_ifd)
        return b"II*\x00" + struct.pack("<I", 8) + ifd + extra

    def tiff_basic(w, h, bps=8, spp=1, strip_offset=200, strip_bytes=16, compression=1, rows=None, next_ifd=0):
        e = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, bps), (259, 3, 1, compression), (262, 3, 1, 1),
             (273, 4, 1, strip_offset), (277, 3, 1, spp), (278, 4, 1, rows if rows is not None else h),
             (279, 4, 1, strip_bytes)]
        t = tiff(e, next_ifd=next_ifd)
        end = strip_offset + strip_bytes if strip_offset + strip_bytes < 4096 else len(t)
        return t + bytes(max(0, end - len(t)))  # the strip's bytes where they fit in a small file

    buf = io.BytesIO()
    pic.save(buf, "TIFF")
    f["img_tif_ok.tif"] = buf.getvalue()
    f["img_tif_100000x100000.tif"] = tiff_basic(100000, 100000)
    f["img_tif_width_0.tif"] = tiff_basic(0, 10)
    f["img_tif_strip_bytes_huge.tif"] = tiff_basic(64, 64, strip_bytes=0x7FFFFFF0)
    f["img_tif_strip_offset_past_end.tif"] = tiff_basic(64, 64, strip_offset=0x7FFFFFF0)
    f["img_tif_ifd_loop.tif"] = tiff_basic(4, 4, next_ifd=8)
    f["img_tif_bps_64.tif"] = tiff_basic(4, 4, bps=64)
    f["img_tif_spp_200.tif"] = tiff_basic(4, 4, spp=200)
    # 8000x8000 16-bit RGBA in one deflate strip (512 MB decoded): the strip holds a little zlib data only
    z = deflate_zeros(4096)
    e = [(256, 4, 1, 8000), (257, 4, 1, 8000), (258, 3, 4, 300), (259, 3, 1, 8), (262, 3, 1, 2),
         (273, 4, 1, 400), (277, 3, 1, 4), (278, 4, 1, 8000), (279, 4, 1, len(z)), (338, 3, 1, 2)]
    t = tiff(e)
    t = t + bytes(300 - len(t)) + struct.pack("<HHHH", 16, 16, 16, 16)
    t = t + bytes(400 - len(t)) + z
    f["img_tif_rgba16_8000.tif"] = t
    # entries claiming 2^30 values
    f["img_tif_huge_count.tif"] = tiff([(256, 4, 1, 4), (257, 4, 1, 4), (258, 3, 1, 8), (262, 3, 1, 1),
                                        (273, 4, 0x40000000, 200), (277, 3, 1, 1), (278, 4, 1, 4),
                                        (279, 4, 0x40000000, 200)])

    # WebP
    def riff(chunks):
        body = b"WEBP" + chunks
        return b"RIFF" + struct.pack("<I", len(body)) + body

    def chunk(kind, data, length=None):
        n = len(data) if length is None else length
        return kind + struct.pack("<I", n) + data + (b"\x00" if len(data) % 2 else b"")

    buf = io.BytesIO()
    pic.save(buf, "WEBP", quality=80)
    ok_webp = buf.getvalue()
    f["img_webp_ok.webp"] = ok_webp
    buf = io.BytesIO()
    pic.save(buf, "WEBP", lossless=True)
    f["img_webp_ok_lossless.webp"] = buf.getvalue()

    def vp8x(w, h, flags=0):
        return chunk(b"VP8X", struct.pack("<I", flags) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))

    vp8 = ok_webp[12:]  # the VP8 chunk of the valid lossy file
    f["img_webp_canvas_16384.webp"] = riff(vp8x(16384, 16384) + vp8)
    f["img_webp_canvas_2pow24.webp"] = riff(vp8x(1 << 24, 1 << 24) + vp8)
    f["img_webp_chunk_length_huge.webp"] = riff(chunk(b"VP8 ", b"", length=0x7FFFFFF0) + b"abcd")
    f["img_webp_riff_length_huge.webp"] = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + ok_webp[8:]
    f["img_webp_truncated.webp"] = ok_webp[: len(ok_webp) // 2]
    # VP8L (lossless) header: 14-bit sizes, 16384x16384
    vp8l = b"\x2f" + struct.pack("<I", (16383) | (16383 << 14))
    f["img_webp_lossless_16384.webp"] = riff(chunk(b"VP8L", vp8l + bytes(16)))
    # animation: 100000 frames of 1x1 on a 16x16 canvas
    anmf = chunk(b"ANMF", bytes(6) + (0).to_bytes(3, "little") * 2 + bytes(4) + b"")
    f["img_webp_anim_frames.webp"] = riff(vp8x(16, 16, flags=0x02) + chunk(b"ANIM", bytes(6)) + anmf * 200)
    return f


# ---------------------------------------------------------------------------------------------------------
# what we expect where it differs from PIL

# name -> (expect, why), where gradcam must not do what PIL does
DIFFERENT = {
    # PIL loads these: the frame header promises a picture the scan data cannot hold (a Huffman-coded block
    # takes at least 2 bits in a sequential scan, 1 in a progressive DC scan); libjpeg says "premature end
    # of data segment", a warning PIL does not show, and fills the rest with grey
    "img_jpeg_sof_9000x9000.jpg": ("error", "scan far too short for 9000x9000: PIL loads 81 megapixels of grey"),
    "img_jpeg_sof_2000x1500.jpg": ("error", "scan too short for 2000x1500: PIL loads 3 megapixels of grey"),
    "img_jpeg_progressive_9000x9000.jpg": ("error", "DC scan too short for 9000x9000 (PIL loads grey)"),
    "img_jpeg_truncated_1_eoi.jpg": ("error", "3 bytes of scan for 72 blocks: cut and patched with an end marker "
                                     "(PIL loads grey)"),
    # a file that ends without its end-of-image marker is refused as truncated; PIL refuses it only when
    # libjpeg needs more data than there is, which the walk here cannot tell
    "img_jpeg_no_eoi_garbage_tail.jpg": ("error", "no end-of-image marker (libjpeg had read all it needed)"),
    # zune-jpeg stops at the end of a progressive JPEG's first scan and wants a marker there; libjpeg skips
    # extra bytes to the next marker with a warning
    "img_jpeg_progressive_sof_1x1.jpg": ("error", "zune-jpeg refuses a first progressive scan that holds more "
                                         "data than its frame needs (libjpeg skips it)"),
    # what the Rust decoders do not do
    "img_jpeg_sof_arithmetic.jpg": ("error", "arithmetic coding: zune-jpeg does not decode it (libjpeg-turbo "
                                    "does; here the Huffman data read as arithmetic is garbage anyway)"),
    "img_tif_ifd_loop.tif": ("error", "the tiff crate follows the whole IFD chain when it opens a file and "
                             "refuses a cycle; PIL reads the first page only"),
    "img_webp_riff_length_huge.webp": ("ok", "the RIFF size says more than the file holds, but every chunk "
                                       "is whole: image-webp decodes the picture, libwebp refuses it"),
}


def jpeg_corpus(out: Path, count: int, seed: int):
    """`count` random corruptions of the valid JPEGs here (and of the example photos, when fetched), with
    PIL's verdict on each in img_manifest.json: scan bytes overwritten or flipped, any byte set, header bytes
    set, cuts with and without an end marker, markers inserted, frame sizes changed."""
    bases = {n: b for n, b in jpeg_files().items() if n.startswith("img_jpeg_ok_") and "garbage" not in n}
    photos = Path.home() / ".cache" / "gradcam" / "examples"
    for name in ["rocket.jpg", "retina.jpg"]:
        if (photos / name).exists():
            bases[name] = (photos / name).read_bytes()
    if (photos / "coffee.png").exists():
        coffee = Image.open(photos / "coffee.png").convert("RGB").resize((200, 150))
        bases["coffee_progressive.jpg"] = jpeg(coffee, quality=85, progressive=True)
        bases["coffee_restart.jpg"] = jpeg(coffee, quality=85, restart_marker_rows=1)
    names = sorted(bases)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    kinds = ["scan_overwrite", "scan_flips", "any_byte", "header_byte", "truncate", "truncate_eoi", "marker", "sof_size"]
    for k in range(count):
        r = random.Random(seed + k)
        name = names[k % len(names)]
        b = bytearray(bases[name])
        s0, sl = scans(bytes(b))[0][1:]
        kind = r.choice(kinds)
        if kind == "scan_overwrite":
            n = r.choice([4, 16, 64, 256])
            p = r.randrange(s0, max(s0 + 1, s0 + sl - n))
            b[p : p + n] = bytes(r.randrange(256) for _ in range(n))
        elif kind == "scan_flips":
            for _ in range(r.choice([1, 5, 20])):
                b[r.randrange(s0, s0 + sl)] ^= 1 << r.randrange(8)
        elif kind == "any_byte":
            for _ in range(r.choice([1, 3])):
                b[r.randrange(2, len(b))] = r.randrange(256)
        elif kind == "header_byte":
            b[r.randrange(2, s0)] = r.choice([0, 1, 0xFF, 0x7F, r.randrange(256)])
        elif kind == "truncate":
            b = b[: r.randrange(2, len(b))]
        elif kind == "truncate_eoi":
            b = b[: r.randrange(s0, len(b))] + b"\xff\xd9"
        elif kind == "marker":
            p = r.randrange(2, len(b) - 2)
            b[p:p] = bytes([0xFF, r.randrange(256)]) + (bytes([0, r.randrange(2, 40)]) if r.random() < 0.5 else b"")
        else:
            o = sof_offset(bytes(b))
            w, h = r.choice([1, 7, 100, 640, 1000, 3000, 9000, 30000]), r.choice([1, 9, 100, 480, 1000, 3000, 9000])
            b[o + 5 : o + 9] = struct.pack(">HH", h, w)
        fn = f"c{k:05d}_{kind}_{name}"
        (out / fn).write_bytes(bytes(b))
        verdict, msg = pil_verdict(bytes(b))
        manifest[fn] = {"pil": verdict, "pil_says": msg, "kind": kind}
    (out / "img_manifest.json").write_text(json.dumps(manifest, indent=0) + "\n")
    print(f"{count} files in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare PIL with the manifest, write nothing")
    ap.add_argument("--corpus", type=Path, help="write random JPEG corruptions and PIL's verdicts there instead")
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=100000)
    args = ap.parse_args()
    if args.corpus:
        jpeg_corpus(args.corpus, args.count, args.seed)
        return
    files = {**jpeg_files(), **other_files()}
    manifest = {
        "_about": "written by scripts/make_hostile_images.py: what PIL (Pillow %s, libjpeg-turbo %s) does with "
        "each file, and what gradcam must do" % (Image.__version__, features.version("libjpeg_turbo")),
    }
    for name in sorted(files):
        data = files[name]
        if len(data) > 16384:
            sys.exit(f"{name} is {len(data)} bytes: fixtures are meant to be small")
        verdict, msg = pil_verdict(data)
        entry = {"pil": verdict, "pil_says": msg, "expect": verdict}
        if name in DIFFERENT:
            entry["expect"], entry["why"] = DIFFERENT[name]
        manifest[name] = entry
    if args.check:
        old = json.loads((args.out / "img_manifest.json").read_text())
        bad = [n for n in files if old.get(n, {}).get("pil") != manifest[n]["pil"]]
        for n in bad:
            print(f"{n}: manifest says {old.get(n, {}).get('pil')}, PIL says {manifest[n]['pil']}")
        sys.exit(1 if bad else 0)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("img_*"):
        old.unlink()
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    (args.out / "img_manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for name in sorted(files):
        e = manifest[name]
        print(f"{name:48s} {len(files[name]):6d} B  pil={e['pil']:5s} expect={e['expect']:5s}  {e['pil_says'][:90]}")


if __name__ == "__main__":
    main()
