//! Getting originals ready for the wire off the sending thread: reading, decompressing and re-hashing each blob
//! into reused buffers, and (for SMTP) encoding it, and handing the results to the sender with few wake-ups.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Condvar, Mutex};

use super::Prepared;
use crate::blob::BlobStore;

/// What a loader keeps from one message to the next: its decompression context and the compressed bytes' buffer.
/// Making a zstd context per message (its tables, about 100 KB zeroed) cost more than a small message's
/// decompression; a fresh buffer per message is a fresh mapping for the large ones.
#[derive(Default)]
pub(super) struct Scratch {
    dctx: Option<zstd::bulk::Decompressor<'static>>,
    compressed: Vec<u8>,
}

impl Scratch {
    /// The original of blob `hash` (of `size` bytes, as indexed) in `out`, byte for byte what was held: it is
    /// sent only if it decompresses to exactly `size` bytes that hash to `hash`. The local file is read into
    /// reused buffers; anything unusual about it (absent, a remote store, a size or hash that does not match)
    /// goes the store's general way, which also says what is wrong.
    pub(super) fn read_original(
        &mut self,
        blobs: &BlobStore,
        hash: &str,
        size: u64,
        out: &mut Vec<u8>,
    ) -> crate::error::Result<()> {
        let hash = crate::message::checked_hash(hash)?;
        if let Ok(size) = usize::try_from(size) {
            if self.read_local(blobs, hash, size, out) {
                return Ok(());
            }
        }
        *out = blobs.read_verified_sized(hash, size)?;
        Ok(())
    }

    fn read_local(&mut self, blobs: &BlobStore, hash: &str, size: usize, out: &mut Vec<u8>) -> bool {
        let Ok(mut f) = std::fs::File::open(blobs.path_of(hash)) else { return false };
        // Read to EOF into the kept buffer (zeroed once, when it grows) without asking the file's size first
        // (`read_to_end` would stat it).
        let buf = &mut self.compressed;
        if buf.is_empty() {
            buf.resize(64 * 1024, 0);
        }
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.dctx.is_none() {
            self.dctx = zstd::bulk::Decompressor::new().ok();
        }
        let Some(d) = self.dctx.as_mut() else { return false };
        out.clear();
        out.reserve(size);
        // Into `out`'s spare capacity, bounded by it: a frame that says it is larger than indexed fails here.
        match d.decompress_to_buffer(&buf[..filled], out) {
            Ok(n) if n == size && out.len() == size => blake3::hash(out).to_hex().as_str() == hash,
            _ => false,
        }
    }
}

/// Buffers of messages already sent, for the loaders to fill again.
#[derive(Default)]
pub(super) struct Recycle(Mutex<Vec<Prepared>>);

impl Recycle {
    pub(super) fn take(&self) -> Prepared {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    pub(super) fn give(&self, p: Prepared) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(p);
    }
}

/// A bounded queue from one loader to the sender that wakes either side as seldom as it can: the sender wakes a
/// loader waiting for room only once the queue has drained to half, so a loader running ahead fills several
/// slots per wake-up instead of sleeping and waking once per message; neither side signals a side that is not
/// waiting (a condition variable's notify is a futex call even then).
pub(super) struct Lane<T> {
    state: Mutex<LaneState<T>>,
    items: Condvar,
    room: Condvar,
    cap: usize,
}

struct LaneState<T> {
    q: VecDeque<T>,
    /// The loader has put its last item.
    done: bool,
    /// The sender is gone: put nothing more.
    closed: bool,
    taker_waits: bool,
    giver_waits: bool,
}

impl<T> Lane<T> {
    pub(super) fn new(cap: usize) -> Lane<T> {
        let cap = cap.max(1);
        Lane {
            state: Mutex::new(LaneState {
                q: VecDeque::with_capacity(cap),
                done: false,
                closed: false,
                taker_waits: false,
                giver_waits: false,
            }),
            items: Condvar::new(),
            room: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, waiting for room; false (and `item` dropped) once the sender is gone.
    pub(super) fn put(&self, item: T) -> bool {
        let mut s = self.lock();
        while s.q.len() >= self.cap && !s.closed {
            s.giver_waits = true;
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.closed {
            return false;
        }
        s.q.push_back(item);
        if s.taker_waits {
            s.taker_waits = false;
            self.items.notify_one();
        }
        true
    }

    /// The next item, waiting for it; `None` once the loader is done and the queue is empty.
    pub(super) fn take(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.q.pop_front() {
                if s.giver_waits && s.q.len() <= self.cap / 2 {
                    s.giver_waits = false;
                    self.room.notify_one();
                }
                return Some(item);
            }
            if s.done {
                return None;
            }
            s.taker_waits = true;
            s = self.items.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The loader's end: nothing more will be put.
    pub(super) fn finish(&self) {
        let mut s = self.lock();
        s.done = true;
        if s.taker_waits {
            s.taker_waits = false;
            self.items.notify_one();
        }
    }

    /// Calls [`Lane::finish`] when dropped.
    pub(super) fn finisher(&self) -> Finisher<'_, T> {
        Finisher(self)
    }

    /// The sender's end: a loader waiting for room gives up.
    pub(super) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.q.clear();
        self.room.notify_all();
    }
}

/// See [`Lane::finisher`].
pub(super) struct Finisher<'a, T>(&'a Lane<T>);

impl<T> Drop for Finisher<'_, T> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_keeps_order_and_ends() {
        let lane = Lane::new(3);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _end = lane.finisher();
                for i in 0..1000 {
                    assert!(lane.put(i));
                }
            });
            let got: Vec<i32> = std::iter::from_fn(|| lane.take()).collect();
            assert_eq!(got, (0..1000).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_loader_that_panics_still_ends_its_lane() {
        let lane: Lane<i32> = Lane::new(2);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let _end = lane.finisher();
                assert!(lane.put(1));
                panic!("loader failed");
            });
            assert_eq!(lane.take(), Some(1));
            assert_eq!(lane.take(), None);
            assert!(h.join().is_err());
        });
    }

    #[test]
    fn a_closed_lane_releases_a_waiting_loader() {
        let lane = Lane::new(1);
        std::thread::scope(|s| {
            let h = s.spawn(|| (0..10).take_while(|&i| lane.put(i)).count());
            assert_eq!(lane.take(), Some(0));
            lane.close();
            assert!(h.join().unwrap() < 10);
        });
    }
}
