//! Turning an RGB8 image into a model input, the way torchvision does it on a PIL image.

use std::path::Path;

use crate::error::{Error, Result};

use super::jpeg::decode_jpeg_rgb8;
use super::resize::resize_window;
use crate::files::MAX_IMAGE_FILE_BYTES;

/// Largest image width or height haste decodes or produces.
pub const MAX_IMAGE_SIDE: usize = 16384;

/// How to turn an image into the model's input: the torchvision pipeline
/// `Resize(resize_shorter_side)` (PIL bilinear) -> `CenterCrop(center_crop)` -> `ToTensor`
/// -> `Normalize(mean, std)`.
///
/// [`Preprocess::apply_rgb8`] runs, on an interleaved RGB8 image of size `w x h`:
/// 1. if `resize_shorter_side == Some(s)`: resize (Pillow bilinear, bit-exact) so the shorter
///    side is `s` and the longer one `int(s * long / short)`, as torchvision `Resize(s)`;
/// 2. if `center_crop == Some(c)`: crop `c x c` at `top = round((h - c) / 2)`,
///    `left = round((w - c) / 2)` (Python's round half to even), zero-padding (torchvision
///    style) when the image is smaller than `c`;
/// 3. if the image is still not `height x width`: resize it to exactly `width x height` with the
///    same bilinear filter (torchvision `Resize((height, width))`); a CIFAR image fed to a
///    224x224 model goes through this step;
/// 4. `value = (pixel / (1 / pixel_scale) - mean[c]) / std[c]` in f32, written CHW. When
///    `1 / pixel_scale` is an integer (255 for the usual `1/255`) the division is done by that
///    integer, exactly as torchvision's `ToTensor` (`x.float().div(255)`), so the floats match
///    PyTorch bit for bit; otherwise `pixel * pixel_scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Number of input channels; haste supports 3 (RGB).
    pub channels: usize,
    /// Network input height.
    pub height: usize,
    /// Network input width.
    pub width: usize,
    /// Factor from a `u8` pixel to the value before normalization, e.g. `1/255`.
    pub pixel_scale: f32,
    /// Per-channel mean subtracted after scaling (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean (R, G, B).
    pub std: [f32; 3],
    /// Resize the shorter side to this many pixels first (torchvision `Resize(n)`).
    pub resize_shorter_side: Option<usize>,
    /// Then center-crop a square of this size (torchvision `CenterCrop(n)`).
    pub center_crop: Option<usize>,
}

impl Preprocess {
    /// Defaults for a `height x width` RGB input: pixel scale `1/255`, mean 0, std 1, no resize,
    /// no crop (images of another size are resized to `height x width`).
    ///
    /// ```
    /// use haste::datasets::Preprocess;
    /// let p = Preprocess::new(224, 224)
    ///     .with_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ///     .with_resize_shorter_side(Some(256))
    ///     .with_center_crop(Some(224));
    /// assert!(p.validate().is_ok());
    /// assert_eq!(p.input_len(), 3 * 224 * 224);
    /// ```
    pub fn new(height: usize, width: usize) -> Preprocess {
        Preprocess {
            channels: 3,
            height,
            width,
            pixel_scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize_shorter_side: None,
            center_crop: None,
        }
    }

    /// Sets the per-channel mean and standard deviation.
    pub fn with_mean_std(mut self, mean: [f32; 3], std: [f32; 3]) -> Preprocess {
        self.mean = mean;
        self.std = std;
        self
    }

    /// Sets the pixel scale (value before normalization = `pixel * scale`).
    pub fn with_pixel_scale(mut self, pixel_scale: f32) -> Preprocess {
        self.pixel_scale = pixel_scale;
        self
    }

    /// Sets the shorter-side resize (`None`: no resize step).
    pub fn with_resize_shorter_side(mut self, side: Option<usize>) -> Preprocess {
        self.resize_shorter_side = side;
        self
    }

    /// Sets the center crop (`None`: no crop step).
    pub fn with_center_crop(mut self, crop: Option<usize>) -> Preprocess {
        self.center_crop = crop;
        self
    }

