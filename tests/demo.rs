//! `dgnam demo` end to end: the files it writes, whether LeNet really sees each digit in
//! the images synthesized for it, and whether DGN-AM's images through the shipped prior
//! lie nearer to real digits than pixel-space AM's.

mod common;

use common::{argmax, scratch, shipped};
use dgnam::convert;
use dgnam::synth::demo::{mean_nearest, run_demo, DigitResult};
use dgnam::synth::pixel::PixelPriors;
use image::AnimationDecoder;
use std::path::Path;
use std::process::Command;

/// LeNet's probabilities for ten images, computed here, independently of the demo.
fn lenet_probs(images: &[Vec<f32>]) -> Vec<f32> {
    let m = convert::load(&shipped("demo/lenet.prototxt"), &shipped("demo/lenet_iter_10000.caffemodel")).unwrap();
    let net = m.net::<f32>(10).unwrap();
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&images.concat()]).unwrap();
    st.value(net.plan.layer_output("prob").unwrap()).clone()
}

/// The distance of each image to its nearest real digit after normalizing both to zero
/// mean and unit norm, recomputed here from the shipped digits.
fn nearest_real(image: &[f32], real: &[f32]) -> f64 {
    let norm = |v: &[f32]| {
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let c: Vec<f64> = v.iter().map(|&x| x as f64 - m).collect();
        let n = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        c.into_iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let q = norm(image);
    real.chunks(784).map(|r| norm(r).iter().zip(&q).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()).fold(f64::INFINITY, f64::min)
}

fn check_method(rows: &[DigitResult], dir: &Path, sub: &str, min_p: f32) {
    let images: Vec<Vec<f32>> = rows.iter().map(|d| d.image.clone()).collect();
    let probs = lenet_probs(&images);
    for d in 0..10 {
        let p = &probs[d * 10..(d + 1) * 10];
        assert_eq!(argmax(p), d, "{sub}: the image for digit {d} is classified as {}: {p:?}", argmax(p));
        assert!(p[d] >= min_p, "{sub} digit {d}: p = {}", p[d]);
        assert!((rows[d].probability - p[d]).abs() < 1e-5);
        assert_eq!(rows[d].png, dir.join(sub).join(format!("digit_{d}.png")));
        let saved = dgnam::npy::read(&dir.join(sub).join(format!("digit_{d}.image.npy"))).unwrap();
        assert_eq!(saved.shape, vec![1, 1, 28, 28]);
        assert_eq!(saved.data, rows[d].image);
        let img = image::open(&rows[d].png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (224, 224));
        // Nearest-neighbour 8x: every 8x8 block is one input pixel, grey = clamp(value * 255).
        for (y, x) in [(0, 0), (14, 14), (20, 7), (27, 27)] {
            let v = rows[d].image[y * 28 + x];
            let px = img.get_pixel(x as u32 * 8 + 5, y as u32 * 8 + 3).0;
            assert_eq!(px, [(v * 255.0).round().clamp(0.0, 255.0) as u8; 3], "{sub} digit {d} pixel ({x}, {y})");
        }
    }
}

#[test]
fn demo_synthesizes_each_digit_by_both_methods_and_dgn_am_lies_nearer_to_real_digits() {
    let dir = scratch("demo");
    let iters = PixelPriors::default().iters;
    let report = run_demo(&dir, iters, 0, &dgnam::io::Silent).unwrap();

    assert!(report.pixel.iter().flat_map(|d| &d.image).all(|v| (0.0..=1.0).contains(v)), "pixel AM leaves [0, 1]");
    check_method(&report.pixel, &dir, "pixel-am", 0.9);
    check_method(&report.dgn, &dir, "dgn-am", 0.95);
    for d in 0..10 {
        let code = dgnam::npy::read(&dir.join(format!("dgn-am/digit_{d}.code.npy"))).unwrap();
        assert_eq!(code.shape, vec![1, 500]);
        assert_eq!(code.data, report.codes[d]);
    }

    // DGN-AM's images are nearer to real digits, recomputed here.
    let real = dgnam::npy::read(&shipped("demo/digits.npy")).unwrap();
    for d in report.pixel.iter().chain(&report.dgn) {
        assert!((nearest_real(&d.image, &real.data) - d.nearest.1).abs() < 1e-9);
    }
    let (pixel, dgn) = (mean_nearest(&report.pixel), mean_nearest(&report.dgn));
    assert!(dgn < pixel, "mean distance to the nearest real digit: DGN-AM {dgn}, pixel AM {pixel}");

    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for key in ["pixel_am", "dgn_am"] {
        let rows = summary[key].as_array().unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[3]["activations"].as_array().unwrap().len(), iters);
        assert!(rows[3]["probability"].as_f64().unwrap() > 0.9);
        assert!(rows[3]["nearest_real"]["distance"].as_f64().is_some());
    }
    assert!(summary["dgn_am"][0]["code"].as_str().unwrap().ends_with("dgn-am/digit_0.code.npy"));
    assert!((summary["mean_nearest_distance"]["dgn_am"].as_f64().unwrap() - dgn).abs() < 1e-12);

    let montage = image::open(&report.montage).unwrap().to_rgb8();
    assert_eq!(report.montage, dir.join("montage.png"));
    let (w, h) = montage.dimensions();
    assert!((10 * 112..10 * 112 + 200).contains(&w) && (2 * 112..2 * 112 + 120).contains(&h), "montage is {w}x{h}");

    assert_eq!(report.gif, dir.join("demo.gif"));
    let file = std::io::BufReader::new(std::fs::File::open(&report.gif).unwrap());
    let frames = image::codecs::gif::GifDecoder::new(file).unwrap().into_frames().collect_frames().unwrap();
    assert!(frames.len() >= 20, "{} frames", frames.len());
    let size = frames[0].buffer().dimensions();
    assert!((10 * 84..10 * 84 + 150).contains(&size.0) && (2 * 84..2 * 84 + 100).contains(&size.1), "GIF is {size:?}");
    assert!(frames.iter().all(|f| f.buffer().dimensions() == size));
    // The runs move: the first frame differs from the last.
    assert_ne!(frames[0].buffer(), frames[frames.len() - 1].buffer());
}

