//! A dry run of a pickle before candle's pickle VM (`candle_core::pickle::Stack`) sees it.
//!
//! That VM trusts its input: BINUNICODE allocates the length it announces before reading (4 GiB for 5 bytes),
//! BINGET and BINPUT copy whole objects (a few bytes of pickle double an object, 2^n after n rounds), nesting is
//! unbounded while its objects are dropped, cloned and printed recursively (a stack overflow), and LONG1 of more
//! than 8 bytes shifts past 64 bits (a panic with overflow checks, garbage without). The dry run follows the same
//! opcodes with sizes in place of objects and refuses, with the byte and the reason, whatever would cost more than
//! a small multiple of the pickle's length, nest too deep or fail; candle then only runs on pickles that it
//! unpacks in bounded time and memory.

use candle_core::pickle::Object;
use std::collections::HashMap;

type R<T> = std::result::Result<T, String>;

/// The deepest nesting accepted. A state dict nests about 6 deep, a training checkpoint about 12.
pub(crate) const MAX_DEPTH: u32 = 256;

/// What one object of candle's VM takes, without the bytes of its strings.
const NODE: u64 = std::mem::size_of::<Object>() as u64;

/// The most the objects of one pickle may take, however long it is.
pub(crate) const MAX_BUDGET: u64 = 512 << 20;

/// The bytes the unpacked objects may take in all (copies included) for a pickle of `len` bytes, through its
/// STOP (what follows it, such as zeros that compress to nothing, earns nothing). A real state dict takes about
/// 40 times its pickle's length (candle's objects are 56 bytes, and every BINPUT copies one).
pub(crate) fn budget(len: usize) -> u64 {
    (128 * len as u64 + (4 << 20)).min(MAX_BUDGET)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mark,
    List,
    Dict,
    /// `collections.OrderedDict` or `defaultdict`: candle reduces a call of it to an empty dict.
    DictClass,
    Other,
}

/// An object of the dry run: its kind, the bytes it takes and how deep it nests.
#[derive(Clone, Copy, Debug)]
struct Shadow {
    kind: Kind,
    bytes: u64,
    depth: u32,
}

impl Shadow {
    fn leaf(kind: Kind, extra: u64) -> Shadow {
        Shadow { kind, bytes: NODE + extra, depth: 0 }
    }
}

struct Dry<'a> {
    b: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for messages.
    at: usize,
    stack: Vec<Shadow>,
    /// Stack positions of the MARKs on it.
    marks: Vec<usize>,
    memo: HashMap<u32, Shadow>,
    spent: u64,
    budget: u64,
}

/// Check the pickle at the start of `b`: Ok(its length through STOP) when candle's VM may run it.
pub(crate) fn check(b: &[u8]) -> R<usize> {
    dry_run(b).map(|(len, _)| len)
}

/// The dry run: the pickle's length through STOP, and the bytes its objects would take. While it runs, the
/// pickle's length is not known: it may spend what the longest pickle `b` could hold may take; at STOP, what
/// its own length allows.
fn dry_run(b: &[u8]) -> R<(usize, u64)> {
    let mut d =
        Dry { b, pos: 0, at: 0, stack: vec![], marks: vec![], memo: HashMap::new(), spent: 0, budget: budget(b.len()) };
    loop {
        d.at = d.pos;
        let op = d.take(1)?[0];
        if d.step(op)? {
            d.budget = budget(d.pos);
            d.spend(0)?;
            return Ok((d.pos, d.spent));
        }
    }
}

