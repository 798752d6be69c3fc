//! Building a plan: execution order, buffer slots (a value's slot is freed after its last
//! reader), shapes, memory layouts, threads, and the dense kernel of every convolution.

use super::layout::Layout;
use super::{threads, Plan, PlanOptions, Src, Step, Workspace};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::kernels::{ConvKernel, DenseConv, Scratch};
use crate::ops::Op;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

impl Plan {
    pub(super) fn build(graph: Graph, image_shape: &[usize], options: PlanOptions) -> Result<Plan> {
        if options.max_batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        crate::kernels::isa::Isa::check_environment()?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        super::memory::check_threads(threads)?;
        let (pool, pool_has_caller) = threads::pool_for_this_thread(threads)?;
        let order = graph.topological_order()?;
        let input_id = *graph
            .inputs
            .first()
            .ok_or_else(|| Error::model(&graph.source, "no input"))?;

        // Constants read at run time become f32 operands.
        let mut consts = Vec::new();
        let mut const_index: HashMap<ValueId, usize> = HashMap::new();
        // Last step reading each value, to free its slot afterwards.
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (pos, &ni) in order.iter().enumerate() {
            for &v in &graph.nodes[ni].inputs {
                last_use.insert(v, pos);
            }
        }
        for &o in &graph.outputs {
            last_use.insert(o, usize::MAX);
        }
        let mut slot_of: HashMap<ValueId, usize> = HashMap::new();
        let mut free: Vec<usize> = Vec::new();
        // Slots freed by a step that may run paired with the next (`fuse`): free only after
        // that next step has its output, which must not overwrite the pair's input.
        let mut pending: Vec<usize> = Vec::new();
        let mut n_slots = 0;
        let mut steps = Vec::with_capacity(order.len());
        for (pos, &ni) in order.iter().enumerate() {
            let node = &graph.nodes[ni];
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                inputs.push(if v == input_id {
                    Src::Input
                } else if let Some(&s) = slot_of.get(&v) {
                    Src::Slot(s)
                } else if let Some(c) = graph.constants.get(&v) {
                    let idx = *const_index.entry(v).or_insert_with(|| {
                        consts.push((c.shape.clone(), c.to_f32()));
                        consts.len() - 1
                    });
                    Src::Const(idx)
                } else {
                    return Err(Error::Internal(format!(
                        "value '{}' has no source",
                        graph.value_name(v)
                    )));
                });
            }
            let output = free.pop().unwrap_or_else(|| {
                n_slots += 1;
                n_slots - 1
            });
            let out_v = *node
                .outputs
                .first()
                .ok_or_else(|| Error::Internal(format!("node '{}' has no output", node.name)))?;
            slot_of.insert(out_v, output);
            free.append(&mut pending);
            let next = order.get(pos + 1).map(|&n| &graph.nodes[n]);
            let freed = if next.is_some_and(|next| super::fuse::may_pair(node, next)) {
                &mut pending
            } else {
                &mut free
            };
            for &v in &node.inputs {
                if last_use.get(&v) == Some(&pos) {
                    if let Some(&s) = slot_of.get(&v) {
                        if !freed.contains(&s) {
                            freed.push(s);
                        }
                    }
                }
            }
            steps.push(Step {
                node: ni,
                inputs,
                output,
            });
        }
        let out_v = *graph
            .outputs
            .first()
            .ok_or_else(|| Error::model(&graph.source, "no output"))?;
        let output = match slot_of.get(&out_v) {
            Some(&s) => Src::Slot(s),
            None => {
                return Err(Error::model(
                    &graph.source,
                    "the output is not computed by any node",
                ))
            }
        };
        let dense_kernels: Vec<Option<Arc<dyn ConvKernel>>> = steps
            .iter()
            .map(|s| match &graph.nodes[s.node].op {
                Op::Conv(c) => Some(Arc::new(DenseConv::new(c)) as Arc<dyn ConvKernel>),
                _ => None,
            })
            .collect();
        let mut plan = Plan {
            graph,
            steps,
            slots: vec![Vec::new(); n_slots],
            slot_offsets: vec![0; n_slots],
            centered: vec![],
            consts,
            image_shape: image_shape.to_vec(),
            output,
            shapes_batch: 0,
            in_shapes: vec![],
            out_shapes: vec![],
            img_in_shapes: vec![],
            img_out_shapes: vec![],
            output_step: 0,
            image_mode: false,
            layer_from: 0,
            expand_pairs: vec![],
            fuse_pairs: !super::fuse::fusing_off(),
            band_bytes: (crate::kernels::cache::l2_bytes_or_default() / 4) as usize,
            pool,
            pool_has_caller,
            foreign_pool: std::sync::OnceLock::new(),
            workspaces: vec![],
            shared: Mutex::new(Scratch::default()),
            conv_kernels: dense_kernels.clone(),
            dense_kernels,
            layouts: vec![],
            in_layouts: vec![],
            max_batch: options.max_batch,
            threads,
            step_seconds: None,
        };
        (plan.img_in_shapes, plan.img_out_shapes) = plan.shapes_for(1)?;
        plan.output_step = match plan.output {
            Src::Slot(s) => plan.steps.iter().rposition(|st| st.output == s),
            _ => None,
        }
        .ok_or_else(|| Error::Internal("output step unknown".into()))?;
        plan.image_mode = plan.image_mode_ok();
        plan.layer_from = plan.choose_layer_from();
        plan.expand_pairs = plan.choose_expand_pairs();
        let producers = plan.producers();
        plan.layouts = plan.choose_layouts(&producers);
        plan.in_layouts = producers
            .iter()
            .map(|ps| {
                ps.iter()
                    .map(|p| p.map_or(Layout::Nchw, |p| plan.layouts[p]))
                    .collect()
            })
            .collect();
        plan.centered = super::placement::centered_offsets(
            &plan.steps,
            &plan.img_out_shapes,
            &plan.layouts,
            n_slots,
            threads,
        );
        // Nothing large is allocated before the buffers are known to fit.
        let (_, batch_shapes) = plan.shapes_for(options.max_batch)?;
        plan.check_buffers_fit(&batch_shapes)?;
        // Each thread's image buffers are made on its first image-by-image run, and the batch
        // slots grow when a layer-by-layer run first needs them (`Plan::grow_slots`): a plan
        // holds the buffers its runs use, no more.
        plan.workspaces = (0..threads)
            .map(|_| Mutex::new(Workspace::default()))
            .collect();
        plan.infer_shapes(options.max_batch)?;
        let col = plan
            .steps
            .iter()
            .zip(&plan.in_shapes)
            .filter_map(|(s, ins)| match &plan.graph.nodes[s.node].op {
                Op::Conv(c) if DenseConv::uses_im2col(&c.params) => Some(
                    crate::kernels::im2col::col_len(&c.params, ins[0][2], ins[0][3]),
                ),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let mut shared = Scratch::default();
        shared.col = vec![0.0; col];
        plan.shared = Mutex::new(shared);
        Ok(plan)
    }
}