#[test]
fn demo_command_prints_one_line_per_digit_and_method_and_the_paths() {
    let dir = scratch("demo-cli");
    let out = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["demo", "--out-dir", dir.to_str().unwrap(), "--iters", "30", "--seed", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // The library reports, the binary prints.
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo: the preferred image of each LeNet digit"));
    for method in ["pixel AM", "DGN-AM  "] {
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(method)).collect();
        assert_eq!(lines.len(), 10, "{stdout}");
        for (d, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("{method} digit {d} ")) && line.contains("p=") && line.contains("nearest"), "{line}");
        }
    }
    for name in ["montage.png", "demo.gif", "summary.json", "pixel-am/digit_0.png", "dgn-am/digit_9.png"] {
        assert!(dir.join(name).is_file(), "{name} missing");
        assert!(stdout.contains(dir.join(name).to_str().unwrap()), "{name} not printed: {stdout}");
    }
    for name in ["pixel-am/digit_4.image.npy", "dgn-am/digit_4.image.npy", "dgn-am/digit_4.code.npy"] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }

    // The model is the one shipped in weights/demo/, identical to the test fixture.
    assert_eq!(dgnam::synth::demo::lenet_dir().canonicalize().unwrap(), shipped("demo").canonicalize().unwrap());
    for f in ["lenet.prototxt", "lenet_iter_10000.caffemodel"] {
        assert_eq!(std::fs::read(shipped("demo").join(f)).unwrap(), std::fs::read(common::fixture("caffe/lenet_mnist").join(f)).unwrap());
    }

    let bad =
        Command::new(env!("CARGO_BIN_EXE_dgnam")).args(["demo", "--out-dir", dir.to_str().unwrap(), "--iters", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error: --iters must be at least 1"));
}
