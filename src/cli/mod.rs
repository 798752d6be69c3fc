//! The `haste` command line: a thin layer over the library. One file per subcommand.

mod args;
mod bench;
mod bench_steps;
mod calibrate;
mod eval;
mod haste_args;
mod inspect;
mod sweep;

pub use args::Cli;

use crate::datasets::{open_dataset_with, Dataset};
use crate::error::Result;
use crate::eval::{evaluate, EvalOptions, EvalReport, HasteReport};
use crate::report::progress_bar;
use crate::{Model, Plan, PlanOptions};
use args::{Command, DataArgs, ModelArgs};

thread_local! {
    /// Where `--json` output goes on this thread: stdout, or (inside [`run_to_json`]) kept.
    static JSON_CAPTURE: std::cell::RefCell<Option<Option<serde_json::Value>>> =
        const { std::cell::RefCell::new(None) };
}

/// Prints a subcommand's `--json` result, or keeps it for [`run_to_json`].
pub(crate) fn emit_json(v: serde_json::Value) {
    let kept = JSON_CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(slot) => {
            *slot = Some(v.clone());
            true
        }
        None => false,
    });
    if !kept {
        println!("{v}");
    }
}

/// Runs the subcommand `args` (as typed after `haste`, without `--json`) and returns what
/// `--json` would print, as a value: the Python package's `evaluate`, `sweep` and `calibrate`.
/// `progress` shows the progress bars (on a terminal). A bad command line is an
/// [`crate::Error::InvalidArgument`] with clap's first line.
pub fn run_to_json(args: &[String], progress: bool) -> Result<serde_json::Value> {
    let argv = std::iter::once("haste".to_string())
        .chain(args.iter().cloned())
        .chain(std::iter::once("--json".to_string()));
    let cli = <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("bad arguments");
        crate::Error::InvalidArgument(first.trim_start_matches("error: ").to_string())
    })?;
    let _progress = crate::report::ProgressGuard::set(progress);
    JSON_CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    let result = run(cli);
    let value = JSON_CAPTURE.with(|c| c.borrow_mut().take().flatten());
    result?;
    value.ok_or_else(|| crate::Error::Internal("the subcommand printed no JSON".into()))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    crate::kernels::isa::Isa::check_environment()?;
    crate::haste::cost_file::check_environment()?;
    match cli.command {
        Command::Eval(a) => eval::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Calibrate(a) => calibrate::run(a),
    }
}

/// A model planned over a dataset, as every subcommand needs.
pub(crate) struct Session {
    pub plan: Plan,
    pub data: Box<dyn Dataset>,
    pub options: EvalOptions,
}

impl Session {
    pub fn open(m: &ModelArgs, d: &DataArgs) -> Result<Session> {
        d.validate()?;
        let model = Model::load(&m.model)?;
        let (pre, labels) = m.resolve(&model.image_shape)?;
        let mut data = open_dataset_with(&d.data, &pre, labels.as_deref(), d.skip_bad)?;
        if d.skip > 0 {
            if d.skip >= data.len() {
                return Err(crate::Error::dataset(
                    &d.data,
                    format!(
                        "leaves no image to score after the first {} (--skip, or with --max-drop the calibration's --calibration-images); it has {}",
                        d.skip,
                        data.len()
                    ),
                ));
            }
            data = Box::new(crate::datasets::Skip::new(data, d.skip));
        }
        let plan = model.plan(PlanOptions {
            threads: d.threads,
            max_batch: d.batch,
        })?;
        Ok(Session {
            plan,
            data,
            options: EvalOptions {
                limit: d.limit,
                batch: d.batch,
                skip_bad: d.skip_bad,
            },
        })
    }

    /// Number of images a pass covers.
    pub fn images(&self) -> usize {
        self.options
            .limit
            .map_or(self.data.len(), |l| l.min(self.data.len()))
    }

    /// A dense pass with a progress bar.
    pub fn dense(&mut self) -> Result<EvalReport> {
        let bar = progress_bar(self.images(), "dense");
        let r = evaluate(&mut self.plan, self.data.as_ref(), self.options, &mut |n| {
            bar.set_position(n as u64)
        });
        bar.finish_and_clear();
        r
    }

    /// A pass with a policy on, with a progress bar.
    pub fn policy(&mut self, policy: &crate::compress::Policy) -> Result<HasteReport> {
        self.policy_probed(policy, false)
    }

    /// A pass with a policy and a progress bar, each HASTE layer's output error measured
    /// when `measure_error`.
    pub fn policy_probed(
        &mut self,
        policy: &crate::compress::Policy,
        measure_error: bool,
    ) -> Result<HasteReport> {
        let bar = progress_bar(self.images(), "policy");
        let r = crate::eval::evaluate_policy_probed(
            &mut self.plan,
            self.data.as_ref(),
            self.options,
            policy,
            measure_error,
            &mut |n| bar.set_position(n as u64),
        );
        bar.finish_and_clear();
        r
    }

    /// The dense network and HASTE (`compress`, or else `policy`) in turns on each batch,
    /// with a progress bar ([`crate::eval::evaluate_in_turns`]).
    pub fn in_turns(
        &mut self,
        compress: Option<&crate::compress::CompressOptions>,
        policy: Option<&crate::compress::Policy>,
    ) -> Result<(EvalReport, HasteReport)> {
        let bar = progress_bar(self.images(), "dense+HASTE");
        let mut shown = |n: usize| bar.set_position(n as u64);
        let (plan, data, options) = (&mut self.plan, self.data.as_ref(), self.options);
        let r = match (compress, policy) {
            (Some(c), _) => crate::eval::evaluate_in_turns(plan, data, options, c, &mut shown),
            (None, Some(p)) => {
                crate::eval::evaluate_policy_in_turns(plan, data, options, p, &mut shown)
            }
            (None, None) => Err(crate::Error::Internal("nothing to run in turns".into())),
        };
        bar.finish_and_clear();
        r
    }

    /// A HASTE pass with a progress bar.
    pub fn haste(&mut self, compress: &crate::compress::CompressOptions) -> Result<HasteReport> {
        let label = format!("L={}", compress.config.hyperplanes);
        let bar = progress_bar(self.images(), &label);
        let r = crate::eval::evaluate_haste(
            &mut self.plan,
            self.data.as_ref(),
            self.options,
            compress,
            &mut |n| bar.set_position(n as u64),
        );
        bar.finish_and_clear();
        r
    }
}

/// Warning lines about a pass: images skipped (`--skip-bad`), non-finite logits, and
/// non-finite inputs HASTE met in its convolutions.
pub(crate) fn warnings(label: &str, eval: &EvalReport, haste: Option<&HasteReport>) -> Vec<String> {
    let mut lines = Vec::new();
    if !eval.skipped.is_empty() {
        lines.push(format!(
            "warning: {label}: skipped {} unreadable image(s): {}",
            eval.skipped.len(),
            eval.skipped.join(", ")
        ));
    }
    if eval.nonfinite_logits > 0 {
        lines.push(format!(
            "warning: {label}: {} non-finite logit(s) (NaN or infinite) -- the model's activations overflow",
            eval.nonfinite_logits
        ));
    }
    if let Some(h) = haste {
        let n = h.nonfinite_inputs();
        if n > 0 {
            lines.push(format!(
                "warning: {label}: HASTE met {n} non-finite convolution input(s) (hashed as 0)"
            ));
        }
    }
    lines
}
