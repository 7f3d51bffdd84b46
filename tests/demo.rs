//! `dgnam demo` end to end: the files it writes, and whether LeNet really sees each digit
//! in the image synthesized for it.

mod common;

use common::{argmax, scratch, shipped};
use dgnam::convert;
use dgnam::synth::demo::run_demo;
use dgnam::synth::pixel::PixelPriors;
use image::AnimationDecoder;
use std::process::Command;

#[test]
fn demo_synthesizes_each_digit_so_lenet_recognizes_it() {
    let dir = scratch("demo");
    let iters = PixelPriors::default().iters;
    let report = run_demo(&dir, iters, 0, &dgnam::io::Silent).unwrap();

    // Classify the returned images again, independently of the demo's own numbers.
    let m = convert::load(&shipped("demo/lenet.prototxt"), &shipped("demo/lenet_iter_10000.caffemodel")).unwrap();
    let net = m.net::<f32>(10).unwrap();
    let batch: Vec<f32> = report.images.concat();
    assert_eq!(batch.len(), 10 * 28 * 28);
    assert!(batch.iter().all(|v| (0.0..=1.0).contains(v)), "images leave the input range [0, 1]");
    let mut st = net.state().unwrap();
    net.forward(&mut st, &[&batch]).unwrap();
    let probs = st.value(net.plan.layer_output("prob").unwrap());
    for d in 0..10 {
        let p = &probs[d * 10..(d + 1) * 10];
        assert_eq!(argmax(p), d, "the image for digit {d} is classified as {}: {p:?}", argmax(p));
        assert!(p[d] > 0.9, "digit {d}: p = {}", p[d]);
        assert!((report.digits[d].probability - p[d]).abs() < 1e-5);
    }

    for d in &report.digits {
        assert_eq!(d.png, dir.join(format!("digit_{}.png", d.digit)));
        let img = image::open(&d.png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (224, 224));
        // Nearest-neighbour 8x: every 8x8 block is one input pixel, grey = value * 255.
        for (y, x) in [(0, 0), (14, 14), (20, 7), (27, 27)] {
            let v = report.images[d.digit][y * 28 + x];
            let px = img.get_pixel(x as u32 * 8 + 5, y as u32 * 8 + 3).0;
            assert_eq!(px, [(v * 255.0).round() as u8; 3], "digit {} pixel ({x}, {y})", d.digit);
        }
    }

    let montage = image::open(&report.montage).unwrap().to_rgb8();
    assert_eq!(report.montage, dir.join("montage.png"));
    let (w, h) = montage.dimensions();
    assert!((5 * 224..5 * 224 + 100).contains(&w) && (2 * 224..2 * 224 + 120).contains(&h), "montage is {w}x{h}");

    assert_eq!(report.gif, dir.join("demo.gif"));
    let file = std::io::BufReader::new(std::fs::File::open(&report.gif).unwrap());
    let frames = image::codecs::gif::GifDecoder::new(file).unwrap().into_frames().collect_frames().unwrap();
    assert!(frames.len() >= 20, "{} frames", frames.len());
    let size = frames[0].buffer().dimensions();
    assert!((5 * 112..5 * 112 + 60).contains(&size.0) && (2 * 112..2 * 112 + 80).contains(&size.1), "GIF is {size:?}");
    assert!(frames.iter().all(|f| f.buffer().dimensions() == size));
    // The run moves: the first frame (near-black noise) differs from the last.
    assert_ne!(frames[0].buffer(), frames[frames.len() - 1].buffer());
}

#[test]
fn demo_command_prints_one_line_per_digit_and_the_paths() {
    let dir = scratch("demo-cli");
    let out = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["demo", "--out-dir", dir.to_str().unwrap(), "--iters", "30", "--seed", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // The library reports, the binary prints.
    assert!(String::from_utf8_lossy(&out.stderr).contains("demo: the preferred image of each LeNet digit"));
    let digit_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("digit ")).collect();
    assert_eq!(digit_lines.len(), 10, "{stdout}");
    for (d, line) in digit_lines.iter().enumerate() {
        assert!(line.starts_with(&format!("digit {d} ")) && line.contains("p="), "{line}");
    }
    for name in ["montage.png", "demo.gif", "digit_0.png", "digit_9.png"] {
        assert!(dir.join(name).is_file(), "{name} missing");
        assert!(stdout.contains(dir.join(name).to_str().unwrap()), "{name} not printed: {stdout}");
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
