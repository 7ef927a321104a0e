//! Fair turns between namespaces: one tenant's backlog cannot hold up another's new work.
//!
//! kube-runtime's scheduler hands out due objects in the order they fell due, so 300 objects of one
//! namespace that are due together would all run before a new one in another namespace. Each controller
//! therefore lets kube-runtime start every due reconcile at once and bounds the passes here instead: at
//! most `--concurrency` run, and a freed slot goes to the waiting namespace with the fewest passes running
//! (among equals, in turn: round-robin), the oldest waiter of each first. A new object in a quiet
//! namespace waits for one pass to end, however long the noisy namespace's queue. A waiting reconcile is a
//! small future: it holds no AWS call and no slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The pass slots of one controller, handed out in turns by namespace.
#[derive(Debug)]
pub struct Turns {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots no pass holds.
    free: usize,
    /// The namespaces with a waiting pass, in the order of their next turn.
    order: VecDeque<Box<str>>,
    /// Each namespace's waiting passes, oldest first.
    waiting: HashMap<Box<str>, VecDeque<oneshot::Sender<Slot>>>,
    /// How many passes of each namespace hold a slot (namespaces with none are not listed).
    running: HashMap<Box<str>, usize>,
}

impl State {
    fn waiters(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    fn running(&self, namespace: &str) -> usize {
        self.running.get(namespace).copied().unwrap_or(0)
    }

    /// Counts a slot as taken by `namespace`.
    fn start(&mut self, namespace: &str) {
        *self.running.entry(namespace.into()).or_default() += 1;
    }

    fn end(&mut self, namespace: &str) {
        if let Some(count) = self.running.get_mut(namespace) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(namespace);
            }
        }
    }
}

/// A pass slot; dropping it hands it to the next waiting pass.
#[derive(Debug)]
pub struct Slot {
    turns: Option<Arc<Turns>>,
    namespace: Box<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.release(&self.namespace);
        }
    }
}

