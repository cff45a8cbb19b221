//! The run's state store, shared by every target and saved by group commit:
//! a change returns once a save that includes it is on disk, and the changes
//! made while one save is being written go to disk together in the next.
//! Saving each change on its own made a 1,000-node `up` write the whole
//! state file 4,000 times (two fsyncs each) on the runtime's threads, one
//! target at a time; saves are now written off those threads.

use std::ops::Deref;

use tokio::sync::{Mutex, MutexGuard};

use crate::state::{StateError, StateStore, write_state};

/// A [`StateStore`] whose changes are saved by group commit.
pub struct SharedState {
    store: Mutex<StateStore>,
    /// The generation on disk; held by the one save in flight.
    saved: Mutex<u64>,
    /// Writes of the state file, for the tests.
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
}

/// Read access to the store.
pub struct ReadGuard<'a>(MutexGuard<'a, StateStore>);

impl Deref for ReadGuard<'_> {
    type Target = StateStore;
    fn deref(&self) -> &StateStore {
        &self.0
    }
}

impl SharedState {
    /// Takes over `store`: its saves are written from here on.
    pub fn new(mut store: StateStore) -> Self {
        store.defer_saves();
        let saved = Mutex::new(store.generation());
        Self {
            store: Mutex::new(store),
            saved,
            #[cfg(test)]
            writes: Default::default(),
        }
    }

    /// Reads the store.
    pub async fn lock(&self) -> ReadGuard<'_> {
        ReadGuard(self.store.lock().await)
    }

    /// Makes `change`, then waits until it is saved.
    pub async fn write<T>(
        &self,
        change: impl FnOnce(&mut StateStore) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let (out, generation) = {
            let mut store = self.store.lock().await;
            let out = change(&mut store)?;
            (out, store.generation())
        };
        self.saved_through(generation).await?;
        Ok(out)
    }

    /// Changes the store across awaits (a snapshot download records itself);
    /// call [`Self::save`] after the guard is dropped.
    pub async fn lock_mut(&self) -> MutexGuard<'_, StateStore> {
        self.store.lock().await
    }

    /// Saves every change made so far.
    pub async fn save(&self) -> Result<(), StateError> {
        let generation = self.store.lock().await.generation();
        self.saved_through(generation).await
    }

    /// Returns once `generation` is on disk: the first caller writes the
    /// state as it is then; callers that queued behind it find their change
    /// written and return, or write everything that accumulated.
    async fn saved_through(&self, generation: u64) -> Result<(), StateError> {
        let mut saved = self.saved.lock().await;
        if *saved >= generation {
            return Ok(());
        }
        let (now, path, bytes) = self.store.lock().await.unsaved();
        tokio::task::spawn_blocking(move || write_state(&path, &bytes))
            .await
            .expect("writing the state file does not panic")?;
        *saved = now;
        #[cfg(test)]
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;
    use std::sync::Arc;

    /// 200 changes made while a save is in flight: each is on disk when its
    /// call returns, and the next save writes them all at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_change_is_on_disk_when_its_call_returns_and_saves_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(SharedState::new(StateStore::open(dir.path(), "c").unwrap()));
        let in_flight = shared.saved.lock().await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let shared = shared.clone();
                let root = dir.path().to_owned();
                tokio::spawn(async move {
                    let node = format!("n{i}");
                    shared.write(|s| s.record_applied(&node, "sha")).await.unwrap();
                    let on_disk = StateStore::peek(&root, "c").unwrap().unwrap();
                    assert!(on_disk.applied.contains_key(&node), "{node} saved before returning");
                })
            })
            .collect();
        while shared.lock().await.generation() < 200 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            StateStore::peek(dir.path(), "c").unwrap().is_none(),
            "nothing written yet"
        );
        drop(in_flight);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            shared.writes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one write for 200 changes"
        );
        assert_eq!(StateStore::peek(dir.path(), "c").unwrap().unwrap().applied.len(), 200);
    }

    #[tokio::test]
    async fn a_read_only_store_still_refuses_changes() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedState::new(StateStore::read_only(dir.path(), "c").unwrap());
        let refused = shared.write(|s| s.record_applied("n1", "sha")).await.unwrap_err();
        assert!(matches!(refused, StateError::ReadOnly { .. }), "{refused}");
        assert!(!dir.path().join("c/state.json").exists(), "nothing written");
    }
}
