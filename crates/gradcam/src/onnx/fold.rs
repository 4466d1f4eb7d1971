//! Constant folding: the ops of an ONNX graph whose inputs are all known before an image is seen (weights,
//! `Constant` values, the shapes of values for the model's input size) are evaluated once at import, forward
//! only. This removes the shape arithmetic exporters write (Shape → Gather → Unsqueeze → Concat → Reshape) and
//! input-independent subgraphs (Swin's attention masks from Range, Equal, Where, ScatterND, …).
//!
//! Values are held as [`Arr`]: f64 numbers with their ONNX kind (float, integer, bool). A single f32 operation
//! computed in f64 and rounded once gives the f32 result IEEE arithmetic gives.

use super::attrs::Attrs;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Int,
    Bool,
}

/// A constant: row-major values and dims.
#[derive(Clone, Debug)]
pub(crate) struct Arr {
    pub dims: Vec<usize>,
    pub v: Vec<f64>,
    pub kind: Kind,
}

impl Arr {
    pub fn new(dims: Vec<usize>, v: Vec<f64>, kind: Kind) -> Self {
        Arr { dims, v, kind }
    }
    pub fn ints(v: &[i64]) -> Self {
        Arr { dims: vec![v.len()], v: v.iter().map(|x| *x as f64).collect(), kind: Kind::Int }
    }
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let kind = match t.dtype() {
            DType::U8 => Kind::Bool,
            DType::I64 | DType::U32 => Kind::Int,
            _ => Kind::Float,
        };
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(Arr { dims: t.dims().to_vec(), v, kind })
    }
    pub fn to_tensor(&self) -> Result<Tensor> {
        let dev = Device::Cpu;
        Ok(match self.kind {
            Kind::Float => {
                Tensor::from_vec(self.v.iter().map(|x| *x as f32).collect::<Vec<_>>(), &self.dims[..], &dev)?
            }
            Kind::Int => Tensor::from_vec(self.v.iter().map(|x| *x as i64).collect::<Vec<_>>(), &self.dims[..], &dev)?,
            Kind::Bool => {
                Tensor::from_vec(self.v.iter().map(|x| (*x != 0.0) as u8).collect::<Vec<_>>(), &self.dims[..], &dev)?
            }
        })
    }
    pub fn as_ints(&self) -> Vec<i64> {
        self.v.iter().map(|x| *x as i64).collect()
    }
    fn len(&self) -> usize {
        self.v.len()
    }
}

/// The most values a folded constant may hold (64 Mi: 512 MB as f64): a hostile shape is refused, not allocated.
pub(crate) const MAX_VALUES: usize = 1 << 26;

/// `dims`' element count, if within [`MAX_VALUES`].
pub(crate) fn checked_count(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        // (a dimension alone too: `[0, 2^62]` holds nothing, but later products of its dims overflow)
        .filter(|n| *n <= MAX_VALUES && dims.iter().all(|d| *d <= MAX_VALUES))
        .ok_or_else(|| Error::invalid(format!("{what}: shape {dims:?} has more than {MAX_VALUES} values")))
}

/// A permutation of `0..rank` (Transpose's `perm`), checked.
pub(crate) fn permutation(perm: &[i64], rank: usize) -> Result<Vec<usize>> {
    let p: Vec<usize> = perm.iter().map(|v| axis(*v, rank, "Transpose")).collect::<Result<_>>()?;
    let mut seen = vec![false; rank];
    for &i in &p {
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::invalid(format!("Transpose: perm {perm:?} repeats axis {i}")));
        }
    }
    if p.len() != rank {
        return Err(Error::invalid(format!(
            "Transpose: perm {perm:?} has {} axes for a value of rank {rank}; expected a permutation of 0..{rank}",
            p.len()
        )));
    }
    Ok(p)
}

/// Reduction axes, checked in range and not repeated.
pub(crate) fn reduce_axes(axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>> {
    let mut ax: Vec<usize> = axes.iter().map(|v| axis(*v, rank, what)).collect::<Result<_>>()?;
    ax.sort();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(format!("{what}: axes {axes:?} repeat an axis")));
    }
    Ok(ax)
}

