//! One piece of work many callers wait for: the first caller does it, the
//! callers that arrive while it runs wait (each with a deadline of its own)
//! and all get the same answer, an error included. The answer is kept only
//! by those who waited for it; a later caller starts a new flight, so a
//! failure is never remembered. Used for chunk loads in the reader and for
//! image and layer resolution in the FUSE store.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

enum State<T> {
    Pending,
    Done(T),
    /// The worker gave up without an answer (it panicked): waiters go
    /// back and try themselves.
    Abandoned,
}

/// One piece of work and its answer, for every caller that waits on it.
pub struct Flight<T> {
    state: Mutex<State<T>>,
    done: Condvar,
    started: Instant,
}

impl<T: Clone> Flight<T> {
    /// A flight whose answer is still to come.
    pub fn new() -> Flight<T> {
        Flight {
            state: Mutex::new(State::Pending),
            done: Condvar::new(),
            started: Instant::now(),
        }
    }

    /// How long the work has been going on.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Hands `answer` to every waiter, present and future; the first answer stays.
    pub fn finish(&self, answer: T) {
        let mut state = self.lock();
        if matches!(*state, State::Pending) {
            *state = State::Done(answer);
        }
        self.done.notify_all();
    }

    /// Wakes every waiter with no answer.
    fn abandon(&self) {
        let mut state = self.lock();
        if matches!(*state, State::Pending) {
            *state = State::Abandoned;
        }
        self.done.notify_all();
    }

    /// The answer, or `None` if it did not come within `timeout`
    /// (`Duration::MAX`: no deadline) or the work was abandoned.
    pub fn wait(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            match &*state {
                State::Done(a) => return Some(a.clone()),
                State::Abandoned => return None,
                State::Pending => {}
            }
            state = match deadline {
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.done.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clone> Default for Flight<T> {
    fn default() -> Self {
        Flight::new()
    }
}

/// Flights by key: concurrent [`Flights::run`]s of one key do the work once.
pub struct Flights<K, T> {
    running: Mutex<HashMap<K, Arc<Flight<T>>>>,
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone> Flights<K, T> {
    /// Runs `work` unless a run of `key` is under way, in which case its
    /// answer is returned instead once it comes. If that run panics, this
    /// caller runs the work itself.
    pub fn run(&self, key: &K, work: impl FnOnce() -> T) -> T {
        loop {
            let (flight, leader) = {
                let mut running = self.map();
                match running.get(key) {
                    Some(f) => (f.clone(), false),
                    None => {
                        let f = Arc::new(Flight::new());
                        running.insert(key.clone(), f.clone());
                        (f, true)
                    }
                }
            };
            if !leader {
                match flight.wait(Duration::MAX) {
                    Some(answer) => return answer,
                    None => continue,
                }
            }
            // Takes the flight out of the table first (a caller from now on
            // starts anew), then hands the answer to those who waited, or,
            // if `work` panicked, wakes them empty-handed.
            struct Land<'a, K: Eq + Hash, T: Clone> {
                flights: &'a Flights<K, T>,
                key: &'a K,
                flight: Arc<Flight<T>>,
                answer: Option<T>,
            }
            impl<K: Eq + Hash, T: Clone> Drop for Land<'_, K, T> {
                fn drop(&mut self) {
                    self.flights
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(self.key);
                    match self.answer.take() {
                        Some(a) => self.flight.finish(a),
                        None => self.flight.abandon(),
                    }
                }
            }
            let mut land = Land {
                flights: self,
                key,
                flight,
                answer: None,
            };
            let answer = work();
            land.answer = Some(answer.clone());
            return answer;
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<T>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

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

    #[test]
    fn concurrent_runs_of_a_key_share_one_answer_even_a_failure() {
        let flights = Flights::<u32, Result<u32, String>>::default();
        let calls = AtomicUsize::new(0);
        let started = Barrier::new(2);
        let release = Barrier::new(2);
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                flights.run(&1, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    started.wait();
                    release.wait();
                    Err("registry down".to_string())
                })
            });
            started.wait();
            let waiters: Vec<_> = (0..4)
                .map(|_| s.spawn(|| flights.run(&1, || unreachable!("the leader is running"))))
                .collect();
            // Let the waiters reach the flight before it lands.
            while Arc::strong_count(&flights.map()[&1]) < 6 {
                std::thread::yield_now();
            }
            release.wait();
            assert_eq!(leader.join().unwrap(), Err("registry down".into()));
            for w in waiters {
                assert_eq!(w.join().unwrap(), Err("registry down".into()));
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
        // A later run does the work again: failures are not remembered.
        assert_eq!(flights.run(&1, || Ok(5)), Ok(5));
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let flights = Arc::new(Flights::<u32, ()>::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let other = flights.clone();
        flights.run(&1, move || {
            // Would deadlock if key 2 waited for key 1.
            std::thread::spawn(move || other.run(&2, || tx.send(()).unwrap()))
                .join()
                .unwrap();
        });
        rx.recv().unwrap();
    }

    #[test]
    fn a_panicking_run_lets_a_waiter_do_the_work() {
        let flights = Flights::<u32, u32>::default();
        let started = Barrier::new(2);
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                flights.run(&1, || {
                    started.wait();
                    while Arc::strong_count(&flights.map()[&1]) < 3 {
                        std::thread::yield_now();
                    }
                    panic!("worker bug")
                })
            });
            started.wait();
            let waiter = s.spawn(|| flights.run(&1, || 9));
            assert!(leader.join().is_err());
            assert_eq!(waiter.join().unwrap(), 9);
        });
        assert_eq!(flights.len(), 0);
    }
}
