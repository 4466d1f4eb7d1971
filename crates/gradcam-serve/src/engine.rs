//! The workers: a fixed number of threads, each running one request's network pass at a time (the passes
//! themselves run on the library's rayon pool, never on the async runtime's threads), fed by a bounded queue.
//!
//! A request takes a permit before its body is read ([`Engine::admit`]) and keeps it until its answer has been
//! sent; there are `workers + queue` permits, so at most that many bodies (and answers) are held in memory and at
//! most `queue` requests wait. A request that finds no
//! permit is refused at once (503, `Retry-After`). A queued request whose client has gone, or whose deadline has
//! passed, is skipped by the worker that takes it.

use crate::error::ApiError;
use crate::Model;
use axum::body::Body;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub type Reply = Result<Response, ApiError>;
pub type Work = Box<dyn FnOnce(&Model, &Stop) -> Reply + Send>;

/// Whether a running job should give up: its deadline has passed or its client has gone. A job that does
/// several passes (several classes) asks between them, so that a request that has timed out does not hold its
/// worker for the rest of its work.
pub struct Stop<'a> {
    deadline: Instant,
    reply: &'a oneshot::Sender<Answer>,
}

impl Stop<'_> {
    pub fn requested(&self) -> bool {
        self.reply.is_closed() || Instant::now() >= self.deadline
    }
}

/// An answer and the slot of its request: the slot is held until the answer's body has been sent (or dropped),
/// so that at most `workers + queue` answers are held in memory, whether or not their clients read them.
type Answer = (Reply, OwnedSemaphorePermit);

struct Job {
    work: Work,
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
    /// Released when the job is done or skipped: the slot is free again.
    _permit: OwnedSemaphorePermit,
}

pub struct Engine {
    permits: Arc<Semaphore>,
    tx: Mutex<SyncSender<Job>>,
    pub workers: usize,
    pub queue: usize,
}

/// A slot in the queue, taken before the request's body is read.
pub struct Admission(OwnedSemaphorePermit);

impl Engine {
    /// Start `workers` threads over `model`. `delay` is a test hook: each job waits that long first.
    pub fn start(model: Arc<Model>, workers: usize, queue: usize, delay: Duration) -> Engine {
        let slots = workers + queue;
        let (tx, rx) = sync_channel::<Job>(slots);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let (rx, model) = (rx.clone(), model.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("gradcam-worker-{i}"))
                .spawn(move || worker(&rx, &model, delay));
            if let Err(e) = spawned {
                eprintln!("gradcam serve: cannot start worker {i}: {e}");
            }
        }
        Engine { permits: Arc::new(Semaphore::new(slots)), tx: Mutex::new(tx), workers, queue }
    }

    /// A slot, or 503 when every worker is busy and the queue is full.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        self.permits.clone().try_acquire_owned().map(Admission).map_err(|_| {
            ApiError::unavailable(format!(
                "the server is busy: {} workers and a queue of {} are all taken; try again shortly",
                self.workers, self.queue
            ))
        })
    }

    /// Slots in use (running or waiting).
    pub fn in_use(&self) -> usize {
        self.workers + self.queue - self.permits.available_permits()
    }

    /// Queue `work` and wait for its answer until `deadline` (503 after it).
    pub async fn run(&self, slot: Admission, deadline: Instant, work: Work) -> Reply {
        let (reply, answer) = oneshot::channel();
        let job = Job { work, deadline, reply, _permit: slot.0 };
        {
            let tx = self.tx.lock().map_err(|_| ApiError::internal("the work queue is poisoned"))?;
            // never blocks: the channel has room for every permit
            tx.try_send(job).map_err(|_| ApiError::internal("the work queue refused a job it has room for"))?;
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok((r, slot))) => {
                r.map(|resp| resp.map(|body| Body::new(Held { body, rest: bytes::Bytes::new(), _slot: slot })))
            }
            Ok(Err(_)) => Err(ApiError::internal("the worker ended without an answer")),
            Err(_) => Err(ApiError::timed_out()),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, model: &Model, delay: Duration) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            continue; // the client is gone or has been told 503: its slot is free again
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let Job { work, reply, deadline, _permit: permit } = job;
        let stop = Stop { deadline, reply: &reply };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| work(model, &stop))).unwrap_or_else(|p| {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            Err(ApiError::internal(format!(
                "internal error (a bug in gradcam; please report it with the input): {}",
                what.unwrap_or_else(|| "panic".into())
            )))
        });
        // the slot goes with the answer (freed when its body has been sent, or at once if the client has gone)
        let _ = reply.send((r, permit));
    }
}

/// An answer's body holding its request's slot. It gives its bytes in pieces, so that hyper takes the next piece
/// only once the last has been written: the body (and the slot) lives until the answer has nearly all been sent.
struct Held {
    body: Body,
    /// What is left of the frame being sent.
    rest: bytes::Bytes,
    _slot: OwnedSemaphorePermit,
}

/// The pieces an answer is handed over in.
const PIECE: usize = 256 << 10;

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.rest.is_empty() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let n = self.rest.len().min(PIECE);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        match inner.exact() {
            Some(n) => SizeHint::with_exact(n + rest),
            None => {
                let mut h = SizeHint::new();
                h.set_lower(inner.lower() + rest);
                if let Some(u) = inner.upper() {
                    h.set_upper(u + rest);
                }
                h
            }
        }
    }
}
