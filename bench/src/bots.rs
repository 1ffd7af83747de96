//! A runtime of its own for the bots, so they can be held to fewer threads than the
//! machine has cores: on a 2-core machine one bot thread leaves the server a core.

/// Dropped inside the bench's own runtime, where a runtime may not block waiting for its
/// tasks, so it is let go in the background.
pub struct BotRuntime(Option<tokio::runtime::Runtime>);

impl BotRuntime {
    pub fn new(threads: usize) -> std::io::Result<BotRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("bots")
            .enable_all()
            .build()?;
        Ok(BotRuntime(Some(runtime)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("alive until dropped").handle()
    }
}

impl Drop for BotRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
