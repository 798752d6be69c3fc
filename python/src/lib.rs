//! `haste._haste`: the extension module under the Python package `haste` (see
//! `python/haste/__init__.py`, which checks arguments and gives the friendly API).
//!
//! A [`NativeModel`] is one loaded network and one plan behind a mutex: runs release the GIL,
//! several Python threads may call one model (their runs take turns), and the plan grows when
//! a larger batch arrives. `run_json` runs a command-line subcommand and returns its `--json`
//! result, so `haste.evaluate` and friends give exactly what the command line gives.

use haste::compress::{flops_summary, FlopsSummary};
use haste::haste::HasteConfig;
use haste::{CompressOptions, Compression, Model, ModelCard, Plan, PlanOptions, Policy};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// A haste error as the Python exception of its kind (`haste._errors.InputError` for bad
/// input, `InternalError` for bugs), carrying the command line's one-line message.
fn py_err(py: Python<'_>, e: haste::Error) -> PyErr {
    let class = if e.exit_code() == 2 {
        "InputError"
    } else {
        "InternalError"
    };
    let message = e.to_string();
    let made = py
        .import("haste._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

/// What the plan runs: dense, HASTE with options, or a policy.
#[derive(Clone)]
enum Setting {
    Dense,
    Haste(CompressOptions),
    Policy(Box<Policy>),
}

struct State {
    model: Model,
    plan: Plan,
    threads: usize,
    setting: Setting,
    compression: Option<Compression>,
    /// HASTE's first-batch layer choice is still to be made (on the next run's batch).
    choose_pending: bool,
    /// FLOPs per image of the last run.
    last_flops: Option<FlopsSummary>,
}

impl State {
    /// Puts `setting` on the plan.
    fn apply(&mut self, setting: Setting) -> haste::Result<()> {
        self.plan.reset_conv_kernels();
        self.compression = None;
        self.choose_pending = false;
        self.last_flops = None;
        match &setting {
            Setting::Dense => {}
            Setting::Haste(o) => {
                self.compression = Some(Compression::apply(&mut self.plan, o)?);
                self.choose_pending = o.chooses_on_first_batch();
            }
            Setting::Policy(p) => {
                self.compression = Some(Compression::apply_policy(&mut self.plan, p)?);
            }
        }
        self.setting = setting;
        Ok(())
    }

    /// A plan for batches of `n` (the next power of two), with the setting put back on.
    fn grow(&mut self, n: usize) -> haste::Result<()> {
        self.plan = self.model.plan(PlanOptions {
            threads: self.threads,
            max_batch: n.next_power_of_two(),
        })?;
        self.apply(self.setting.clone())
    }

    /// Runs `n` images; returns the output's shape and values.
    fn run(&mut self, x: &[f32], n: usize) -> haste::Result<(Vec<usize>, Vec<f32>)> {
        if n > self.plan.max_batch() {
            self.grow(n)?;
        }
        if self.choose_pending {
            if let Some(c) = self.compression.as_mut() {
                c.choose_layers_on(&mut self.plan, x, n)?;
            }
            self.choose_pending = false;
        }
        let (shape, out) = self.plan.run(x, n)?;
        let (shape, out) = (shape, out.to_vec());
        if let Some(c) = &self.compression {
            let layers = c.reports(&self.plan);
            self.last_flops = Some(flops_summary(&self.plan, &layers));
        }
        Ok((shape, out))
    }
}

/// One loaded network and its plan (see the module doc).
#[pyclass(name = "NativeModel", module = "haste._haste")]
struct NativeModel {
    state: Mutex<State>,
    path: PathBuf,
    image_shape: Vec<usize>,
    labels: Option<Vec<String>>,
}

impl NativeModel {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl NativeModel {
    #[new]
    fn new(py: Python<'_>, path: PathBuf, threads: usize) -> PyResult<Self> {
        let load = || -> haste::Result<(Model, Plan, Option<Vec<String>>)> {
            let model = Model::load(&path)?;
            let labels = ModelCard::beside_model(&path)?.and_then(|c| c.labels);
            let plan = model.plan(PlanOptions {
                threads,
                max_batch: 1,
            })?;
            Ok((model, plan, labels))
        };
        let (model, plan, labels) = py.detach(load).map_err(|e| py_err(py, e))?;
        let image_shape = model.image_shape.clone();
        let threads = plan.threads();
        Ok(NativeModel {
            state: Mutex::new(State {
                model,
                plan,
                threads,
                setting: Setting::Dense,
                compression: None,
                choose_pending: false,
                last_flops: None,
            }),
            path,
            image_shape,
            labels,
        })
    }

    #[getter]
    fn image_shape(&self) -> Vec<usize> {
        self.image_shape.clone()
    }

    #[getter]
    fn labels(&self) -> Option<Vec<String>> {
        self.labels.clone()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.lock().threads
    }

    /// `x`: a C-contiguous float32 array `[N, C, H, W]` (checked by the Python wrapper).
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<'py, f32>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let n = x.shape().first().copied().unwrap_or(0);
        // A copy, so the GIL can go while the network runs without another thread changing
        // the array under it.
        let input = x.as_slice()?.to_vec();
        let (shape, out) = py
            .detach(|| self.lock().run(&input, n))
            .map_err(|e| py_err(py, e))?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), out)
            .map_err(|e| py_err(py, haste::Error::Internal(format!("output shape: {e}"))))?;
        Ok(array.into_pyarray(py))
    }

    /// HASTE on the default layers (or every eligible one with `all_layers`).
    #[allow(clippy::too_many_arguments)]
    fn compress(
        &self,
        py: Python<'_>,
        hyperplanes: usize,
        sparsity: f32,
        tile: Option<usize>,
        seed: u64,
        all_layers: bool,
    ) -> PyResult<()> {
        let config = HasteConfig {
            hyperplanes,
            sparsity,
            tile: tile.unwrap_or(HasteConfig::default().tile),
            seed,
            ..HasteConfig::default()
        };
        let options = CompressOptions {
            config,
            cost_aware: !all_layers,
            // No tile given: each layer chooses its own on the first batch.
            tile_choices: if tile.is_some() {
                Vec::new()
            } else {
                CompressOptions::default().tile_choices
            },
            ..CompressOptions::default()
        };
        let apply = || -> haste::Result<()> {
            options.config.validate()?;
            self.lock().apply(Setting::Haste(options.clone()))
        };
        py.detach(apply).map_err(|e| py_err(py, e))
    }

    /// The policy file `path` (from `haste calibrate`), checked against this model.
    fn compress_policy(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let apply = || -> haste::Result<()> {
            let policy = Policy::load(&path, &self.path)?;
            self.lock().apply(Setting::Policy(Box::new(policy)))
        };
        py.detach(apply).map_err(|e| py_err(py, e))
    }

    /// Back to the dense network.
    fn dense(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.lock().apply(Setting::Dense))
            .map_err(|e| py_err(py, e))
    }

    /// FLOPs per image as JSON: dense, and with HASTE as of the last run.
    fn flops_json(&self) -> String {
        let s = self.lock();
        let dense = s.plan.dense_macs();
        let setting = match &s.setting {
            Setting::Dense => "dense",
            Setting::Haste(_) => "haste",
            Setting::Policy(_) => "policy",
        };
        let j = match &s.last_flops {
            Some(f) => serde_json::json!({
                "setting": setting,
                "dense_flops": dense,
                "flops": f.flops,
                "flops_overhead": f.overhead_flops,
                "flops_reduction": f.reduction(),
                "flops_reduction_conv_only": f.reduction_conv_only(),
            }),
            None => serde_json::json!({
                "setting": setting,
                "dense_flops": dense,
                "flops": if matches!(s.setting, Setting::Dense) { Some(dense) } else { None },
                "flops_overhead": 0,
                "flops_reduction": if matches!(s.setting, Setting::Dense) { Some(0.0) } else { None },
            }),
        };
        j.to_string()
    }
}

/// Runs the command-line subcommand `args` (without `--json`) and returns its `--json` result
/// as JSON text; the GIL is released meanwhile.
#[pyfunction]
fn run_json(py: Python<'_>, args: Vec<String>, progress: bool) -> PyResult<String> {
    py.detach(|| haste::cli::run_to_json(&args, progress))
        .map(|v| v.to_string())
        .map_err(|e| py_err(py, e))
}

#[pymodule]
fn _haste(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(run_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