/// The starts, ends, axes and steps of a Slice, checked to have one entry per sliced axis.
pub(crate) fn slice_args(
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Result<Vec<(i64, i64, i64, i64)>> {
    let n = starts.len();
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(Error::invalid(format!(
            "Slice: starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?}: expected the same number of \
             each"
        )));
    }
    Ok((0..n).map(|k| (starts[k], ends[k], axes[k], steps[k])).collect())
}

/// The one value of a scalar input (Range's start, limit and delta, Trilu's k).
fn scalar(a: &Arr, what: &str) -> Result<f64> {
    match a.v[..] {
        [v] => Ok(v),
        _ => Err(Error::invalid(format!("{what} of shape {:?}: expected one value", a.dims))),
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// NumPy's broadcast of two shapes.
pub(crate) fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::invalid(format!("shapes {a:?} and {b:?} do not broadcast"))),
        };
    }
    Ok(out)
}

/// The values of `a` broadcast to `dims`.
fn expand_to(a: &Arr, dims: &[usize]) -> Vec<f64> {
    let n = dims.len();
    let st = strides(&a.dims);
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; n];
    for _ in 0..total {
        let mut off = 0;
        for (k, &i) in idx.iter().enumerate() {
            let j = k as isize - (n as isize - a.dims.len() as isize);
            if j >= 0 {
                let j = j as usize;
                if a.dims[j] != 1 {
                    off += i * st[j];
                }
            }
        }
        out.push(a.v[off]);
        for k in (0..n).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

fn zip(a: &Arr, b: &Arr, kind: Kind, f: impl Fn(f64, f64) -> f64) -> Result<Arr> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let (x, y) = (expand_to(a, &dims), expand_to(b, &dims));
    Ok(Arr::new(dims, x.iter().zip(&y).map(|(p, q)| f(*p, *q)).collect(), kind))
}

fn num_kind(a: &Arr, b: &Arr) -> Kind {
    if a.kind == Kind::Float || b.kind == Kind::Float {
        Kind::Float
    } else {
        Kind::Int
    }
}

/// Round a float result to f32 (the model's precision) or keep an integer.
fn settle(a: Arr) -> Arr {
    match a.kind {
        Kind::Float => Arr { v: a.v.iter().map(|x| *x as f32 as f64).collect(), ..a },
        _ => a,
    }
}

pub(crate) fn axis(a: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    let x = if a < 0 { a + r } else { a };
    if !(0..r).contains(&x) {
        return Err(Error::invalid(format!("{what}: axis {a} is out of range for rank {rank}")));
    }
    Ok(x as usize)
}

pub(crate) fn transpose(a: &Arr, perm: &[usize]) -> Arr {
    let dims: Vec<usize> = perm.iter().map(|&p| a.dims[p]).collect();
    let st = strides(&a.dims);
    let total = a.len();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..total {
        let off: usize = idx.iter().zip(perm).map(|(i, p)| i * st[*p]).sum();
        out.push(a.v[off]);
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Arr::new(dims, out, a.kind)
}

/// `a` along `ax` at `idx` (each index already in range).
fn take(a: &Arr, ax: usize, idx: &[usize]) -> Arr {
    let outer: usize = a.dims[..ax].iter().product();
    let inner: usize = a.dims[ax + 1..].iter().product();
    let d = a.dims[ax];
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let s = (o * d + i) * inner;
            out.extend_from_slice(&a.v[s..s + inner]);
        }
    }
    let mut dims = a.dims.clone();
    dims[ax] = idx.len();
    Arr::new(dims, out, a.kind)
}

/// ONNX Slice's indices along one axis of length `d`: start, end (clamped as the spec says), step.
pub(crate) fn slice_indices(d: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>> {
    if step == 0 {
        return Err(Error::invalid("Slice: step 0".to_string()));
    }
    let d = d as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (mut s, mut e) = (fix(start), fix(end));
    let mut out = vec![];
    if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    } else {
        s = s.clamp(-1, d - 1);
        e = e.clamp(-1, d - 1);
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    }
    Ok(out)
}