    /// Number of floats of one preprocessed image: `channels * height * width`.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Checks the settings; the error message names the offending field (e.g. `std[1] is 0`).
    /// Callers wrap it in [`Error::Card`] or [`Error::InvalidArgument`].
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channels != 3 {
            return Err(format!(
                "channels is {}, only 3 (RGB) is supported",
                self.channels
            ));
        }
        for (name, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v > MAX_IMAGE_SIDE {
                return Err(format!("{name} is {v}, must be in 1..={MAX_IMAGE_SIDE}"));
            }
        }
        if !self.pixel_scale.is_finite() || self.pixel_scale <= 0.0 {
            return Err(format!(
                "pixel_scale is {}, must be finite and > 0",
                self.pixel_scale
            ));
        }
        for c in 0..3 {
            if !self.mean[c].is_finite() {
                return Err(format!("mean[{c}] is {}, must be finite", self.mean[c]));
            }
            if !self.std[c].is_finite() || self.std[c] == 0.0 {
                return Err(format!(
                    "std[{c}] is {}, must be finite and non-zero",
                    self.std[c]
                ));
            }
        }
        for (name, v) in [
            ("resize_shorter_side", self.resize_shorter_side),
            ("center_crop", self.center_crop),
        ] {
            if let Some(v) = v {
                if v == 0 || v > MAX_IMAGE_SIDE {
                    return Err(format!("{name} is {v}, must be in 1..={MAX_IMAGE_SIDE}"));
                }
            }
        }
        if let (Some(r), Some(c)) = (self.resize_shorter_side, self.center_crop) {
            if c > r {
                return Err(format!(
                    "center_crop {c} is bigger than resize_shorter_side {r}"
                ));
            }
        }
        Ok(())
    }

    /// Per-channel lookup table `u8 -> normalized f32` (step 4 of the pipeline).
    pub fn lut(&self) -> Box<[[f32; 256]; 3]> {
        let inv = 1.0 / f64::from(self.pixel_scale);
        let divisor = inv.round();
        let by_division = (inv - divisor).abs() < 1e-4 && divisor >= 1.0;
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (p, v) in table.iter_mut().enumerate() {
                let x = if by_division {
                    p as f32 / divisor as f32
                } else {
                    p as f32 * self.pixel_scale
                };
                *v = (x - self.mean[c]) / self.std[c];
            }
        }
        lut
    }

    /// Steps 1-3 of the pipeline: the `height x width` RGB8 image the model sees, before
    /// normalization. `rgb` is interleaved RGB8, `w x h`.
    ///
    /// # Panics
    /// If `rgb.len() != 3 * w * h`, a size is zero, or the settings do not [`validate`](Self::validate).
    pub fn geometry_rgb8(&self, rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
        assert_eq!(rgb.len(), 3 * w * h, "RGB8 buffer length");
        assert!(w > 0 && h > 0, "empty image");
        // Step 1 (+2 fused): resize shorter side, computing only the cropped window.
        let (rw, rh) = match self.resize_shorter_side {
            Some(s) => resized_size(w, h, s),
            None => (w, h),
        };
        let (cw, ch) = match self.center_crop {
            Some(c) => (c, c),
            None => (rw, rh),
        };
        let (left, top) = (crop_offset(rw, cw), crop_offset(rh, ch));
        let mut img = vec![0u8; 3 * cw * ch];
        // Intersection of the crop window with the resized image (zero padding outside).
        let x0 = left.max(0) as usize;
        let y0 = top.max(0) as usize;
        let x1 = ((left + cw as i64).min(rw as i64)) as usize;
        let y1 = ((top + ch as i64).min(rh as i64)) as usize;
        let (iw, ih) = (x1 - x0, y1 - y0);
        let (dx, dy) = ((x0 as i64 - left) as usize, (y0 as i64 - top) as usize);
        if iw == cw && ih == ch {
            if (rw, rh) == (w, h) && (cw, ch) == (w, h) {
                img.copy_from_slice(rgb);
            } else {
                resize_window(rgb, w, h, rw, rh, (x0, y0, iw, ih), &mut img);
            }
        } else if iw > 0 && ih > 0 {
            let mut inner = vec![0u8; 3 * iw * ih];
            resize_window(rgb, w, h, rw, rh, (x0, y0, iw, ih), &mut inner);
            for r in 0..ih {
                let d = 3 * ((dy + r) * cw + dx);
                img[d..d + 3 * iw].copy_from_slice(&inner[3 * iw * r..3 * iw * (r + 1)]);
            }
        }
        // Step 3: fit to the network size.
        if (cw, ch) != (self.width, self.height) {
            img = super::resize::resize_bilinear_rgb8(&img, cw, ch, self.width, self.height);
        }
        img
    }

    /// Runs the whole pipeline on an interleaved RGB8 image (`w x h`) and writes CHW floats
    /// into `out` (`input_len()` floats).
    pub fn apply_rgb8(&self, rgb: &[u8], w: usize, h: usize, out: &mut [f32]) -> Result<()> {
        self.validate().map_err(Error::InvalidArgument)?;
        check_out_len(self, out)?;
        if rgb.len() != 3 * w * h || w == 0 || h == 0 {
            return Err(Error::InvalidArgument(format!(
                "RGB8 buffer of {} bytes does not hold a {w}x{h} image",
                rgb.len()
            )));
        }
        let lut = self.lut();
        normalize_chw(&self.geometry_rgb8(rgb, w, h), &lut, out);
        Ok(())
    }

    /// Decodes an image file (JPEG or PNG) and runs the pipeline into `out`; errors name `path`.
    pub fn load_image(&self, path: &Path, out: &mut [f32]) -> Result<()> {
        let (rgb, w, h) = decode_rgb8(path)?;
        self.apply_rgb8(&rgb, w, h, out)
    }
}

pub(crate) fn check_out_len(p: &Preprocess, out: &[f32]) -> Result<()> {
    if out.len() != p.input_len() {
        return Err(Error::Shape(format!(
            "output buffer holds {} floats, the input is {}x{}x{} = {}",
            out.len(),
            p.channels,
            p.height,
            p.width,
            p.input_len()
        )));
    }
    Ok(())
}