impl Turns {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Turns { state: Mutex::new(State { free: slots.max(1), ..State::default() }) })
    }

    /// Waits for a slot for a pass in `namespace`: at once when one is free and nobody waits, otherwise in
    /// this namespace's queue, whose turn comes round after each other waiting namespace's.
    pub async fn take(self: &Arc<Self>, namespace: &str) -> Slot {
        let receiver = {
            let Ok(mut state) = self.state.lock() else { return Slot { turns: None, namespace: "".into() } };
            if state.free > 0 && state.order.is_empty() {
                state.free -= 1;
                state.start(namespace);
                return Slot { turns: Some(self.clone()), namespace: namespace.into() };
            }
            let (sender, receiver) = oneshot::channel();
            match state.waiting.get_mut(namespace) {
                Some(queue) => queue.push_back(sender),
                None => {
                    state.waiting.insert(namespace.into(), VecDeque::from([sender]));
                    state.order.push_back(namespace.into());
                }
            }
            receiver
        };
        // The sender is dropped only with the whole queue (never while this waits): no slot then.
        receiver.await.unwrap_or(Slot { turns: None, namespace: "".into() })
    }

    /// A slot only if one is free now and no pass is waiting: for background work, which must never take a
    /// turn from work someone is waiting for.
    pub fn try_take(self: &Arc<Self>, namespace: &str) -> Option<Slot> {
        let mut state = self.state.lock().ok()?;
        (state.free > 0 && state.order.is_empty()).then(|| {
            state.free -= 1;
            state.start(namespace);
            Slot { turns: Some(self.clone()), namespace: namespace.into() }
        })
    }

    /// How many passes wait for a slot.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.waiters()).unwrap_or(0)
    }

    /// Hands the slot `namespace` freed to the oldest waiter of the waiting namespace with the fewest
    /// passes running (the first such in turn order), or frees it. A waiter that gave up (its reconcile was
    /// dropped) is skipped.
    fn release(self: &Arc<Self>, namespace: &str) {
        let Ok(mut state) = self.state.lock() else { return };
        state.end(namespace);
        loop {
            let next = (0..state.order.len()).min_by_key(|&i| state.running(&state.order[i]));
            let Some(namespace) = next.and_then(|i| state.order.remove(i)) else { break };
            let Some(queue) = state.waiting.get_mut(&namespace) else { continue };
            let sender = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&namespace);
            } else {
                state.order.push_back(namespace.clone());
            }
            let Some(sender) = sender else { continue };
            state.start(&namespace);
            match sender.send(Slot { turns: Some(self.clone()), namespace: namespace.clone() }) {
                Ok(()) => return,
                // Not handed over: it must not release itself (this lock is held).
                Err(mut slot) => {
                    slot.turns = None;
                    state.end(&namespace);
                }
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Starts a waiter for a slot of `namespace`, which records its name in `got` once it has one and holds
    /// the slot until told to let go.
    fn waiter(
        turns: &Arc<Turns>,
        namespace: &'static str,
        got: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (done, finish) = oneshot::channel::<()>();
        let (turns, got) = (turns.clone(), got.clone());
        let task = tokio::spawn(async move {
            let _slot = turns.take(namespace).await;
            got.lock().expect("lock").push(namespace);
            let _ = finish.await;
        });
        (task, done)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_new_namespace_waits_for_one_pass_not_for_anothers_backlog() {
        let turns = Turns::new(2);
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut finishers = VecDeque::new();
        // Two noisy passes hold both slots, 300 more of the same namespace wait, then one of another comes.
        for _ in 0..302 {
            finishers.push_back(waiter(&turns, "noisy", &got));
            settle().await;
        }
        let (_quiet, quiet_done) = waiter(&turns, "quiet", &got);
        settle().await;
        assert_eq!(got.lock().expect("lock").len(), 2, "two slots, two passes running");
        assert_eq!(turns.waiting(), 301);
        // The first pass that ends hands its slot to the quiet namespace.
        let (_, first_done) = finishers.pop_front().expect("a noisy pass");
        first_done.send(()).expect("the waiter is there");
        settle().await;
        assert_eq!(*got.lock().expect("lock").last().expect("a pass"), "quiet");
        assert_eq!(got.lock().expect("lock").len(), 3);
        // Then the noisy namespace has every turn until it is done.
        quiet_done.send(()).expect("the waiter is there");
        while let Some((task, done)) = finishers.pop_front() {
            done.send(()).expect("the waiter is there");
            task.await.expect("the waiter ran");
        }
        assert_eq!(got.lock().expect("lock").len(), 303);
        assert_eq!(turns.waiting(), 0);
        assert!(turns.try_take("x").is_some(), "every slot came back");
    }

    #[tokio::test]
    async fn namespaces_take_turns() {
        let turns = Turns::new(1);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (_first, first_done) = waiter(&turns, "a", &got);
        settle().await;
        let mut rest = Vec::new();
        for namespace in ["a", "a", "a", "b", "c", "b"] {
            rest.push(waiter(&turns, namespace, &got));
            settle().await;
        }
        first_done.send(()).expect("the waiter is there");
        // Each lets go as soon as it has its slot.
        let mut tasks = Vec::new();
        for (task, done) in rest {
            let _ = done.send(());
            tasks.push(task);
        }
        for task in tasks {
            task.await.expect("the waiter ran");
        }
        // Turn order: a (running), then a, b, c in the order they first waited, then round again.
        assert_eq!(*got.lock().expect("lock"), vec!["a", "a", "b", "c", "a", "b", "a"]);
    }

    #[tokio::test]
    async fn background_work_takes_only_a_slot_nobody_waits_for() {
        let turns = Turns::new(2);
        let first = turns.try_take("x").expect("a free slot");
        let got = Arc::new(Mutex::new(Vec::new()));
        let (_a, a_done) = waiter(&turns, "a", &got);
        let (_b, _b_done) = waiter(&turns, "b", &got);
        settle().await;
        assert_eq!(turns.waiting(), 1);
        assert!(turns.try_take("x").is_none(), "a pass is waiting");
        drop(first);
        settle().await;
        assert_eq!(turns.waiting(), 0);
        assert!(turns.try_take("x").is_none(), "both slots are held");
        a_done.send(()).expect("the waiter is there");
        settle().await;
        assert!(turns.try_take("x").is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_slot() {
        let turns = Turns::new(1);
        let held = turns.try_take("x").expect("a free slot");
        let gone = tokio::spawn({
            let turns = turns.clone();
            async move {
                let _slot = turns.take("a").await;
            }
        });
        settle().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(1), turns.take("b")).await;
        assert!(slot.is_ok(), "the slot came back after its waiter gave up");
    }
}
