//! `state`: list, show and forget records, and import an existing object
//! (in [`super::import`]). Forgetting never touches the remote object.

use crate::graph::Address;
use crate::state::{ResourceRecord, StateError, StateStore};

pub use super::import::{import, ImportError};

#[derive(Debug, thiserror::Error)]
pub enum StateOpError {
    #[error("`{0}` is not in the state\nhint: `agentform state list` shows what is")]
    NotInState(Address),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Every record, by address.
pub fn list(state: &StateStore) -> Result<Vec<ResourceRecord>, StateError> {
    state.list()
}

/// The record of `address`.
pub fn show(state: &StateStore, address: &Address) -> Result<ResourceRecord, StateOpError> {
    state
        .get(address)?
        .ok_or_else(|| StateOpError::NotInState(address.clone()))
}

/// Forgets `address`; the record it had.
pub fn rm(state: &StateStore, address: &Address) -> Result<ResourceRecord, StateOpError> {
    state
        .remove(address)?
        .ok_or_else(|| StateOpError::NotInState(address.clone()))
}
