//! `dgnam nearest`: real images nearest to given ones, in pixel space and in a layer's code
//! space, on the shipped LeNet and digits.

mod common;

use common::{converted_lenet, scratch, shipped};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn dgnam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgnam")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap()
}

#[test]
fn a_real_digit_is_its_own_nearest_in_pixels_and_in_codes() {
    let dir = scratch("nearest");
    let net = converted_lenet(&dir);
    let digits = dgnam::npy::read(&shipped("demo/digits.npy")).unwrap();
    // Digits 5 and 1200 as queries (exactly as the .npy decodes them), and a brighter,
    // higher-contrast copy of digit 700: the distance ignores both.
    let mut q: Vec<f32> = digits.data[5 * 784..6 * 784].to_vec();
    q.extend_from_slice(&digits.data[1200 * 784..1201 * 784]);
    let query = dir.join("q.npy");
    dgnam::npy::write(&query, &[2, 1, 28, 28], &q).unwrap();
    let bright: Vec<f32> = digits.data[700 * 784..701 * 784].iter().map(|v| 0.2 + 1.5 * v).collect();
    let query2 = dir.join("bright.npy");
    dgnam::npy::write(&query2, &[1, 1, 28, 28], &bright).unwrap();
    let out = dir.join("out");
    let r = dgnam(&[
        "nearest",
        "--device",
        "cpu",
        "--net",
        s(&net),
        "--images-npy",
        s(&shipped("demo/digits.npy")),
        "--layers",
        "pixel,ip1",
        "-k",
        "3",
        "--out-dir",
        s(&out),
        s(&query),
        s(&query2),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(out.join("nearest.json")).unwrap()).unwrap();
    assert_eq!(doc["real_count"], 1797);
    let queries = doc["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 3);
    for (qi, want) in [(0, 5), (1, 1200), (2, 700)] {
        for space in ["pixel", "ip1"] {
            let hits = queries[qi]["nearest"][space].as_array().unwrap();
            assert_eq!(hits.len(), 3);
            assert_eq!(hits[0]["index"], want, "query {qi} in {space}: {hits:?}");
            let d: Vec<f64> = hits.iter().map(|h| h["distance"].as_f64().unwrap()).collect();
            // ip1 is not linear: the brightened digit's code differs from the digit's.
            if qi < 2 || space == "pixel" {
                assert!(d[0] < 1e-6, "query {qi} in {space}: {d:?}");
            }
            assert!(d.windows(2).all(|w| w[0] <= w[1]) && d[1] > 1e-3, "query {qi} in {space}: {d:?}");
        }
    }
    assert_eq!(queries[1]["index"], 1);
    let montage = image::open(out.join("nearest.png")).unwrap();
    // Four tiles of 112 pixels across (the query and its 3 nearest), six rows (3 queries x 2 spaces).
    assert!(montage.width() >= 4 * 112 && montage.height() >= 6 * 112, "{}x{}", montage.width(), montage.height());
}

#[test]
fn a_folder_of_real_images_is_named_by_file_and_bad_input_writes_nothing() {
    let dir = scratch("nearest-folder");
    let net = converted_lenet(&dir);
    let digits = dgnam::npy::read(&shipped("demo/digits.npy")).unwrap();
    let pics = dir.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for i in 0..6 {
        let img =
            image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(digits.data[i * 784 + (y * 28 + x) as usize] * 255.0).round() as u8]));
        img.save(pics.join(format!("real{i}.png"))).unwrap();
    }
    let out = dir.join("out");
    let query = pics.join("real4.png");
    let r = dgnam(&[
        "nearest",
        "--device",
        "cpu",
        "--net",
        s(&net),
        "--images",
        s(&pics),
        "--scale",
        "0.00390625",
        "-k",
        "9",
        "--out-dir",
        s(&out),
        s(&query),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(out.join("nearest.json")).unwrap()).unwrap();
    assert_eq!(doc["k"], 6, "k is capped at the number of real images");
    let hit = &doc["queries"][0]["nearest"]["pixel"][0];
    assert!(hit["file"].as_str().unwrap().ends_with("real4.png"), "{hit}");
    assert!(hit["distance"].as_f64().unwrap() < 1e-6);

    let bad_out = dir.join("bad");
    let wrong = dir.join("wrong.npy");
    dgnam::npy::write(&wrong, &[1, 1, 20, 20], &[0.0; 400]).unwrap();
    let npy = shipped("demo/digits.npy");
    for (args, needle) in [
        (vec!["--layers", "pixel,ip9"], "--layers ip9"),
        (vec!["-k", "0"], "-k must be at least 1"),
        (vec![s(&wrong)], "shape 1x1x20x20 is not N x 1x28x28"),
    ] {
        let mut all = vec!["nearest", "--device", "cpu", "--net", s(&net), "--images-npy", s(&npy), "--out-dir", s(&bad_out), s(&query)];
        all.extend(args);
        let r = dgnam(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("device:") && !l.trim().is_empty()).collect();
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(needle), "{err}");
        assert!(!bad_out.exists(), "'{needle}' wrote output");
    }
}