fn concat(xs: &[Arr], ax: usize) -> Result<Arr> {
    let first = &xs[0];
    let outer: usize = first.dims[..ax].iter().product();
    let mut dims = first.dims.clone();
    dims[ax] = xs.iter().map(|x| x.dims[ax]).sum();
    for x in xs {
        if x.dims.len() != first.dims.len() || x.dims.iter().enumerate().any(|(i, d)| i != ax && *d != first.dims[i]) {
            return Err(Error::invalid(format!(
                "Concat: shapes {:?} and {:?} differ off axis {ax}",
                first.dims, x.dims
            )));
        }
    }
    let kind = if xs.iter().any(|x| x.kind == Kind::Float) { Kind::Float } else { first.kind };
    let mut out = vec![];
    for o in 0..outer {
        for x in xs {
            let chunk: usize = x.dims[ax..].iter().product();
            out.extend_from_slice(&x.v[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Arr::new(dims, out, kind))
}

/// Reshape's target dims: 0 copies the input's dim (unless `allowzero`), -1 is inferred.
pub(crate) fn reshape_dims(input: &[usize], shape: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = vec![];
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Error::invalid(format!(
                    "Reshape: shape {shape:?} copies dimension {i} of an input of rank {}",
                    input.len()
                ))
            })?),
            s if s >= 0 => out.push(s as usize),
            _ => return Err(Error::invalid(format!("Reshape: shape {shape:?} is not valid"))),
        }
    }
    let known = checked_count(&out, "Reshape")
        .map_err(|_| Error::invalid(format!("Reshape: {input:?} ({total} values) cannot be reshaped to {shape:?}")))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::invalid(format!("Reshape: {input:?} cannot be reshaped to {shape:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(Error::invalid(format!("Reshape: {input:?} ({total} values) cannot be reshaped to {shape:?}")));
    }
    Ok(out)
}

/// Unsqueeze's output dims.
pub(crate) fn unsqueeze_dims(input: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let r = input.len() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|a| axis(*a, r, "Unsqueeze")).collect::<Result<_>>()?;
    ax.sort();
    let mut out = vec![];
    let mut it = input.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().ok_or_else(|| Error::invalid("Unsqueeze: repeated axes"))?);
        }
    }
    Ok(out)
}

/// Squeeze's output dims (all 1s when `axes` is empty).
pub(crate) fn squeeze_dims(input: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let ax: Vec<usize> = axes.iter().map(|a| axis(*a, input.len(), "Squeeze")).collect::<Result<_>>()?;
    for &a in &ax {
        if input[a] != 1 {
            return Err(Error::invalid(format!("Squeeze: dimension {a} of {input:?} is not 1")));
        }
    }
    Ok(input
        .iter()
        .enumerate()
        .filter(|(i, d)| if ax.is_empty() { **d != 1 } else { !ax.contains(i) })
        .map(|(_, d)| *d)
        .collect())
}

fn reduce(a: &Arr, axes: &[usize], keep: bool, f: impl Fn(&[f64]) -> f64) -> Arr {
    let rank = a.dims.len();
    let mut perm: Vec<usize> = (0..rank).filter(|i| !axes.contains(i)).collect();
    perm.extend(axes);
    let t = transpose(a, &perm);
    let inner: usize = axes.iter().map(|&i| a.dims[i]).product();
    let v: Vec<f64> = if inner == 0 { vec![] } else { t.v.chunks(inner).map(&f).collect() };
    let dims: Vec<usize> =
        (0..rank).filter_map(|i| if axes.contains(&i) { keep.then_some(1) } else { Some(a.dims[i]) }).collect();
    Arr::new(dims, v, a.kind)
}

/// The op types this module folds when all their inputs are constants (besides those [`super::lower`] also
/// runs on images).
#[rustfmt::skip]
pub(crate) const FOLD_ONLY: &[&str] = &[
    "Shape", "Size", "ConstantOfShape", "Cast", "CastLike", "Range", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Not", "And", "Or", "Xor", "Where", "ScatterND", "Mod", "Floor", "Ceil", "Min", "Max", "Tile",
    "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "Sign", "Trilu", "Log",
];

