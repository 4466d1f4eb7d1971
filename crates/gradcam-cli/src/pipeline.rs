//! A folder run as a pipeline of three stages joined by bounded queues, so that the network never waits for a
//! photo to be decoded or a picture to be encoded:
//!
//! ```text
//! reader (1 thread)          network (this thread, rayon's pool)         writers (pool jobs)    emitter (1 thread)
//! decode + resize ──queue──▶ batches: compute_batch ─────────queue──▶ render + PNG + commit ──▶ in input order:
//!   (≤ READ_AHEAD inputs,      (a batch runs when full or when no          (each photo's files      report, manifest,
//!    ≤ PHOTO_BYTES of photos)   decoded input is waiting)                   as a set)                progress
//! ```
//!
//! Every photo held anywhere in the pipeline counts against one budget of decoded bytes, so memory does not
//! grow with the folder; outcomes reach the emitter out of order (a decoding error overtakes the photos
//! before it) and leave it in the inputs' order. A failure stays with its photo: a batch that fails is retried
//! one input at a time, a panic becomes that photo's error.

use crate::guarded;
use gradcam::explain::{self, Input, Namer, Options, Report};
use gradcam::image::ImageLimits;
use gradcam::labels::Labels;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The decoded photos the pipeline holds at once (queued, in a batch, being drawn): a photo over it runs alone.
pub const PHOTO_BYTES: usize = 256 << 20;

/// Decoded inputs waiting for the network, beyond one batch.
const READ_AHEAD: usize = 2;

/// Photos whose maps wait for their pictures.
const RENDER_QUEUE: usize = 2;

/// Finished outcomes waiting for the emitter (the report's writer).
const DONE_QUEUE: usize = 64;

/// What became of one input.
pub enum Outcome {
    Done(Box<Report>),
    Failed(String),
    /// Done by an earlier run (`--resume`): nothing was computed.
    Resumed,
}

/// Figures of a run, for `--stats`.
#[derive(Default)]
pub struct Stats {
    pub wall: Duration,
    /// Time in the network's passes.
    pub network: Duration,
    /// Time the network waited for a decoded input.
    pub starved: Duration,
    /// Time the network waited for room in the writers' queue.
    pub blocked: Duration,
    /// Inputs computed (not resumed).
    pub computed: usize,
}

pub struct Job {
    pub path: PathBuf,
    /// A ready tensor (`--input-tensor`), not an image.
    pub tensor: bool,
    /// Done by an earlier run: skipped.
    pub resumed: bool,
}

pub struct Setup<'a> {
    pub net: &'a gradcam::Network,
    pub labels: &'a Labels,
    pub opts: &'a Options,
    pub namer: &'a Namer,
    pub limits: ImageLimits,
    pub batch_size: usize,
    pub writers: usize,
}

/// How many writer jobs may be on the pool at once.
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn take(&self) {
        let mut f = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *f == 0 {
            f = self.freed.wait(f).unwrap_or_else(|p| p.into_inner());
        }
        *f -= 1;
    }
    fn give(&self) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.freed.notify_one();
    }
}

