//! Where each value sits in its slot when one image runs on several threads.
//!
//! At batch 1 every step shares its image among the threads: each writes a band of the
//! output's rows (of its channels, for a planar output) into the step's slot, and the next
//! step's threads read about the same bands. A slot holds values of different sizes one after
//! the other. Laid out from the slot's start, the border between two threads' bands falls at
//! a different address for each value, so a thread writes lines another core wrote last;
//! each such write first fetches the line from that core. Where cores are far apart (on
//! another CCD or socket: on the 2-core VM of `BENCHMARKS.md`, at times a cache line took
//! 400 ns to go to the other core and back instead of 40-120), MobileNetV2 ran 11-18 % and
//! EfficientNet-Lite1 8-15 % slower at batch 1 on two threads for it.
//!
//! So each value is placed with its middle border at one address of its slot, the same for
//! every value the slot holds: with two threads, each core keeps writing (and the next step
//! keeps reading) the lines it wrote before. With more threads the other borders still move
//! with the value's size, by half as much as from the slot's start.

use super::layout::Layout;
use super::Step;

/// Floats in a cache line: offsets are whole lines, so no line is split between values'
/// halves.
const LINE: usize = 16;

/// Floats of a value of `shape` (`[1, c, h, w]`) laid out in `layout` before its middle
/// border among `threads` bands: of rows when pixel-major, of channels when planar, as the
/// kernels split them (`div_ceil` rows or channels a band); `None` for other shapes.
fn before_middle(shape: &[usize], layout: Layout, threads: usize) -> Option<usize> {
    let &[1, c, h, w] = shape else {
        return None;
    };
    let (units, unit_len) = match layout {
        Layout::Nhwc => (h, w * c),
        Layout::Nchw => (c, h * w),
    };
    let per = units.div_ceil(threads.max(1));
    let before = (threads * per / 2).min(units);
    Some((before * unit_len).div_ceil(LINE) * LINE)
}

/// Per step, where its output starts in its slot (floats) in a run of one image shared among
/// `threads` threads: `shapes` and `layouts` are the steps' one-image output shapes and
/// memory orders. All zero for one thread.
pub(super) fn centered_offsets(
    steps: &[Step],
    shapes: &[Vec<usize>],
    layouts: &[Layout],
    n_slots: usize,
    threads: usize,
) -> Vec<usize> {
    if threads < 2 {
        return vec![0; steps.len()];
    }
    let before: Vec<Option<usize>> = (0..steps.len())
        .map(|i| {
            let layout = layouts.get(i).copied().unwrap_or_default();
            before_middle(&shapes[i], layout, threads)
        })
        .collect();
    // Each slot's middle: the largest first half of the values it holds.
    let mut middle = vec![0; n_slots];
    for (s, b) in steps.iter().zip(&before) {
        middle[s.output] = middle[s.output].max(b.unwrap_or(0));
    }
    steps
        .iter()
        .zip(&before)
        .map(|(s, b)| b.map_or(0, |b| middle[s.output] - b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(output: usize) -> Step {
        Step {
            node: 0,
            inputs: vec![],
            output,
        }
    }

    #[test]
    fn two_threads_put_every_value_s_border_at_its_slot_s_middle() {
        // Three values in slot 0 (pixel-major, 112, 56 and 7 rows), a flat one in slot 1.
        let shapes = [
            vec![1, 32, 112, 112],
            vec![1, 144, 56, 56],
            vec![1, 1280, 7, 7],
            vec![1, 1000],
        ];
        let steps = [step(0), step(0), step(0), step(1)];
        let layouts = [Layout::Nhwc; 4];
        let off = centered_offsets(&steps, &shapes, &layouts, 2, 2);
        // Thread 0's band is the first `div_ceil(h, 2)` rows: it ends at one address.
        let border = |i: usize, rows: usize| {
            let [_, c, _, w] = shapes[i][..] else {
                unreachable!()
            };
            off[i] + rows * w * c
        };
        assert_eq!(
            off[1], 0,
            "the largest first half (144 x 28 x 56) starts the slot"
        );
        assert_eq!(border(0, 56), border(1, 28));
        assert_eq!(border(1, 28), border(2, 4).div_ceil(LINE) * LINE);
        assert_eq!(off[3], 0, "values that are not images stay at the start");
        assert!(off.iter().all(|o| o % LINE == 0));
    }

    #[test]
    fn planar_values_split_by_channels_and_one_thread_keeps_the_start() {
        let shapes = [vec![1, 64, 8, 8], vec![1, 16, 8, 8]];
        let steps = [step(0), step(0)];
        let off = centered_offsets(&steps, &shapes, &[Layout::Nchw; 2], 1, 2);
        assert_eq!(off, vec![0, 32 * 64 - 8 * 64]);
        assert_eq!(
            centered_offsets(&steps, &shapes, &[Layout::Nchw; 2], 1, 1),
            [0, 0]
        );
    }
}