/// Evaluate `op` on constant inputs (`None`: an optional input left out).
pub(crate) fn eval(op: &str, a: &Attrs, ins: &[Option<Arr>]) -> Result<Vec<Arr>> {
    let get = |i: usize| -> Result<&Arr> {
        ins.get(i).and_then(|x| x.as_ref()).ok_or_else(|| Error::invalid(format!("{op}: input {i} is missing")))
    };
    let opt = |i: usize| ins.get(i).and_then(|x| x.as_ref());
    let one = |x: Arr| Ok(vec![settle(x)]);
    let bin = |kind: Option<Kind>, f: &dyn Fn(f64, f64) -> f64| -> Result<Vec<Arr>> {
        let (x, y) = (get(0)?, get(1)?);
        let k = kind.unwrap_or_else(|| num_kind(x, y));
        one(zip(x, y, k, f)?)
    };
    let un = |f: &dyn Fn(f64) -> f64| -> Result<Vec<Arr>> {
        let x = get(0)?;
        one(Arr::new(x.dims.clone(), x.v.iter().map(|v| f(*v)).collect(), x.kind))
    };
    let b = |c: bool| c as i64 as f64;
    match op {
        "Identity" | "Dropout" => Ok(vec![get(0)?.clone()]),
        "Constant" => Err(Error::invalid("Constant is read by the importer")),
        "Cast" | "CastLike" => {
            let x = get(0)?;
            let to = if op == "Cast" {
                a.int("to", 1)
            } else {
                match get(1)?.kind {
                    Kind::Float => 1,
                    Kind::Int => 7,
                    Kind::Bool => 9,
                }
            };
            let kind = match to {
                1 | 10 | 11 | 16 => Kind::Float,
                9 => Kind::Bool,
                2..=7 | 12 | 13 => Kind::Int,
                _ => {
                    return Err(Error::invalid(format!(
                        "Cast to data type {to}: gradcam folds casts to float, integer and bool types"
                    )))
                }
            };
            let v = match kind {
                Kind::Bool => x.v.iter().map(|v| b(*v != 0.0)).collect(),
                Kind::Int => x.v.iter().map(|v| v.trunc()).collect(),
                Kind::Float => x.v.clone(),
            };
            one(Arr::new(x.dims.clone(), v, kind))
        }
        "Shape" => {
            let x = get(0)?;
            Ok(vec![shape_of(&x.dims, a)])
        }
        "Size" => Ok(vec![Arr::new(vec![], vec![get(0)?.len() as f64], Kind::Int)]),
        "ConstantOfShape" => {
            let dims: Vec<usize> = get(0)?.as_ints().iter().map(|d| (*d).max(0) as usize).collect();
            checked_count(&dims, op)?;
            let (val, kind) = match a.tensor("value")? {
                Some(t) => {
                    let t = Arr::from_tensor(&t)?;
                    (t.v.first().copied().unwrap_or(0.0), t.kind)
                }
                None => (0.0, Kind::Float),
            };
            let n = dims.iter().product();
            Ok(vec![Arr::new(dims, vec![val; n], kind)])
        }
        "Add" => bin(None, &|x, y| x + y),
        "Sub" => bin(None, &|x, y| x - y),
        "Mul" => bin(None, &|x, y| x * y),
        "Div" => {
            let k = num_kind(get(0)?, get(1)?);
            bin(None, &move |x, y| {
                if k == Kind::Int {
                    if y == 0.0 {
                        0.0
                    } else {
                        (x / y).trunc()
                    }
                } else {
                    x / y
                }
            })
        }
        "Pow" => {
            let k = get(0)?.kind;
            bin(Some(k), &|x, y| x.powf(y))
        }
        "Mod" => {
            let fmod = a.int("fmod", 0) == 1;
            bin(None, &move |x, y| {
                if y == 0.0 {
                    0.0
                } else if fmod {
                    x % y
                } else {
                    let r = x % y;
                    if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                        r + y
                    } else {
                        r
                    }
                }
            })
        }
        "Equal" => bin(Some(Kind::Bool), &|x, y| b(x == y)),
        "Less" => bin(Some(Kind::Bool), &|x, y| b(x < y)),
        "Greater" => bin(Some(Kind::Bool), &|x, y| b(x > y)),
        "LessOrEqual" => bin(Some(Kind::Bool), &|x, y| b(x <= y)),
        "GreaterOrEqual" => bin(Some(Kind::Bool), &|x, y| b(x >= y)),
        "And" => bin(Some(Kind::Bool), &|x, y| b(x != 0.0 && y != 0.0)),
        "Or" => bin(Some(Kind::Bool), &|x, y| b(x != 0.0 || y != 0.0)),
        "Xor" => bin(Some(Kind::Bool), &|x, y| b((x != 0.0) != (y != 0.0))),
        "Min" | "Max" => {
            let mut acc = get(0)?.clone();
            for x in ins.iter().skip(1).flatten() {
                let k = num_kind(&acc, x);
                acc = if op == "Min" { zip(&acc, x, k, f64::min)? } else { zip(&acc, x, k, f64::max)? };
            }
            one(acc)
        }
        "Not" => {
            let x = get(0)?;
            Ok(vec![Arr::new(x.dims.clone(), x.v.iter().map(|v| b(*v == 0.0)).collect(), Kind::Bool)])
        }
        "Neg" => un(&|x| -x),
        "Abs" => un(&f64::abs),
        "Sqrt" => un(&f64::sqrt),
        "Exp" => un(&f64::exp),
        "Floor" => un(&f64::floor),
        "Ceil" => un(&f64::ceil),
        "Sign" => un(&|x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }),
        "Reciprocal" => un(&|x| 1.0 / x),
        "Relu" => un(&|x| x.max(0.0)),
        "Sigmoid" => un(&|x| 1.0 / (1.0 + (-x).exp())),
        "Tanh" => un(&f64::tanh),
        "Erf" => un(&|x| libm::erf(x)),
        "Log" => un(&f64::ln),
        "Gelu" => un(&|x| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))),
        "HardSwish" => un(&|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        "HardSigmoid" => {
            let (al, be) = (a.float("alpha", 0.2) as f64, a.float("beta", 0.5) as f64);
            un(&move |x| (al * x + be).clamp(0.0, 1.0))
        }
        "LeakyRelu" => {
            let al = a.float("alpha", 0.01) as f64;
            un(&move |x| if x < 0.0 { al * x } else { x })
        }
        "Clip" => {
            let bound = |i: usize, attr: &str, d: f32| -> f64 {
                opt(i).and_then(|t| t.v.first().copied()).unwrap_or(a.float(attr, d) as f64)
            };
            let (lo, hi) = (bound(1, "min", f32::NEG_INFINITY), bound(2, "max", f32::INFINITY));
            un(&move |x| x.max(lo).min(hi))
        }
        "Softmax" => {
            let x = get(0)?;
            let ax = axis(a.int("axis", -1), x.dims.len(), op)?;
            let inner: usize = x.dims[ax + 1..].iter().product();
            let d = x.dims[ax];
            let mut v = x.v.clone();
            for o in 0..x.v.len() / (d * inner).max(1) {
                for i in 0..inner {
                    let idx = |j: usize| (o * d + j) * inner + i;
                    let m = (0..d).map(|j| x.v[idx(j)]).fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = (0..d).map(|j| (x.v[idx(j)] - m).exp()).sum();
                    for j in 0..d {
                        v[idx(j)] = (x.v[idx(j)] - m).exp() / s;
                    }
                }
            }
            one(Arr::new(x.dims.clone(), v, x.kind))
        }
        "Where" => {
            let (c, x, y) = (get(0)?, get(1)?, get(2)?);
            let dims = broadcast_dims(&broadcast_dims(&c.dims, &x.dims)?, &y.dims)?;
            let (cv, xv, yv) = (expand_to(c, &dims), expand_to(x, &dims), expand_to(y, &dims));
            let v = cv.iter().zip(xv.iter().zip(&yv)).map(|(c, (x, y))| if *c != 0.0 { *x } else { *y }).collect();
            one(Arr::new(dims, v, num_kind(x, y)))
        }
        "Range" => {
            let (s, l, d) =
                (scalar(get(0)?, "Range start")?, scalar(get(1)?, "Range limit")?, scalar(get(2)?, "Range delta")?);
            if d == 0.0 {
                return Err(Error::invalid("Range: delta 0"));
            }
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            checked_count(&[n], op)?;
            one(Arr::new(vec![n], (0..n).map(|i| s + i as f64 * d).collect(), get(0)?.kind))
        }
        "Unsqueeze" => {
            let x = get(0)?;
            let axes = match opt(1) {
                Some(t) => t.as_ints(),
                None => a.ints("axes").unwrap_or_default(),
            };
            Ok(vec![Arr { dims: unsqueeze_dims(&x.dims, &axes)?, ..x.clone() }])
        }
        "Squeeze" => {
            let x = get(0)?;
            let axes = match opt(1) {
                Some(t) => t.as_ints(),
                None => a.ints("axes").unwrap_or_default(),
            };
            Ok(vec![Arr { dims: squeeze_dims(&x.dims, &axes)?, ..x.clone() }])
        }
        "Reshape" => {
            let x = get(0)?;
            let dims = reshape_dims(&x.dims, &get(1)?.as_ints(), a.int("allowzero", 0) == 1)?;
            Ok(vec![Arr { dims, ..x.clone() }])
        }
        "Flatten" => {
            let x = get(0)?;
            let ax = axis(a.int("axis", 1), x.dims.len() + 1, "Flatten")?;
            let dims = vec![x.dims[..ax].iter().product(), x.dims[ax..].iter().product()];
            Ok(vec![Arr { dims, ..x.clone() }])
        }
        "Transpose" => {
            let x = get(0)?;
            let perm = match a.ints("perm") {
                Some(p) => permutation(&p, x.dims.len())?,
                None => (0..x.dims.len()).rev().collect(),
            };
            Ok(vec![transpose(x, &perm)])
        }
        "Concat" => {
            let xs: Vec<Arr> = ins.iter().flatten().cloned().collect();
            if xs.is_empty() {
                return Err(Error::invalid("Concat: no inputs"));
            }
            let ax = axis(a.int("axis", 0), xs[0].dims.len(), "Concat")?;
            one(concat(&xs, ax)?)
        }
        "Gather" => {
            let (x, i) = (get(0)?, get(1)?);
            let ax = axis(a.int("axis", 0), x.dims.len(), "Gather")?;
            let d = x.dims[ax] as i64;
            let idx = i
                .as_ints()
                .iter()
                .map(|&k| {
                    let k = if k < 0 { k.saturating_add(d) } else { k };
                    if (0..d).contains(&k) {
                        Ok(k as usize)
                    } else {
                        Err(Error::invalid(format!("Gather: index {k} out of range for dimension {d}")))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let t = take(x, ax, &idx);
            let mut dims = x.dims[..ax].to_vec();
            dims.extend(&i.dims);
            dims.extend(&x.dims[ax + 1..]);
            Ok(vec![Arr { dims, ..t }])
        }
        "Slice" => {
            let x = get(0)?;
            let (starts, ends) = match opt(1) {
                Some(s) => (s.as_ints(), get(2)?.as_ints()),
                None => (a.ints("starts").unwrap_or_default(), a.ints("ends").unwrap_or_default()),
            };
            let axes = match (opt(3), a.ints("axes")) {
                (Some(t), _) => t.as_ints(),
                (None, Some(v)) => v,
                _ => (0..starts.len() as i64).collect(),
            };
            let steps = opt(4).map(|t| t.as_ints()).unwrap_or_else(|| vec![1; starts.len()]);
            let mut cur = x.clone();
            for (start, end, ax, step) in slice_args(&starts, &ends, &axes, &steps)? {
                let ax = axis(ax, x.dims.len(), "Slice")?;
                let idx = slice_indices(cur.dims[ax], start, end, step)?;
                cur = take(&cur, ax, &idx);
            }
            Ok(vec![cur])
        }
        "Split" => {
            let x = get(0)?;
            let ax = axis(a.int("axis", 0), x.dims.len(), "Split")?;
            let sizes = split_sizes(
                x.dims[ax],
                opt(1).map(|t| t.as_ints()).or(a.ints("split")),
                a.outputs(),
                a.int("num_outputs", 0),
            )?;
            let mut at = 0;
            let mut out = vec![];
            for s in sizes {
                out.push(take(x, ax, &(at..at + s).collect::<Vec<_>>()));
                at += s;
            }
            Ok(out)
        }
        "Expand" => {
            let x = get(0)?;
            let shape: Vec<usize> = get(1)?.as_ints().iter().map(|d| (*d).max(0) as usize).collect();
            let dims = broadcast_dims(&x.dims, &shape)?;
            checked_count(&dims, op)?;
            Ok(vec![Arr::new(dims.clone(), expand_to(x, &dims), x.kind)])
        }
        "Tile" => {
            let x = get(0)?;
            let reps = get(1)?.as_ints();
            if reps.len() != x.dims.len() || reps.iter().any(|r| *r < 0) {
                return Err(Error::invalid(format!(
                    "Tile: repeats {reps:?} for a value of shape {:?}; expected one non-negative count per axis",
                    x.dims
                )));
            }
            let out = x
                .dims
                .iter()
                .zip(&reps)
                .map(|(d, r)| d.checked_mul(*r as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| Error::invalid(format!("Tile: {:?} repeated {reps:?} times is too large", x.dims)))?;
            checked_count(&out, op)?;
            let mut cur = x.clone();
            for (ax, &r) in reps.iter().enumerate() {
                let d = cur.dims[ax];
                // (d·r is bounded above; an empty axis stays empty however often it is repeated)
                let idx: Vec<usize> = if d == 0 { vec![] } else { (0..r as usize).flat_map(|_| 0..d).collect() };
                cur = take(&cur, ax, &idx);
            }
            Ok(vec![cur])
        }
        "ScatterND" => {
            let (x, idx, upd) = (get(0)?, get(1)?, get(2)?);
            let k = *idx.dims.last().unwrap_or(&0);
            if k == 0 || k > x.dims.len() {
                return Err(Error::invalid(format!(
                    "ScatterND: indices of shape {:?} into data of shape {:?}; expected tuples of 1 to {} indices",
                    idx.dims,
                    x.dims,
                    x.dims.len()
                )));
            }
            let st = strides(&x.dims);
            let inner: usize = x.dims[k..].iter().product();
            let tuples = idx.len() / k;
            if upd.len() != tuples * inner {
                return Err(Error::invalid(format!(
                    "ScatterND: updates of shape {:?} for {tuples} indices into data of shape {:?}",
                    upd.dims, x.dims
                )));
            }
            let mut out = x.clone();
            let ix = idx.as_ints();
            for (j, t) in ix.chunks(k.max(1)).enumerate() {
                let mut off = 0;
                for (p, &v) in t.iter().enumerate() {
                    let d = x.dims[p] as i64;
                    let v = if v < 0 { v.saturating_add(d) } else { v };
                    if !(0..d).contains(&v) {
                        return Err(Error::invalid(format!(
                            "ScatterND: index {v} out of range for a dimension of {d}"
                        )));
                    }
                    off += v as usize * st[p];
                }
                out.v[off..off + inner].copy_from_slice(&upd.v[j * inner..(j + 1) * inner]);
            }
            Ok(vec![out])
        }
        "ReduceMean" | "ReduceSum" | "ReduceProd" | "ReduceMax" | "ReduceMin" => {
            let x = get(0)?;
            let axes = match (opt(1), a.ints("axes")) {
                (Some(t), _) => t.as_ints(),
                (None, Some(v)) => v,
                _ => vec![],
            };
            let mut ax = reduce_axes(&axes, x.dims.len(), op)?;
            if ax.is_empty() {
                if a.int("noop_with_empty_axes", 0) == 1 {
                    return Ok(vec![x.clone()]);
                }
                ax = (0..x.dims.len()).collect();
            }
            let keep = a.int("keepdims", 1) == 1;
            let r = match op {
                "ReduceMean" => reduce(x, &ax, keep, |v| v.iter().sum::<f64>() / v.len() as f64),
                "ReduceSum" => reduce(x, &ax, keep, |v| v.iter().sum()),
                "ReduceProd" => reduce(x, &ax, keep, |v| v.iter().product()),
                "ReduceMax" => reduce(x, &ax, keep, |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                _ => reduce(x, &ax, keep, |v| v.iter().copied().fold(f64::INFINITY, f64::min)),
            };
            one(r)
        }
        "MatMul" => {
            // (…, M, K) × (…, K, N), the leading dimensions broadcast; a 1-D operand as NumPy treats it
            let (x, y) = (get(0)?, get(1)?);
            let x2 = if x.dims.len() == 1 { Arr { dims: vec![1, x.dims[0]], ..x.clone() } } else { x.clone() };
            let y2 = if y.dims.len() == 1 { Arr { dims: vec![y.dims[0], 1], ..y.clone() } } else { y.clone() };
            let (ra, rb) = (x2.dims.len(), y2.dims.len());
            let (m, k, k2, n) = (x2.dims[ra - 2], x2.dims[ra - 1], y2.dims[rb - 2], y2.dims[rb - 1]);
            if k != k2 {
                return Err(Error::invalid(format!("MatMul of constants {:?} x {:?}", x.dims, y.dims)));
            }
            let batch = broadcast_dims(&x2.dims[..ra - 2], &y2.dims[..rb - 2])?;
            let nb: usize = batch.iter().product();
            checked_count(&[nb, m, n], op)?;
            let xa = expand_to(&x2, &[batch.clone(), vec![m, k]].concat());
            let ya = expand_to(&y2, &[batch.clone(), vec![k, n]].concat());
            let mut v = vec![0.0; nb * m * n];
            for b in 0..nb {
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = 0f32;
                        for p in 0..k {
                            acc += xa[(b * m + i) * k + p] as f32 * ya[(b * k + p) * n + j] as f32;
                        }
                        v[(b * m + i) * n + j] = acc as f64;
                    }
                }
            }
            let mut dims = batch;
            if x.dims.len() > 1 {
                dims.push(m);
            }
            if y.dims.len() > 1 {
                dims.push(n);
            }
            one(Arr::new(dims, v, num_kind(x, y)))
        }
        "Trilu" => {
            let x = get(0)?;
            let kk = opt(1).map(|t| scalar(t, "Trilu k")).transpose()?.unwrap_or(0.0) as i64;
            let upper = a.int("upper", 1) == 1;
            let r = x.dims.len();
            if r < 2 {
                return Err(Error::invalid("Trilu: rank < 2"));
            }
            let (h, w) = (x.dims[r - 2], x.dims[r - 1]);
            let mut out = x.clone();
            for (i, v) in out.v.iter_mut().enumerate() {
                let (row, col) = (((i / w) % h) as i64, (i % w) as i64);
                let keep = if upper { col - row >= kk } else { col - row <= kk };
                if !keep {
                    *v = 0.0;
                }
            }
            Ok(vec![out])
        }
        _ => Err(Error::invalid(format!("{op}: gradcam cannot fold this op"))),
    }
}

/// Shape's output for a value of `dims` (with opset 15's `start`/`end`).
pub(crate) fn shape_of(dims: &[usize], a: &Attrs) -> Arr {
    let r = dims.len() as i64;
    let fix = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let (s, e) = (fix(a.int("start", 0)), fix(a.int("end", r)));
    let d: Vec<i64> = if s < e { dims[s..e].iter().map(|d| *d as i64).collect() } else { vec![] };
    Arr::ints(&d)
}

/// The sizes of Split's parts along an axis of length `d`.
pub(crate) fn split_sizes(d: usize, split: Option<Vec<i64>>, outputs: usize, num_outputs: i64) -> Result<Vec<usize>> {
    if let Some(s) = split.filter(|s| !s.is_empty()) {
        let parts: Vec<usize> = s.iter().map(|v| (*v).max(0) as usize).collect();
        if s.iter().any(|v| *v < 0) || parts.iter().try_fold(0usize, |a, p| a.checked_add(*p)) != Some(d) {
            return Err(Error::invalid(format!("Split: parts {s:?}: expected non-negative sizes adding up to {d}")));
        }
        return Ok(parts);
    }
    if num_outputs > 0 && num_outputs as usize != outputs {
        return Err(Error::invalid(format!("Split: num_outputs {num_outputs} for a node of {outputs} outputs")));
    }
    let n = outputs.max(1);
    let each = d.div_ceil(n);
    Ok((0..n).map(|i| each.min(d.saturating_sub(i * each))).collect())
}