/// Interleaved RGB8 (`h x w`) to CHW floats through a per-channel lookup table.
pub(crate) fn normalize_chw(rgb: &[u8], lut: &[[f32; 256]; 3], out: &mut [f32]) {
    let plane = rgb.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
}

/// torchvision `Resize(s)` output size for a `w x h` image: the shorter side becomes `s`, the
/// longer one `int(s * long / short)` (Python float division, truncated).
pub fn resized_size(w: usize, h: usize, s: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((s as f64 * long as f64) / short as f64) as usize;
    if w <= h {
        (s, new_long.max(1))
    } else {
        (new_long.max(1), s)
    }
}

/// torchvision `CenterCrop` offset: `int(round((size - crop) / 2.0))` with Python's round half
/// to even; negative when the crop is bigger (torchvision pads `(crop - size) // 2` first).
fn crop_offset(size: usize, crop: usize) -> i64 {
    if crop > size {
        -(((crop - size) / 2) as i64)
    } else {
        let d = (size - crop) as i64;
        // round(d / 2) with ties to even
        let q = d / 2;
        if d % 2 == 1 && q % 2 == 1 {
            q + 1
        } else {
            q
        }
    }
}

/// Decodes a JPEG or PNG file to interleaved RGB8, refusing images wider or taller than
/// [`MAX_IMAGE_SIDE`] before allocating. Returns `(pixels, width, height)`; errors name `path`.
///
/// The format is taken from the file's first bytes, not its extension:
/// * JPEG (`FF D8`): libjpeg-turbo's decoder (the C code in MozJPEG, built from crates.io) at
///   Pillow's settings, so the pixels equal `PIL.Image.open(path).convert("RGB")` bit for bit
///   (grayscale JPEGs replicated to RGB, CMYK/YCCK converted as Pillow does; a truncated or
///   corrupt file is an [`Error::Dataset`]; see `src/datasets/jpeg.rs`);
/// * anything else (PNG): the `image` crate; grayscale and 16-bit images are converted to RGB8
///   (`image`'s `to_rgb8`), alpha is dropped. PNG decoding is lossless, so 8-bit RGB PNGs give
///   Pillow's pixels too.
pub fn decode_rgb8(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let data = crate::files::read_regular(path, MAX_IMAGE_FILE_BYTES, "image")?;
    decode_rgb8_bytes(path, &data)
}

/// [`decode_rgb8`] of an image file's bytes already in memory (`path` names it in errors).
pub fn decode_rgb8_bytes(path: &Path, data: &[u8]) -> Result<(Vec<u8>, usize, usize)> {
    if data.starts_with(&[0xFF, 0xD8]) {
        return decode_jpeg_rgb8(path, data);
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(2 << 30);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => Error::Limits {
            path: path.to_path_buf(),
            message: format!("image refused: {l} (at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE})"),
        },
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::dataset(path, format!("cannot decode image: {other}")),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::dataset(path, format!("image is empty ({w}x{h})")));
    }
    let rgb = match img {
        image::DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    Ok((rgb, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_rule() {
        assert_eq!(resized_size(227, 227, 256), (256, 256));
        assert_eq!(resized_size(500, 375, 256), (341, 256)); // 256*500/375 = 341.33
        assert_eq!(resized_size(375, 500, 256), (256, 341));
        assert_eq!(resized_size(300, 256, 256), (300, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(257, 224), 16); // round(16.5) = 16
        assert_eq!(crop_offset(259, 224), 18); // round(17.5) = 18
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(200, 224), -12);
    }

    #[test]
    fn crop_with_padding_fills_zero() {
        let p = Preprocess::new(4, 4).with_center_crop(Some(4));
        let rgb = vec![200u8; 3 * 2 * 2];
        let img = p.geometry_rgb8(&rgb, 2, 2);
        let ch0: Vec<u8> = img.chunks(3).map(|px| px[0]).collect();
        #[rustfmt::skip]
        assert_eq!(ch0, vec![0, 0, 0, 0, 0, 200, 200, 0, 0, 200, 200, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn normalization_matches_torch_formula() {
        let p = Preprocess::new(1, 1).with_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let mut out = [0f32; 3];
        p.apply_rgb8(&[255, 0, 128], 1, 1, &mut out).unwrap();
        assert_eq!(out[0], (255f32 / 255.0 - 0.485) / 0.229);
        assert_eq!(out[1], (0f32 / 255.0 - 0.456) / 0.224);
        assert_eq!(out[2], (128f32 / 255.0 - 0.406) / 0.225);
    }

    #[test]
    fn validate_names_fields() {
        let mut p = Preprocess::new(32, 32);
        p.std[1] = 0.0;
        assert!(p.validate().unwrap_err().contains("std[1]"));
        let p = Preprocess::new(0, 32);
        assert!(p.validate().unwrap_err().contains("height"));
        let p = Preprocess::new(224, 224)
            .with_resize_shorter_side(Some(200))
            .with_center_crop(Some(224));
        assert!(p.validate().unwrap_err().contains("center_crop"));
    }
}
