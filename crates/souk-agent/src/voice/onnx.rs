//! ONNX Runtime, for the optional neural stages: Silero speech detection and the
//! smart-turn end-of-turn model.
//!
//! Like pocketsphinx and espeak-ng, the runtime is a shared library loaded when first
//! asked for, so the default build links nothing and a deployment without these stages
//! never needs it. It ships in the `onnxruntime` Python wheel
//! (`onnxruntime/capi/libonnxruntime.so.*`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;

/// The process's runtime, loaded from the first path asked for: ONNX Runtime can be
/// loaded into a process once.
static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// A model ready to run. Runs take turns: each is short (Silero: a fraction of a
/// millisecond; smart-turn: tens of milliseconds).
pub struct Model {
    session: Mutex<Session>,
}

impl Model {
    /// Loads the runtime from `runtime` (once per process) and the model from `model`.
    pub fn load(runtime: &Path, model: &Path) -> Result<Model, String> {
        let (loaded_from, environment) = RUNTIME
            .get_or_init(|| {
                let environment = ort::init_from(runtime)
                    .map_err(|e| {
                        format!(
                            "ONNX Runtime cannot be loaded from {}: {e}; it ships in the onnxruntime Python wheel (onnxruntime/capi/libonnxruntime.so.*)",
                            runtime.display()
                        )
                    })?
                    .with_name("souk-agent")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| format!("starting ONNX Runtime: {e}"))?;
                Ok((runtime.to_owned(), environment))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        if loaded_from != runtime {
            return Err(format!(
                "ONNX Runtime is already loaded from {}; one process loads it once",
                loaded_from.display()
            ));
        }
        if !model.is_file() {
            return Err(format!("the model file {} does not exist", model.display()));
        }
        let session = Session::builder(environment)
            .and_then(|b| Ok(b.with_intra_threads(1)?))
            .and_then(|mut b| b.commit_from_file(model))
            .map_err(|e| format!("loading the model {}: {e}", model.display()))?;
        Ok(Model {
            session: Mutex::new(session),
        })
    }

    /// Runs the model on its inputs and hands the outputs to `read`.
    pub fn run<T>(
        &self,
        inputs: Vec<(&'static str, ort::value::DynValue)>,
        read: impl FnOnce(&ort::session::SessionOutputs<'_>) -> Result<T, ort::Error>,
    ) -> Result<T, String> {
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(inputs).map_err(|e| e.to_string())?;
        read(&outputs).map_err(|e| e.to_string())
    }
}

/// Where the tests find the runtime and the models: `SOUK_ONNX_DIR`, which
/// `scripts/test` fills from the Python wheels that ship them.
#[cfg(test)]
pub(crate) fn test_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("SOUK_ONNX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/onnx"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/test unpacks ONNX Runtime and the models there (or set SOUK_ONNX_DIR)",
        path.display()
    );
    path
}
