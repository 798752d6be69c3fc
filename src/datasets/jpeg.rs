//! JPEG decoding that matches Pillow bit for bit.
//!
//! Pillow decodes JPEGs with libjpeg-turbo at its defaults (`JDCT_ISLOW` integer IDCT, fancy
//! (triangle) chroma upsampling, libjpeg's YCbCr -> RGB tables). haste builds the same C decoder
//! (the libjpeg-turbo code inside MozJPEG, through the `mozjpeg` / `mozjpeg-sys` crates, compiled
//! by `cc`, no NASM SIMD) and runs it with the same defaults, so the decoded pixels are those of
//! `PIL.Image.open(path).convert("RGB")`: identical for all 1300 images of the ImageNet sample.
//!
//! Color spaces follow Pillow's `JpegImagePlugin` + `convert("RGB")`:
//! * 1 component (grayscale): libjpeg's gray -> RGB replicates the value, as Pillow's `L -> RGB`;
//! * 3 components (YCbCr, or RGB per the Adobe marker): libjpeg's RGB output;
//! * 4 components (CMYK or YCCK): decoded to CMYK, inverted (Pillow's `CMYK;I` raw mode, which it
//!   assumes for every 4-component JPEG, "Adobe conventions"), then Pillow's `cmyk2rgb`
//!   (`nk = 255 - k`, `r = nk - c * nk / 255` with Pillow's rounding);
//! * anything else is refused.
//!
//! Errors: libjpeg's fatal errors (`error_exit`) unwind (`resume_unwind`, no panic message) out
//! of the C code (compiled with `-fexceptions`, declared `extern "C-unwind"`) and are caught here
//! with `catch_unwind`; the message becomes an [`Error::Dataset`] naming the file. A file that
//! ends before the image is complete (libjpeg's `JWRN_JPEG_EOF` warning: truncated data or a
//! missing EOI marker) is an error too, as in Pillow ("image file is truncated"); libjpeg's other
//! warnings (e.g. corrupt entropy data it can resynchronize past) are ignored, as Pillow does.
//! This relies on `panic = "unwind"` (the default; with `panic = "abort"` a corrupt JPEG aborts).

use std::os::raw::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{
    jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JERR_FILE_READ, JWRN_JPEG_EOF,
};

use crate::error::{Error, Result};

use super::preprocess::MAX_IMAGE_SIDE;

/// libjpeg's `JMSG_LENGTH_MAX`: the buffer `format_message` may fill.
const JMSG_LENGTH_MAX: usize = 200;

/// Payload of the unwinds started by the error manager below.
struct JpegFailure(String);

/// libjpeg's message for the current `msg_code`, formatted by its `format_message`.
fn libjpeg_message(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: `cinfo.err` points at the error manager installed by `error_mgr` (it lives as long
    // as the `Decompress`); `format_message` writes at most JMSG_LENGTH_MAX bytes, NUL included.
    unsafe {
        let Some(err) = cinfo.err.as_ref() else {
            return "libjpeg error".to_string();
        };
        let code = err.msg_code;
        let Some(fmt) = err.format_message else {
            return format!("libjpeg error {code}");
        };
        let mut buf = [0u8; JMSG_LENGTH_MAX];
        // The binding declares the buffer as `&[u8; 80]`; libjpeg takes a `char *` it writes up
        // to JMSG_LENGTH_MAX bytes into, so call it with a pointer to a large enough buffer.
        let fmt: unsafe extern "C-unwind" fn(*mut jpeg_common_struct, *mut u8) =
            std::mem::transmute(fmt);
        fmt(cinfo, buf.as_mut_ptr());
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }
}

const TRUNCATED: &str = "image file is truncated (premature end of JPEG data)";

extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // SAFETY: as in `libjpeg_message`.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code) };
    // The data comes from memory, so the source manager's "read error" (raised when skipping a
    // marker segment runs past the end) can only mean the file ends too early.
    let message = if code == Some(JERR_FILE_READ as c_int) {
        TRUNCATED.to_string()
    } else {
        libjpeg_message(cinfo)
    };
    resume_unwind(Box::new(JpegFailure(message)));
}

extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, msg_level: c_int) {
    // SAFETY: as in `libjpeg_message`.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code) };
    if msg_level < 0 && code == Some(JWRN_JPEG_EOF as c_int) {
        resume_unwind(Box::new(JpegFailure(TRUNCATED.to_string())));
    }
}