impl Dry<'_> {
    fn fail<T>(&self, what: impl std::fmt::Display) -> R<T> {
        Err(format!("byte {}: {what}", self.at))
    }

    fn take(&mut self, n: usize) -> R<&[u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "byte {}: the pickle ends after {} bytes, inside an operation (truncated?)",
                self.at,
                self.b.len()
            )),
        }
    }

    fn u32(&mut self) -> R<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn spend(&mut self, bytes: u64) -> R<()> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.budget {
            return self.fail(format_args!(
                "unpacking this pickle (of {} bytes at most) would take more than {} MiB (objects copied again and \
                 again through the memo?); refused",
                if self.b[self.at] == b'.' { self.pos } else { self.b.len() },
                self.budget >> 20
            ));
        }
        Ok(())
    }

    fn push(&mut self, s: Shadow) -> R<()> {
        if s.depth > MAX_DEPTH {
            return self.fail(format_args!("objects nested more than {MAX_DEPTH} deep; refused"));
        }
        if s.kind == Kind::Mark {
            self.marks.push(self.stack.len());
        }
        self.stack.push(s);
        Ok(())
    }

    fn pop(&mut self) -> R<Shadow> {
        let Some(s) = self.stack.pop() else {
            return self.fail("an operation takes an object from an empty stack");
        };
        if s.kind == Kind::Mark {
            self.marks.pop();
        }
        Ok(s)
    }

    /// Pop through the topmost MARK: (how many objects, their bytes, their deepest nesting).
    fn pop_to_mark(&mut self) -> R<(u64, u64, u32)> {
        let Some(m) = self.marks.pop() else {
            return self.fail("an operation looks for a MARK that is not on the stack");
        };
        let items = &self.stack[m + 1..];
        let n = items.len() as u64;
        let bytes = items.iter().fold(0u64, |a, s| a.saturating_add(s.bytes));
        let depth = items.iter().map(|s| s.depth).max().unwrap_or(0);
        self.stack.truncate(m);
        Ok((n, bytes, depth))
    }

    /// A new container of `n` objects taking `bytes`, nested `depth` deep.
    fn container(&mut self, kind: Kind, n: u64, bytes: u64, depth: u32) -> R<()> {
        self.spend(NODE.saturating_mul(n + 1))?;
        self.push(Shadow { kind, bytes: bytes.saturating_add(NODE), depth: depth + 1 })
    }

    /// Objects added to the list or dict on top of the stack.
    fn grow_last(&mut self, want: Kind, n: u64, bytes: u64, depth: u32) -> R<()> {
        self.spend(NODE.saturating_mul(n))?;
        let at = self.at;
        let Some(last) = self.stack.last_mut() else {
            return self.fail("an operation adds to an object on an empty stack");
        };
        if last.kind != want {
            return Err(format!("byte {at}: an operation adds items to a {:?} (expected a {want:?})", last.kind));
        }
        last.bytes = last.bytes.saturating_add(bytes);
        last.depth = last.depth.max(depth + 1);
        if last.depth > MAX_DEPTH {
            return self.fail(format_args!("objects nested more than {MAX_DEPTH} deep; refused"));
        }
        Ok(())
    }

    fn line(&mut self) -> R<String> {
        let rest = &self.b[self.pos..];
        let Some(n) = rest.iter().position(|&c| c == b'\n') else {
            return self.fail("GLOBAL without the end of its line");
        };
        let s = String::from_utf8_lossy(rest[..n].strip_suffix(b"\r").unwrap_or(&rest[..n])).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn get(&mut self, id: u32) -> R<()> {
        let Some(&s) = self.memo.get(&id) else {
            return self.fail(format_args!("the memo has no entry {id}"));
        };
        self.spend(s.bytes)?;
        self.push(s)
    }

    fn put(&mut self, id: u32) -> R<()> {
        let Some(&s) = self.stack.last() else {
            return self.fail("PUT with an empty stack");
        };
        self.spend(s.bytes)?;
        self.memo.insert(id, s);
        Ok(())
    }

    /// Run one opcode; true at STOP. The cases follow `Stack::read` of candle 0.11.
    fn step(&mut self, op: u8) -> R<bool> {
        match op {
            0x80 => {
                self.take(1)?;
            }
            b'c' => {
                let module = self.line()?;
                let class = self.line()?;
                let kind = if module == "collections" && (class == "OrderedDict" || class == "defaultdict") {
                    Kind::DictClass
                } else {
                    Kind::Other
                };
                let s = Shadow::leaf(kind, (module.len() + class.len()) as u64);
                self.spend(s.bytes)?;
                self.push(s)?;
            }
            b'K' | b'M' | b'J' | b'G' => {
                self.take(match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                })?;
                self.spend(NODE)?;
                self.push(Shadow::leaf(Kind::Other, 0))?;
            }
            b'X' => {
                let len = self.u32()? as usize;
                let left = self.b.len() - self.pos;
                if len > left {
                    return self.fail(format_args!("a string announces {len} bytes, the pickle has {left} left"));
                }
                self.take(len)?;
                self.spend(NODE + len as u64)?;
                self.push(Shadow::leaf(Kind::Other, len as u64))?;
            }
            0x8a => {
                let n = self.take(1)?[0] as usize;
                if n > 8 {
                    return self.fail(format_args!("an integer of {n} bytes (more than 64 bits) is not supported"));
                }
                self.take(n)?;
                self.spend(NODE)?;
                self.push(Shadow::leaf(Kind::Other, 0))?;
            }
            b'Q' => {
                let id = self.pop()?;
                self.container(Kind::Other, 1, id.bytes.saturating_add(NODE), id.depth)?;
            }
            b't' => {
                let (n, bytes, depth) = self.pop_to_mark()?;
                self.container(Kind::Other, n, bytes, depth)?;
            }
            0x85..=0x87 => {
                let (mut bytes, mut depth) = (0u64, 0u32);
                for _ in 0..(op - 0x84) {
                    let s = self.pop()?;
                    bytes = bytes.saturating_add(s.bytes);
                    depth = depth.max(s.depth);
                }
                self.container(Kind::Other, (op - 0x84) as u64, bytes, depth)?;
            }
            0x88 | 0x89 | b'N' | b')' | b']' | b'}' | b'd' | b'(' => {
                let kind = match op {
                    b']' => Kind::List,
                    b'}' | b'd' => Kind::Dict, // candle reads `d` as an empty dict, as `}`
                    b'(' => Kind::Mark,
                    _ => Kind::Other,
                };
                self.spend(NODE)?;
                self.push(Shadow::leaf(kind, 0))?;
            }
            b'a' => {
                let v = self.pop()?;
                self.grow_last(Kind::List, 1, v.bytes, v.depth)?;
            }
            b'e' => {
                let (n, bytes, depth) = self.pop_to_mark()?;
                self.grow_last(Kind::List, n, bytes, depth)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.grow_last(Kind::Dict, 2, k.bytes.saturating_add(v.bytes), k.depth.max(v.depth))?;
            }
            b'u' => {
                let (n, bytes, depth) = self.pop_to_mark()?;
                if n % 2 != 0 {
                    return self.fail("SETITEMS with an odd number of objects");
                }
                self.grow_last(Kind::Dict, n, bytes, depth)?;
            }
            b'.' => return Ok(true),
            b'b' => {
                let args = self.pop()?;
                let obj = self.pop()?;
                let bytes = obj.bytes.saturating_add(args.bytes);
                if obj.kind == Kind::Dict && args.kind == Kind::Dict {
                    self.spend(NODE)?;
                    self.push(Shadow { kind: Kind::Dict, bytes, depth: obj.depth.max(args.depth) })?;
                } else {
                    self.container(Kind::Other, 2, bytes.saturating_add(2 * NODE), obj.depth.max(args.depth))?;
                }
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                if op == b'R' && callable.kind == Kind::DictClass {
                    self.spend(NODE)?;
                    self.push(Shadow::leaf(Kind::Dict, 0))?;
                } else {
                    let bytes = callable.bytes.saturating_add(args.bytes).saturating_add(2 * NODE);
                    self.container(Kind::Other, 2, bytes, callable.depth.max(args.depth))?;
                }
            }
            b'h' => {
                let id = self.take(1)?[0] as u32;
                self.get(id)?;
            }
            b'j' => {
                let id = self.u32()?;
                self.get(id)?;
            }
            b'q' => {
                let id = self.take(1)?[0] as u32;
                self.put(id)?;
            }
            b'r' => {
                let id = self.u32()?;
                self.put(id)?;
            }
            other => {
                return self
                    .fail(format_args!("opcode 0x{other:02x} is not supported (torch.save writes pickle protocol 2)"))
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_small_dict_and_stops_at_stop() {
        // {'a': 1} then trailing bytes
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.junk";
        assert_eq!(check(p).unwrap(), p.len() - 4);
    }

    /// The pickles of a real legacy checkpoint (EfficientNet-Lite0, 296 tensors) cost a small fraction of the
    /// budget: about 40 bytes of objects per byte of pickle, the budget allowing 128.
    #[test]
    fn a_real_checkpoint_is_far_within_budget() {
        let path = crate::models::zoo::home().join("weights/efficientnet_lite0.pth");
        // the README's test command fetches it first: a missing file fails the test rather than passing it unrun
        let b = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-assets.sh first)", path.display()));
        let mut pos = super::super::pth::LEGACY_MAGIC.len();
        for what in ["protocol", "system info", "state dict", "keys"] {
            let (len, spent) = dry_run(&b[pos..]).unwrap();
            eprintln!(
                "{what}: {len} bytes of pickle, {spent} bytes of objects ({:.1} per byte)",
                spent as f64 / len as f64
            );
            assert!(spent < 48 * len as u64 + (64 << 10), "{what}: {spent} bytes for {len}");
            pos += len;
        }
    }

    #[test]
    fn refuses_what_candle_would_choke_on() {
        let e = check(b"\x80\x02X\xff\xff\xff\xffabc.").unwrap_err();
        assert!(e.contains("4294967295") && e.contains("left"), "{e}");
        let e = check(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap_err();
        assert!(e.contains("9 bytes"), "{e}");
        let mut bomb = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            bomb.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        bomb.push(b'.');
        let e = check(&bomb).unwrap_err();
        assert!(e.contains("MiB"), "{e}");
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 1000));
        deep.push(b'.');
        let e = check(&deep).unwrap_err();
        assert!(e.contains("nested"), "{e}");
        assert!(check(b"\x80\x02").unwrap_err().contains("truncated"));
        assert!(check(b"\x80\x02\x95.").unwrap_err().contains("0x95"));
        assert!(check(b"\x80\x02t.").unwrap_err().contains("MARK"));
        assert!(check(b"\x80\x02h\x07.").unwrap_err().contains("memo"));
    }
}
