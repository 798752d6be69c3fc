//! Convolution parameters: all the shape arithmetic of a 2-D convolution in one place.

use crate::error::{Error, Result};

/// A 2-D convolution's geometry (ONNX `Conv`, NCHW, weights OIHW = `[c_out, c_in/groups, kh, kw]`).
///
/// ```
/// use haste::ops::Conv2dParams;
/// let p = Conv2dParams::new(16, 32, 3, 3).with_stride(2, 2).with_pads([1, 1, 1, 1]);
/// assert_eq!(p.out_hw(32, 32), (16, 16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    /// (vertical, horizontal)
    pub stride: (usize, usize),
    /// (vertical, horizontal)
    pub dilation: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub groups: usize,
}

impl Conv2dParams {
    /// A stride-1, unpadded, undilated, ungrouped convolution.
    pub fn new(c_in: usize, c_out: usize, kh: usize, kw: usize) -> Self {
        Conv2dParams {
            c_in,
            c_out,
            kh,
            kw,
            stride: (1, 1),
            dilation: (1, 1),
            pads: [0; 4],
            groups: 1,
        }
    }

    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    pub fn with_pads(mut self, pads: [usize; 4]) -> Self {
        self.pads = pads;
        self
    }

    pub fn with_dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = (dh, dw);
        self
    }

    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// A 1x1 kernel, whatever its stride and padding.
    pub fn is_1x1(&self) -> bool {
        self.kh == 1 && self.kw == 1
    }

    /// A pointwise convolution: 1x1, stride 1, no padding, so each image's input is its own
    /// column matrix (one GEMM per group; in either memory order when there is one group).
    pub fn is_pointwise(&self) -> bool {
        self.is_1x1() && self.stride == (1, 1) && self.pads == [0; 4]
    }

    /// Checks that the geometry is usable (non-zero sizes, groups dividing channels).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(format!("convolution {self:?}: {m}")));
        if self.c_in == 0 || self.c_out == 0 || self.kh == 0 || self.kw == 0 {
            return bad("zero channels or kernel size");
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return bad("zero stride");
        }
        if self.dilation.0 == 0 || self.dilation.1 == 0 {
            return bad("zero dilation");
        }
        if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            return bad("groups must divide both channel counts");
        }
        Ok(())
    }

    /// Effective (dilated) kernel extent (vertical, horizontal).
    pub fn kernel_extent(&self) -> (usize, usize) {
        (
            (self.kh - 1) * self.dilation.0 + 1,
            (self.kw - 1) * self.dilation.1 + 1,
        )
    }

    /// Output height and width for an input of `h` x `w` (0 if the kernel does not fit).
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let (eh, ew) = self.kernel_extent();
        let ph = h + self.pads[0] + self.pads[2];
        let pw = w + self.pads[1] + self.pads[3];
        let oh = if ph >= eh {
            (ph - eh) / self.stride.0 + 1
        } else {
            0
        };
        let ow = if pw >= ew {
            (pw - ew) / self.stride.1 + 1
        } else {
            0
        };
        (oh, ow)
    }

    /// Input channels per group.
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.groups
    }

    /// Multiply-accumulates of the dense convolution for one image of `h` x `w`.
    pub fn dense_macs(&self, h: usize, w: usize) -> u64 {
        let (oh, ow) = self.out_hw(h, w);
        (self.c_out * self.c_in_per_group() * self.kh * self.kw * oh * ow) as u64
    }
}
