//! [`Leftovers`]: a provider that opens sandboxes with one provider and
//! removes a session's sandboxes from that one and from others too. A
//! command without a manifest (destroy from the state alone) does not know
//! where a session's tools ran; the places noted beside the workspaces
//! (E2B accounts, Modal apps) are asked as well, so that nothing is left to expire.
//! This module must not know which providers it holds.

use std::sync::Arc;

use async_trait::async_trait;

use super::{EnvironmentImage, Sandbox, SandboxError, SandboxProvider, SandboxSpec};

/// Opens and provisions with `primary`; removes, archives and retires
/// everywhere.
#[derive(Debug)]
pub struct Leftovers {
    pub primary: Arc<dyn SandboxProvider>,
    pub others: Vec<Arc<dyn SandboxProvider>>,
}

impl Leftovers {
    fn all(&self) -> impl Iterator<Item = &Arc<dyn SandboxProvider>> {
        std::iter::once(&self.primary).chain(&self.others)
    }
}

#[async_trait]
impl SandboxProvider for Leftovers {
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        self.primary.open(spec).await
    }

    /// Every provider is asked, even after one fails; the first error is
    /// returned.
    async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        let mut first = Ok(());
        for provider in self.all() {
            if let Err(e) = provider.remove(session_id).await {
                first = first.and(Err(e));
            }
        }
        first
    }

    async fn archive(&self, session_id: &str) -> Result<(), SandboxError> {
        let mut first = Ok(());
        for provider in self.all() {
            if let Err(e) = provider.archive(session_id).await {
                first = first.and(Err(e));
            }
        }
        first
    }

    async fn provision(&self, image: &EnvironmentImage) -> Result<(), SandboxError> {
        self.primary.provision(image).await
    }

    async fn retire(&self, environment_id: &str) -> Result<(), SandboxError> {
        let mut first = Ok(());
        for provider in self.all() {
            if let Err(e) = provider.retire(environment_id).await {
                first = first.and(Err(e));
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Recording {
        removed: Mutex<Vec<String>>,
        fail: bool,
    }

    #[async_trait]
    impl SandboxProvider for Recording {
        async fn open(&self, _spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
            Err(SandboxError::Other("recording".into()))
        }

        async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
            self.removed.lock().unwrap().push(session_id.to_owned());
            if self.fail {
                return Err(SandboxError::Other("unreachable".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_provider_removes_even_after_one_fails() {
        let failing = Arc::new(Recording {
            fail: true,
            ..Recording::default()
        });
        let other = Arc::new(Recording::default());
        let all = Leftovers {
            primary: failing.clone(),
            others: vec![other.clone()],
        };
        let e = all.remove("sesn_1").await.unwrap_err();
        assert_eq!(e, SandboxError::Other("unreachable".into()));
        assert_eq!(*failing.removed.lock().unwrap(), ["sesn_1"]);
        assert_eq!(*other.removed.lock().unwrap(), ["sesn_1"]);
        assert!(all.archive("sesn_1").await.is_ok());
    }
}
