//! Reading a small image's depthwise input packed: one vector of channels of a tile of
//! rows copied between zero columns, so that no block clamps or masks a column (see
//! [`DepthwiseConv::packing`]).

use super::DepthwiseConv;

/// Bytes of packed input a tile of [`DepthwiseConv::rows_impl`] keeps in L1: half of the
/// 32 KB of the smallest L1 data caches in use (the rest holds the weights and the output
/// lines).
const L1_TILE_BYTES: usize = 16 * 1024;

/// A packed input's tile of output rows, its width in pixels, and its zero columns on the
/// left (see [`DepthwiseConv::packing`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Packing {
    pub tile: usize,
    pub width: usize,
    pub pad: usize,
}

/// Copies channels `c0..c0 + LANES` (fewer at the end) of every pixel of `src` (rows `w`
/// pixels of `c` channels) into `packed` (rows `width` pixels of `LANES`, from column `pad`).
#[inline(always)]
pub(super) fn pack_channels<const LANES: usize>(
    src: &[f32],
    (w, c, c0): (usize, usize, usize),
    width: usize,
    pad: usize,
    packed: &mut [f32],
) {
    let lanes = LANES.min(c - c0);
    for (src_row, dst_row) in src
        .chunks_exact(w * c)
        .zip(packed.chunks_exact_mut(width * LANES))
    {
        let dst_row = &mut dst_row[pad * LANES..][..w * LANES];
        for (px, dst) in src_row.chunks_exact(c).zip(dst_row.chunks_exact_mut(LANES)) {
            if lanes == LANES {
                // A fixed length: a vector move, not a call.
                let v: &[f32; LANES] = px[c0..][..LANES].try_into().expect("LANES floats");
                *<&mut [f32; LANES]>::try_from(dst).expect("LANES floats") = *v;
            } else {
                dst[..lanes].copy_from_slice(&px[c0..c0 + lanes]);
            }
        }
    }
}

impl DepthwiseConv {
    /// How [`Self::rows_impl`] reads an image `w` wide, `ow` outputs wide: in place (`None`),
    /// or packed. In place, a block of pixels whose columns reach past the image's edge
    /// clamps and masks every column it loads; on the small images of the last stages
    /// (8 x 8 to 15 x 15) every block, or half of them, is such a block, and that work took
    /// as long as the sums (1152 channels 5 x 5 at 8 x 8: 0.43 of peak, against 0.58 for
    /// onnxruntime's channel-blocked kernel). Packed, one vector of channels of a tile of
    /// rows is copied between zero columns wide enough for every block, so no block clamps
    /// or masks, and the copy (`LANES` floats a pixel) stays in L1.
    pub(super) fn packing<const LANES: usize, const P: usize>(
        &self,
        w: usize,
        ow: usize,
    ) -> Option<Packing> {
        let p = &self.params;
        let f32s = std::mem::size_of::<f32>();
        if p.kh * w * p.c_in * f32s <= 2 * L1_TILE_BYTES || p.stride.1 != 1 {
            // An output row's input rows stay in L1 in place: the copy cost more than the
            // masks it saved (32 channels at 24 x 24: 3.9 -> 4.4 us; 96, stride 2: 5.0 ->
            // 5.9). At stride 2 each input column serves half as many sums (3 x 3 at
            // 30 x 30, 240 channels: 24-26 -> 29-31 us).
            return None;
        }
        // The columns each block reads, as `rows_impl` walks a row: from `ox - pad` to
        // before `end`, `P` pixels a block, 4 for the last 4 or fewer.
        let pad = p.pads[1];
        let mut blocks = Vec::new();
        let mut ox = 0;
        while ox < ow {
            let q = if ow - ox <= 4 { 4 } else { P };
            blocks.push((ox as isize - pad as isize, ox + q - 1 + p.kw));
            ox += q;
        }
        if blocks
            .iter()
            .any(|&(first, end)| first >= 0 && end <= w + pad)
        {
            // Some blocks inside the image: the copy cost more than the masks it saved
            // (240 channels 5 x 5 at 28 x 28, half the blocks at an edge: 77-85 -> 90-93 us).
            return None;
        }
        let width = blocks.iter().map(|b| b.1).max().unwrap_or(0).max(pad + w);
        let row_bytes = width * LANES * f32s;
        let fits = |t: usize| ((t - 1) * p.stride.0 + p.kh) * row_bytes <= L1_TILE_BYTES;
        if !fits(1) {
            // Rows too wide: each would be copied for every output row that reads it.
            return None;
        }
        let mut tile = 1;
        while tile < 256 && fits(tile + 1) {
            tile += 1;
        }
        Some(Packing { tile, width, pad })
    }
}
