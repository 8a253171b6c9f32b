//! One piece of work many callers wait for: the first caller does it, the
//! others wait (with a deadline of their own) and all get the same answer.
//! The answer is kept only by those who waited for it; a later caller
//! starts a new flight, so failures are never remembered.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct Flight<T> {
    answer: Mutex<Option<T>>,
    done: Condvar,
    started: Instant,
}

impl<T: Clone> Flight<T> {
    pub fn new() -> Flight<T> {
        Flight {
            answer: Mutex::new(None),
            done: Condvar::new(),
            started: Instant::now(),
        }
    }

    /// How long the work has been going on.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Hands `answer` to every waiter, present and future.
    pub fn finish(&self, answer: T) {
        let mut slot = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(answer);
        }
        self.done.notify_all();
    }

    /// The answer, or `None` if it did not come within `timeout`
    /// (`Duration::MAX`: no deadline).
    pub fn wait(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.answer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(a) = slot.as_ref() {
                return Some(a.clone());
            }
            slot = match deadline {
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.done
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.done.wait(slot).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl<T: Clone> Default for Flight<T> {
    fn default() -> Self {
        Flight::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn waiters_share_one_answer_and_give_up_at_their_deadline() {
        let f = Arc::new(Flight::<u32>::new());
        let t = Instant::now();
        assert_eq!(f.wait(Duration::from_millis(50)), None);
        assert!(t.elapsed() >= Duration::from_millis(50));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || f.wait(Duration::from_secs(10)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        f.finish(7);
        f.finish(8); // the first answer stays
        for w in waiters {
            assert_eq!(w.join().unwrap(), Some(7));
        }
        assert_eq!(f.wait(Duration::ZERO), Some(7));
    }
}