/// A budget of decoded bytes shared by the stages: taken when a photo is decoded, given back when its pictures
/// are written.
struct Budget {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until less than half the budget is held (before decoding: a large photo is not decoded while another
    /// is in flight).
    fn wait_room(&self) {
        let mut used = self.lock();
        while *used > PHOTO_BYTES / 2 {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Take `n` bytes: at once when they fit or nothing is held, else when enough is given back.
    fn take(&self, n: usize) {
        let mut used = self.lock();
        while *used != 0 && *used + n > PHOTO_BYTES {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
    }

    fn give(&self, n: usize) {
        let mut used = self.lock();
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// A decoded input on its way, or a failure on its way to the emitter.
enum Item {
    Input(usize, Box<Input>),
    Computed(usize, Box<Input>, Box<explain::Computed>),
    Failed(usize, String),
}

fn photo_bytes(i: &Input) -> usize {
    i.photo.as_raw().len()
}

fn decode(s: &Setup, job: &Job) -> gradcam::Result<Input> {
    if job.tensor {
        let input = Input::from_npy(&job.path, s.net, s.limits.max_pixels)?;
        let (_, _, th, tw) = input.tensor.dims4()?;
        gradcam::resources::check_memory(
            &format!("{}: a tensor of {th}x{tw}", job.path.display()),
            s.net.pass_bytes_estimate(1, th, tw)?,
            "give a smaller tensor (the model's input is the size it was trained at)",
        )?;
        Ok(input)
    } else {
        Input::from_image(&job.path, s.net, &s.limits)
    }
}

/// Run the jobs; `emit` gets every job's outcome in the jobs' order, on a thread of its own.
pub fn run(s: &Setup, jobs: &[Job], emit: impl FnMut(usize, Outcome) + Send) -> Stats {
    let start = Instant::now();
    let budget = Budget { used: Mutex::new(0), freed: Condvar::new() };
    let (in_tx, in_rx) = mpsc::sync_channel::<Item>(s.batch_size + READ_AHEAD);
    let (out_tx, out_rx) = mpsc::sync_channel::<Item>(RENDER_QUEUE);
    let out_rx = Mutex::new(out_rx);
    // bounded: a reader of the report that stalls (a full pipe) holds the pipeline back instead of letting
    // finished outcomes pile up in memory (the emitter needs nothing from the pool, so the writers' jobs that
    // wait here are freed as soon as it writes again)
    let (done_tx, done_rx) = mpsc::sync_channel::<(usize, Outcome)>(DONE_QUEUE);
    let mut stats = Stats::default();
    std::thread::scope(|sc| {
        let budget = &budget;
        sc.spawn(move || read(s, jobs, budget, in_tx));
        let writer_tx = done_tx.clone();
        sc.spawn(move || write(s, budget, out_rx, writer_tx));
        drop(done_tx);
        sc.spawn(move || emit_in_order(jobs, done_rx, emit));
        network(s, in_rx, out_tx, budget, &mut stats);
    });
    stats.wall = start.elapsed();
    stats
}

/// The reader: decode ahead, in order; the decoding itself a job on rayon's pool (as the writers', below),
/// this thread only waiting for it and for room in the queue.
fn read(s: &Setup, jobs: &[Job], budget: &Budget, in_tx: SyncSender<Item>) {
    rayon::in_place_scope(|rs| {
        for (k, job) in jobs.iter().enumerate().filter(|(_, j)| !j.resumed) {
            budget.wait_room();
            let (one_tx, one_rx) = mpsc::sync_channel::<Item>(1);
            rs.spawn(move |_| {
                let item = match guarded(|| decode(s, job)) {
                    Ok(input) => Item::Input(k, Box::new(input)),
                    Err(e) => Item::Failed(k, e.to_string()),
                };
                let _ = one_tx.send(item);
            });
            let item = one_rx.recv().unwrap_or_else(|_| Item::Failed(k, "internal error: no decoding".into()));
            // the budget is waited for here, never in the pool's job: a pool thread blocked on it could
            // be the one the network and the writers need to give it back (with one pool thread, a
            // large photo after others hung the run)
            if let Item::Input(_, input) = &item {
                budget.take(photo_bytes(input));
            }
            if in_tx.send(item).is_err() {
                break;
            }
        }
    })
}

/// The writers: pictures and files, each photo's as a set, drawn by jobs on rayon's pool (at most `writers` at
/// a time). There they run when a pool thread has nothing of the network's to do (a worker takes its own and
/// other workers' jobs before injected ones), so they fill the network's serial stretches; a writer thread of
/// its own preempted the network's threads instead, and a parallel loop waits for its slowest thread: 12% of
/// the cores sat idle in a ResNet-50 folder run.
fn write(s: &Setup, budget: &Budget, out_rx: Mutex<Receiver<Item>>, done_tx: SyncSender<(usize, Outcome)>) {
    let permits = Permits { free: Mutex::new(s.writers.max(1)), freed: Condvar::new() };
    let permits = &permits;
    rayon::in_place_scope(|rs| loop {
        let item = match out_rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(item) => item,
            Err(_) => break,
        };
        permits.take();
        let done_tx = done_tx.clone();
        rs.spawn(move |_| {
            let outcome = render_item(s, budget, item);
            permits.give();
            let _ = done_tx.send(outcome);
        });
    });
}

/// One input's pictures and files, from what the network made of it; its budget given back.
fn render_item(s: &Setup, budget: &Budget, item: Item) -> (usize, Outcome) {
    match item {
        Item::Computed(k, input, c) => {
            let r = guarded(|| explain::render(*c, &input, s.namer.prefix(k), s.labels, s.opts, s.namer));
            budget.give(photo_bytes(&input));
            drop(input);
            (k, r.map_or_else(|e| Outcome::Failed(e.to_string()), |r| Outcome::Done(Box::new(r))))
        }
        Item::Failed(k, msg) => (k, Outcome::Failed(msg)),
        Item::Input(k, input) => {
            budget.give(photo_bytes(&input));
            (k, Outcome::Failed("internal error: an input skipped the network".into()))
        }
    }
}

/// The emitter: outcomes in the inputs' order (a resumed job's as soon as its turn comes).
fn emit_in_order(jobs: &[Job], done_rx: Receiver<(usize, Outcome)>, mut emit: impl FnMut(usize, Outcome)) {
    let mut waiting: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut next = 0;
    let mut flush = |waiting: &mut BTreeMap<usize, Outcome>, next: &mut usize| {
        while *next < jobs.len() {
            if jobs[*next].resumed {
                emit(*next, Outcome::Resumed);
            } else if let Some(o) = waiting.remove(next) {
                emit(*next, o);
            } else {
                break;
            }
            *next += 1;
        }
    };
    flush(&mut waiting, &mut next);
    for (k, o) in done_rx {
        waiting.insert(k, o);
        flush(&mut waiting, &mut next);
    }
}

/// Hand an item to the writers, counting the time waited for room; the writers gone (they only stop when this
/// sender does), give its budget back anyway.
fn send(tx: &SyncSender<Item>, item: Item, budget: &Budget, stats: &mut Stats) {
    let t = Instant::now();
    let ok = tx.send(item);
    stats.blocked += t.elapsed();
    if let Err(mpsc::SendError(Item::Computed(_, i, _) | Item::Input(_, i))) = ok {
        budget.give(photo_bytes(&i));
    }
}

/// What the network made of one input, or why it failed.
type PassResult = Result<(usize, Box<Input>, explain::Computed), (usize, Box<Input>, String)>;

/// The network's pass over a batch: each input's result. One input's failure must not fail the others: a batch
/// that fails is run again each input alone, each its own result.
fn compute(s: &Setup, items: Vec<(usize, Box<Input>)>) -> Vec<PassResult> {
    let compute = |items: &[(usize, Box<Input>)]| {
        let inputs: Vec<&Input> = items.iter().map(|(_, i)| i.as_ref()).collect();
        guarded(|| explain::compute_batch(s.net, s.labels, &inputs, s.opts))
    };
    let mut out = vec![];
    match compute(&items) {
        Ok(cs) => out.extend(items.into_iter().zip(cs).map(|((k, i), c)| Ok((k, i, c)))),
        Err(_) if items.len() > 1 => {
            for one in items {
                let r = compute(std::slice::from_ref(&one));
                let (k, i) = one;
                match r {
                    Ok(mut cs) if cs.len() == 1 => out.push(Ok((k, i, cs.remove(0)))),
                    Ok(_) => out.push(Err((k, i, "internal error: no result".to_string()))),
                    Err(e) => out.push(Err((k, i, e.to_string()))),
                }
            }
        }
        Err(e) => out.extend(items.into_iter().map(|(k, i)| Err((k, i, e.to_string())))),
    }
    out
}

/// Run the batch (emptying it) and hand its results to the writers.
fn run_batch(
    s: &Setup,
    batch: &mut Vec<(usize, Box<Input>)>,
    tx: &SyncSender<Item>,
    budget: &Budget,
    stats: &mut Stats,
) {
    if batch.is_empty() {
        return;
    }
    let t = Instant::now();
    let out = compute(s, std::mem::take(batch));
    stats.network += t.elapsed();
    stats.computed += out.len();
    for r in out {
        match r {
            Ok((k, i, c)) => send(tx, Item::Computed(k, i, Box::new(c)), budget, stats),
            Err((k, i, msg)) => {
                budget.give(photo_bytes(&i));
                send(tx, Item::Failed(k, msg), budget, stats);
            }
        }
    }
}

/// The network's stage: batches of one tensor size, run when full or when no decoded input is waiting (the
/// network never waits for a batch to fill while it could work, and never holds a partial batch while the
/// reader waits for the budget).
fn network(s: &Setup, rx: Receiver<Item>, tx: SyncSender<Item>, budget: &Budget, stats: &mut Stats) {
    let mut batch: Vec<(usize, Box<Input>)> = vec![];
    loop {
        let item = if batch.is_empty() {
            let t = Instant::now();
            let r = rx.recv();
            stats.starved += t.elapsed();
            match r {
                Ok(i) => i,
                Err(_) => break,
            }
        } else {
            match rx.try_recv() {
                Ok(i) => i,
                Err(TryRecvError::Empty) => {
                    run_batch(s, &mut batch, &tx, budget, stats);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        };
        match item {
            Item::Input(k, input) => {
                // a batch holds inputs of one size, and photos of at most PHOTO_BYTES together
                let held: usize = batch.iter().map(|(_, b)| photo_bytes(b)).sum();
                if batch.first().is_some_and(|(_, b)| b.tensor.dims() != input.tensor.dims())
                    || (!batch.is_empty() && held + photo_bytes(&input) > PHOTO_BYTES)
                {
                    run_batch(s, &mut batch, &tx, budget, stats);
                }
                batch.push((k, input));
                if batch.len() >= s.batch_size {
                    run_batch(s, &mut batch, &tx, budget, stats);
                }
            }
            other => send(&tx, other, budget, stats),
        }
    }
    run_batch(s, &mut batch, &tx, budget, stats);
}