fn error_mgr() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is plain C data (pointers, integers, optional fn pointers) for
    // which all-zero is valid; `jpeg_std_error` fills in the defaults.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }
}

/// Pillow's `MULDIV255(a, b)`: `a * b / 255` rounded.
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// Pillow's `CMYK;I` unpacking (invert) followed by its `cmyk2rgb`, in place of a CMYK buffer.
fn inverted_cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let nk = u32::from(px[3]); // 255 - (255 - raw k)
        for &c in &px[..3] {
            let c = 255 - u32::from(c);
            rgb.push(nk.saturating_sub(muldiv255(c, nk)) as u8);
        }
    }
    rgb
}

/// Decodes the JPEG file `path` (its bytes are `data`) to interleaved RGB8 exactly as Pillow
/// does (see the module documentation). Refuses images wider or taller than [`MAX_IMAGE_SIDE`]
/// after reading the header, before libjpeg allocates the image buffers.
pub(crate) fn decode_jpeg_rgb8(path: &Path, data: &[u8]) -> Result<(Vec<u8>, usize, usize)> {
    let decoded = catch_unwind(AssertUnwindSafe(|| -> Result<(Vec<u8>, usize, usize)> {
        let io_err = |what: &str, e: std::io::Error| {
            Error::dataset(path, format!("cannot decode JPEG ({what}): {e}"))
        };
        let dec = Decompress::builder()
            .with_err(error_mgr())
            .from_mem(data)
            .map_err(|e| io_err("header", e))?;
        let (w, h) = dec.size();
        if w == 0 || h == 0 {
            return Err(Error::dataset(path, format!("image is empty ({w}x{h})")));
        }
        if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
            return Err(Error::Limits {
                path: path.to_path_buf(),
                message: format!(
                    "image refused: {w}x{h} is larger than {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"
                ),
            });
        }
        let components = dec.components().len();
        let cmyk = match (dec.color_space(), components) {
            (ColorSpace::JCS_GRAYSCALE, 1)
            | (ColorSpace::JCS_YCbCr, 3)
            | (ColorSpace::JCS_RGB, 3) => false,
            (ColorSpace::JCS_CMYK, 4) | (ColorSpace::JCS_YCCK, 4) => true,
            (cs, n) => {
                return Err(Error::dataset(
                    path,
                    format!("unsupported JPEG color space {cs:?} with {n} component(s)"),
                ))
            }
        };
        let out_space = if cmyk {
            ColorSpace::JCS_CMYK
        } else {
            ColorSpace::JCS_RGB
        };
        let mut started = dec
            .to_colorspace(out_space)
            .map_err(|e| io_err("start", e))?;
        if (started.width(), started.height()) != (w, h) {
            return Err(Error::Internal(format!(
                "libjpeg output size {}x{} differs from the header's {w}x{h}",
                started.width(),
                started.height()
            )));
        }
        let pixels: Vec<u8> = started
            .read_scanlines()
            .map_err(|e| io_err("scanlines", e))?;
        started.finish().map_err(|e| io_err("finish", e))?;
        let channels = if cmyk { 4 } else { 3 };
        if pixels.len() != w * h * channels {
            return Err(Error::dataset(
                path,
                format!(
                    "cannot decode JPEG: got {} bytes for {w}x{h}x{channels}",
                    pixels.len()
                ),
            ));
        }
        let rgb = if cmyk {
            inverted_cmyk_to_rgb(&pixels)
        } else {
            pixels
        };
        Ok((rgb, w, h))
    }));
    match decoded {
        Ok(r) => r,
        Err(payload) => {
            let message = if let Some(JpegFailure(m)) = payload.downcast_ref::<JpegFailure>() {
                m.clone()
            } else if let Some(m) = payload.downcast_ref::<String>() {
                m.clone()
            } else if let Some(m) = payload.downcast_ref::<&str>() {
                m.to_string()
            } else {
                "unknown failure".to_string()
            };
            Err(Error::dataset(
                path,
                format!("cannot decode JPEG: {message}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_cmyk_conversion() {
        // raw (inverted) CMYK as stored by Adobe: 255 = no ink.
        assert_eq!(
            inverted_cmyk_to_rgb(&[255, 255, 255, 255]),
            vec![255, 255, 255]
        );
        assert_eq!(inverted_cmyk_to_rgb(&[0, 0, 0, 255]), vec![0, 0, 0]);
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
        assert_eq!(inverted_cmyk_to_rgb(&[127, 255, 0, 200]), vec![100, 200, 0]);
    }
}
