//! Dumps, for the first N images of an image folder, the decoded RGB8 pixels and the RGB8 image
//! after resize(shorter side 256, Pillow bilinear) + center-crop 224, as raw files, for
//! `tools/compare_pillow.py` to compare with Pillow.
//!
//! `cargo run --release --example dump_pixels -- ROOT N OUTDIR`

use std::path::PathBuf;

use haste::datasets::{decode_rgb8, Dataset, ImageFolder, Preprocess};

fn main() -> haste::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: dump_pixels ROOT N OUTDIR");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[1]);
    let n: usize = args[2]
        .parse()
        .map_err(|_| haste::Error::InvalidArgument("N".into()))?;
    let out = PathBuf::from(&args[3]);
    std::fs::create_dir_all(&out).map_err(|e| haste::Error::io(&out, e))?;
    let p = Preprocess::new(224, 224)
        .with_resize_shorter_side(Some(256))
        .with_center_crop(Some(224));
    let folder = ImageFolder::open(&root, &p, None)?;
    let mut list = String::new();
    for i in 0..n.min(folder.len()) {
        let (rgb, w, h) = decode_rgb8(folder.path(i))?;
        let geo = p.geometry_rgb8(&rgb, w, h);
        let f = out.join(format!("{i}.decoded"));
        std::fs::write(&f, &rgb).map_err(|e| haste::Error::io(&f, e))?;
        let f = out.join(format!("{i}.crop"));
        std::fs::write(&f, &geo).map_err(|e| haste::Error::io(&f, e))?;
        list.push_str(&format!("{}\t{w}\t{h}\n", folder.path(i).display()));
    }
    let f = out.join("list.tsv");
    std::fs::write(&f, list).map_err(|e| haste::Error::io(&f, e))?;
    Ok(())
}
