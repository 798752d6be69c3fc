//! Datasets, preprocessing and model cards against the real data in ../shared.

mod common;

use common::TempDir;
use std::path::{Path, PathBuf};

use haste::datasets::{
    decode_rgb8, load_labels, open_dataset, resize_bilinear_rgb8, ModelCard, Preprocess,
    CIFAR_RECORD,
};
use haste::Error;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");

fn shared(rel: &str) -> PathBuf {
    Path::new(SHARED).join(rel)
}

fn cifar_pre() -> Preprocess {
    Preprocess::new(32, 32).with_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
}

/// A fresh, empty scratch folder under the system temp dir.
fn scratch(name: &str) -> TempDir {
    TempDir::new("datasets", name)
}

fn err_text(e: &Error) -> String {
    e.to_string()
}

#[test]
fn cifar_first20_labels() {
    let ds = open_dataset(
        &shared("data/cifar10/test_first20_lossless.bin"),
        &cifar_pre(),
        None,
    )
    .unwrap();
    assert_eq!(ds.len(), 20);
    let labels: Vec<usize> = (0..20).map(|i| ds.label(i)).collect();
    assert_eq!(
        labels,
        [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    assert_eq!(ds.item_name(17), "record 17");
}

#[test]
fn cifar_jpeg_batch_is_class_balanced() {
    let ds = open_dataset(
        &shared("data/cifar10/test_batch_jpeg.bin"),
        &cifar_pre(),
        None,
    )
    .unwrap();
    assert_eq!(ds.len(), 10000);
    for prefix in [10, 100, 1000] {
        let mut counts = [0usize; 10];
        for i in 0..prefix {
            counts[ds.label(i)] += 1;
        }
        assert!(
            counts.iter().all(|&c| c == prefix / 10),
            "prefix {prefix}: {counts:?}"
        );
    }
}

#[test]
fn cifar_record0_pixels_after_normalization() {
    let path = shared("data/cifar10/test_first20_lossless.bin");
    let raw = std::fs::read(&path).unwrap();
    let p = cifar_pre();
    let ds = open_dataset(&path, &p, None).unwrap();
    let mut out = vec![0f32; p.input_len()];
    ds.load(0, &mut out).unwrap();
    // Planar file layout == CHW output layout.
    for (c, (mean, std)) in p.mean.iter().zip(p.std).enumerate() {
        for i in [0usize, 1, 31, 32, 500, 1023] {
            let byte = raw[1 + c * 1024 + i];
            let expect = (byte as f32 * p.pixel_scale - mean) / std;
            let got = out[c * 1024 + i];
            assert!(
                (got - expect).abs() < 1e-5,
                "c {c} i {i}: {got} vs {expect}"
            );
        }
    }
    ds.load(19, &mut out).unwrap();
    let byte = raw[19 * CIFAR_RECORD + 1 + 2048 + 7];
    assert!((out[2048 + 7] - (byte as f32 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
}

#[test]
fn cifar_upscaled_to_other_input_size() {
    let p = Preprocess::new(64, 64);
    let ds = open_dataset(&shared("data/cifar10/test_first20_lossless.bin"), &p, None).unwrap();
    let mut out = vec![0f32; p.input_len()];
    ds.load(0, &mut out).unwrap();
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn cifar_folder_with_test_batch() {
    let dir = scratch("cifar-folder");
    let src = std::fs::read(shared("data/cifar10/test_first20_lossless.bin")).unwrap();
    std::fs::write(dir.join("test_batch.bin"), &src[..5 * CIFAR_RECORD]).unwrap();
    let ds = open_dataset(&dir, &cifar_pre(), None).unwrap();
    assert_eq!(ds.len(), 5);
    assert!(ds.source().ends_with("test_batch.bin"));
}

#[test]
fn imagenet_folder_with_tiny_darknet_labels() {
    let card = ModelCard::load(&shared("models/tiny-darknet-imagenet.json")).unwrap();
    let labels = card.labels.clone().unwrap();
    assert_eq!(labels.len(), 1000);
    let root = shared("data/imagenet-val-1300/val");
    let ds = open_dataset(&root, &card.preprocess, Some(&labels)).unwrap();
    assert_eq!(ds.len(), 1300);
    assert!(ds
        .item_name(0)
        .ends_with("n01440764/ILSVRC2012_val_00023559.JPEG"));
    let expect = labels.iter().position(|l| l == "n01440764").unwrap();
    assert_eq!(ds.label(0), expect);
    let mut out = vec![0f32; card.preprocess.input_len()];
    assert_eq!(out.len(), 3 * 224 * 224);
    ds.load(0, &mut out).unwrap();
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    // Without labels: torchvision's sorted class order.
    let ds = open_dataset(&root, &card.preprocess, None).unwrap();
    assert_eq!(ds.label(0), 0);
    assert_eq!(ds.label(ds.len() - 1), 724);
}

#[test]
fn model_cards() {
    let c = ModelCard::load(&shared("models/resnet20-cifar10.json")).unwrap();
    assert_eq!(c.name, "resnet20-cifar10");
    assert_eq!((c.preprocess.height, c.preprocess.width), (32, 32));
    assert_eq!(c.preprocess.resize_shorter_side, None);
    assert_eq!(c.labels.as_ref().unwrap()[3], "cat");
    assert_eq!(c.reference_top1, Some(81.03));
    assert_eq!(c.reference_top5, None);

    let c = ModelCard::beside_model(&shared("models/tiny-darknet-imagenet.onnx"))
        .unwrap()
        .unwrap();
    assert_eq!(c.preprocess.resize_shorter_side, Some(256));
    assert_eq!(c.preprocess.center_crop, Some(224));
    assert_eq!(c.preprocess.std, [1.0; 3]);
    assert_eq!(c.reference_top1, Some(69.92));
    assert_eq!(c.reference_top5, Some(91.0));
    let labels = load_labels(&shared("models/tiny-darknet-imagenet.labels.txt")).unwrap();
    assert_eq!(c.labels.unwrap(), labels);

    let c = ModelCard::load(&shared("models/resnet18-randominit-imagenet.json")).unwrap();
    assert_eq!(c.preprocess.mean, [0.485, 0.456, 0.406]);
    assert!(c.labels.is_none() && c.reference_top1.is_none());

    assert!(
        ModelCard::beside_model(Path::new("/nonexistent/model.onnx"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_cifar_files() {
    let dir = scratch("bad-cifar");
    let src = std::fs::read(shared("data/cifar10/test_first20_lossless.bin")).unwrap();

    let truncated = dir.join("truncated.bin");
    std::fs::write(&truncated, &src[..2 * CIFAR_RECORD + 100]).unwrap();
    let e = open_dataset(&truncated, &cifar_pre(), None).err().unwrap();
    assert!(matches!(e, Error::Dataset { .. }), "{e}");
    assert!(
        err_text(&e).contains("truncated.bin") && err_text(&e).contains("multiple"),
        "{e}"
    );

    let bad_label = dir.join("label10.bin");
    let mut data = src[..3 * CIFAR_RECORD].to_vec();
    data[2 * CIFAR_RECORD] = 10;
    std::fs::write(&bad_label, &data).unwrap();
    let e = open_dataset(&bad_label, &cifar_pre(), None).err().unwrap();
    assert!(
        err_text(&e).contains("label10.bin") && err_text(&e).contains("record 2"),
        "{e}"
    );

    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let e = open_dataset(&empty, &cifar_pre(), None).err().unwrap();
    assert!(
        err_text(&e).contains("empty.bin") && err_text(&e).contains("empty"),
        "{e}"
    );

    let e = open_dataset(&dir.join("missing.bin"), &cifar_pre(), None)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

fn write_png_gray(path: &Path) {
    let img = image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 5 + y) as u8]));
    img.save(path).unwrap();
}

fn write_png_rgb16(path: &Path) {
    let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(20, 50, |x, y| {
        image::Rgb([(x * 3000) as u16, (y * 1000) as u16, 65535])
    });
    img.save(path).unwrap();
}

#[test]
fn bad_and_unusual_image_folders() {
    let p = Preprocess::new(16, 16)
        .with_resize_shorter_side(Some(20))
        .with_center_crop(Some(16));

    let empty = scratch("empty-folder");
    let e = open_dataset(&empty, &p, None).err().unwrap();
    assert!(
        matches!(e, Error::Dataset { .. }) && err_text(&e).contains("empty-folder"),
        "{e}"
    );
    std::fs::create_dir_all(empty.join("classA")).unwrap();
    std::fs::write(empty.join("classA/readme.txt"), "not an image").unwrap();
    let e = open_dataset(&empty, &p, None).err().unwrap();
    assert!(err_text(&e).contains("no .jpg"), "{e}");

    let root = scratch("folder");
    std::fs::create_dir_all(root.join("cat")).unwrap();
    std::fs::create_dir_all(root.join("dog")).unwrap();
    write_png_gray(&root.join("cat/a_gray.png"));
    std::fs::rename(root.join("cat/a_gray.png"), root.join("cat/a_gray.PNG")).unwrap();
    write_png_rgb16(&root.join("cat/b_rgb16.png"));
    let corrupt = root.join("dog/broken.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let zero = root.join("dog/zzz_zero.png");
    std::fs::write(&zero, [0x89, b'P', b'N', b'G', 13, 10, 26, 10]).unwrap();

    let labels: Vec<String> = ["bird", "dog", "cat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ds = open_dataset(&root, &p, Some(&labels)).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!((ds.label(0), ds.label(1), ds.label(2)), (2, 2, 1));
    let mut out = vec![0f32; p.input_len()];
    ds.load(0, &mut out).unwrap(); // grayscale PNG (upper-case extension)
    assert!(out.iter().any(|&v| v > 0.0));
    assert_eq!(
        out[..256],
        out[256..512],
        "gray: the three planes are equal"
    );
    ds.load(1, &mut out).unwrap(); // 16-bit RGB PNG
    assert!(
        out[512..].iter().all(|&v| v == 1.0),
        "blue plane is 65535 -> 255"
    );
    let e = ds.load(2, &mut out).unwrap_err();
    assert!(
        matches!(e, Error::Dataset { .. }) && err_text(&e).contains("broken.jpg"),
        "{e}"
    );
    let e = ds.load(3, &mut out).unwrap_err();
    assert!(err_text(&e).contains("zzz_zero.png"), "{e}");
    let e = ds.load(0, &mut out[1..]).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e}");

    let only_cats = vec!["cat".to_string()];
    let e = open_dataset(&root, &p, Some(&only_cats)).err().unwrap();
    assert!(
        err_text(&e).contains("`dog`") && err_text(&e).contains("label list"),
        "{e}"
    );
}

const IMAGENET_FIRST: &str = "data/imagenet-val-1300/val/n01440764/ILSVRC2012_val_00023559.JPEG";

#[test]
fn jpeg_decodes_like_pillow() {
    // numpy.asarray(PIL.Image.open(p).convert("RGB")) with Pillow 13 (libjpeg-turbo 3.2).
    let (rgb, w, h) = decode_rgb8(&shared(IMAGENET_FIRST)).unwrap();
    assert_eq!((w, h), (227, 227));
    let px = |x: usize, y: usize| &rgb[3 * (y * w + x)..3 * (y * w + x) + 3];
    assert_eq!(px(0, 0), [74, 89, 30]);
    assert_eq!(px(200, 100), [33, 39, 37]);
    assert_eq!(px(226, 226), [42, 51, 32]);
    assert_eq!(rgb.iter().map(|&v| v as u64).sum::<u64>(), 11_769_164);
}

#[test]
fn unusual_and_broken_jpegs() {
    let dir = scratch("jpegs");
    // Grayscale JPEG: decoded and replicated to RGB (Pillow's L -> RGB).
    let gray = dir.join("gray.jpg");
    image::GrayImage::from_fn(37, 21, |x, y| image::Luma([(x * 6 + y * 3) as u8]))
        .save(&gray)
        .unwrap();
    let (rgb, w, h) = decode_rgb8(&gray).unwrap();
    assert_eq!((w, h, rgb.len()), (37, 21, 37 * 21 * 3));
    assert!(rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    assert!(rgb.iter().any(|&v| v > 100));

    let good = std::fs::read(shared(IMAGENET_FIRST)).unwrap();
    // Truncated in the entropy-coded data, and missing only the EOI marker: both are errors
    // naming the file, as Pillow's "image file is truncated".
    for (name, bytes) in [
        ("truncated.jpg", &good[..good.len() / 2]),
        ("no_eoi.jpg", &good[..good.len() - 2]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = decode_rgb8(&path).unwrap_err();
        assert!(
            matches!(e, Error::Dataset { .. })
                && err_text(&e).contains(name)
                && err_text(&e).contains("truncated"),
            "{e}"
        );
    }
    // Only the start of the header.
    let path = dir.join("header_only.jpg");
    std::fs::write(&path, &good[..100]).unwrap();
    let e = decode_rgb8(&path).unwrap_err();
    assert!(
        matches!(e, Error::Dataset { .. }) && err_text(&e).contains("header_only.jpg"),
        "{e}"
    );
    // A header claiming 20000 x 30000 pixels is refused before decoding.
    let mut huge = good.clone();
    let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    huge[sof + 5..sof + 7].copy_from_slice(&30000u16.to_be_bytes());
    huge[sof + 7..sof + 9].copy_from_slice(&20000u16.to_be_bytes());
    let path = dir.join("huge.jpg");
    std::fs::write(&path, &huge).unwrap();
    let e = decode_rgb8(&path).unwrap_err();
    assert!(
        matches!(e, Error::Limits { .. }) && err_text(&e).contains("huge.jpg"),
        "{e}"
    );
    // Damaged entropy-coded data and a damaged header: never a panic or abort; libjpeg may
    // resynchronize (Ok, as Pillow) or fail (an error naming the file).
    for (i, at) in [good.len() / 3, good.len() / 2, 170, 300]
        .into_iter()
        .enumerate()
    {
        let mut bad = good.clone();
        for b in &mut bad[at..at + 40] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        let path = dir.join(format!("damaged{i}.jpg"));
        std::fs::write(&path, &bad).unwrap();
        if let Err(e) = decode_rgb8(&path) {
            assert!(err_text(&e).contains(&format!("damaged{i}.jpg")), "{e}");
        }
    }
}

#[test]
fn absurd_image_dimensions_are_refused() {
    // A PNG whose header claims 100000 x 100000 pixels.
    let dir = scratch("huge");
    std::fs::create_dir_all(dir.join("c")).unwrap();
    let path = dir.join("c/huge.png");
    image::RgbImage::new(1, 1).save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let p = Preprocess::new(8, 8);
    let ds = open_dataset(&dir, &p, None).unwrap();
    let mut out = vec![0f32; p.input_len()];
    let e = ds.load(0, &mut out).unwrap_err();
    assert!(err_text(&e).contains("huge.png"), "{e}");
}

fn card_json(std: &str) -> String {
    format!(
        r#"{{"name": "t", "input": {{"channels": 3, "height": 32, "width": 32,
            "pixel_scale": 0.00392156862745098, "mean": [0.5, 0.5, 0.5], "std": {std}}},
            "labels_file": "t.labels.txt (one per line)"}}"#
    )
}

#[test]
fn bad_cards() {
    let dir = scratch("cards");
    std::fs::write(dir.join("t.labels.txt"), "a\nb\n\n").unwrap();

    let good = dir.join("good.json");
    std::fs::write(&good, card_json("[1, 2, 3]")).unwrap();
    let c = ModelCard::load(&good).unwrap();
    assert_eq!(c.labels.unwrap(), ["a", "b"]);
    assert_eq!(c.preprocess.std, [1.0, 2.0, 3.0]);

    let zero_std = dir.join("zero_std.json");
    std::fs::write(&zero_std, card_json("[0.2, 0, 0.2]")).unwrap();
    let e = ModelCard::load(&zero_std).unwrap_err();
    assert!(matches!(e, Error::Card { .. }), "{e}");
    assert!(
        err_text(&e).contains("zero_std.json") && err_text(&e).contains("std[1]"),
        "{e}"
    );

    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"input\": {\"channels\": 3,").unwrap();
    let e = ModelCard::load(&broken).unwrap_err();
    assert!(
        matches!(e, Error::Card { .. }) && err_text(&e).contains("broken.json"),
        "{e}"
    );

    let missing = dir.join("missing.json");
    std::fs::write(&missing, r#"{"input": {"channels": 3, "height": 32}}"#).unwrap();
    let e = ModelCard::load(&missing).unwrap_err();
    assert!(err_text(&e).contains("input.width"), "{e}");

    let crop = dir.join("crop.json");
    std::fs::write(
        &crop,
        r#"{"input": {"channels": 3, "height": 224, "width": 224, "pixel_scale": 1,
            "mean": [0,0,0], "std": [1,1,1], "resize_shorter_side": 200, "center_crop": 224}}"#,
    )
    .unwrap();
    let e = ModelCard::load(&crop).unwrap_err();
    assert!(err_text(&e).contains("center_crop"), "{e}");

    let zero = dir.join("zero.json");
    std::fs::write(
        &zero,
        r#"{"input": {"channels": 3, "height": 0, "width": 224, "pixel_scale": 1,
            "mean": [0,0,0], "std": [1,1,1]}}"#,
    )
    .unwrap();
    let e = ModelCard::load(&zero).unwrap_err();
    assert!(err_text(&e).contains("input.height"), "{e}");
}

#[test]
fn resize_small_cases() {
    // 2x1 -> 4x1 upscale: 0, 0.25*255, 0.75*255, 255 rounded.
    let out = resize_bilinear_rgb8(&[0, 0, 0, 255, 255, 255], 2, 1, 4, 1);
    assert_eq!(
        out.chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
        [0, 64, 191, 255]
    );
    // 2x2 -> 1x1 downscale: the mean (weights 0.5/0.5 on each axis), rounded after each pass:
    // rows (10+20)/2 = 15, (30+41)/2 = 35.5 -> 36; then (15+36)/2 = 25.5 -> 26.
    let src = [10, 10, 10, 20, 20, 20, 30, 30, 30, 41, 41, 41];
    assert_eq!(resize_bilinear_rgb8(&src, 2, 2, 1, 1), [26, 26, 26]);
}
