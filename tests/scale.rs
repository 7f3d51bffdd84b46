//! Scale-out (SPEC section 10): seeds, shards as separate processes into one folder, merge,
//! `--devices`, `--shard auto`, and the shipped Slurm and Kubernetes files, on the tiny
//! random generator and classifier of tests/fixtures/tiny.

mod common;

use common::{root, scratch, tiny_weight_files};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The flags every run here shares: the tiny nets, 6 iterations, frames every 2 (GIFs).
fn common_args(g: &Path, c: &Path) -> Vec<String> {
    let args = ["--generator", s(g), "--net", s(c), "--bounds", "none", "--lr", "1", "--iters", "6", "--save-every", "2", "--batch", "2"];
    args.iter().map(|a| a.to_string()).collect()
}

fn dgnam(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dgnam"));
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "DGNAM_SHARDS"] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

#[track_caller]
fn ok(r: &Output) -> String {
    assert!(r.status.success(), "stderr: {}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[track_caller]
fn fails(r: &Output) -> String {
    assert!(!r.status.success(), "should fail; stdout: {}", String::from_utf8_lossy(&r.stdout));
    let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
    assert!(!err.contains("panicked"), "{err}");
    err.lines().last().unwrap_or("").to_string()
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// summary.json without what only says when and how long: each unit's `seconds` and the
/// manifest's `started` and `seconds` (docs/scale-out.md).
fn untimed(mut summary: Value) -> Value {
    for u in summary["units"].as_array_mut().unwrap() {
        assert!(u["seconds"].as_f64().unwrap() >= 0.0);
        u.as_object_mut().unwrap().remove("seconds");
    }
    let m = summary["manifest"].as_object_mut().unwrap();
    assert!(m.remove("started").unwrap().as_str().unwrap().ends_with('Z'));
    assert!(m.remove("seconds").unwrap().as_f64().unwrap() >= 0.0);
    summary
}

/// `merged` holds exactly the files of `single`, plus the shards' summaries; every file but
/// summary.json is byte for byte the same, and summary.json is, but for its timing.
#[track_caller]
fn assert_same_results(single: &Path, merged: &Path, shards: usize) {
    let (a, b) = (files(single), files(merged));
    let shard_files: Vec<String> = (0..shards).map(|i| format!("summary.{i}-of-{shards}.json")).collect();
    let extra: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k) && !shard_files.contains(k)).collect();
    let absent: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    assert!(extra.is_empty() && absent.is_empty(), "extra in the merged folder: {extra:?}; missing there: {absent:?}");
    for f in &shard_files {
        assert!(b.contains_key(f), "{f} missing");
    }
    for (name, bytes) in &a {
        if name != "summary.json" {
            assert!(bytes == &b[name], "{name} differs between the single run and the merged shards");
        }
    }
    assert_eq!(untimed(json(&single.join("summary.json"))), untimed(json(&merged.join("summary.json"))));
}

#[test]
fn three_shard_processes_into_one_folder_merge_to_exactly_the_single_run() {
    let dir = scratch("scale-shards");
    let (g, c) = tiny_weight_files(&dir);
    let (single, sharded) = (dir.join("single"), dir.join("sharded"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args: Vec<String> =
            ["synthesize", "--units", "all", "--seeds", "0..1", "--out-dir", s(out)].iter().map(|a| a.to_string()).collect();
        args.extend(common_args(&g, &c));
        args.extend(extra.iter().map(|a| a.to_string()));
        dgnam(&args)
    };
    ok(&run(&single, &[]).output().unwrap());
    // The three shards run at the same time, as separate processes, into one folder.
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut cmd = run(&sharded, &["--shard", &format!("{i}/3")]);
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        ok(&child.wait_with_output().unwrap());
    }
    assert!(!sharded.join("summary.json").exists() && !sharded.join("index.html").exists(), "a shard must not finish the folder");
    // Shard 1 of 3 owns positions 1, 4, 7 of (unit, seed): (0,1), (2,0), (3,1).
    let stems: Vec<String> = json(&sharded.join("summary.1-of-3.json"))["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["png"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stems, ["fc8_0000_s1.png", "fc8_0002_s0.png", "fc8_0003_s1.png"]);
    let out = ok(&dgnam(&["merge".into(), s(&sharded).into()]).output().unwrap());
    assert!(out.contains("merged 10 units from 3 shards"), "{out}");
    assert_same_results(&single, &sharded, 3);
    let summary = json(&sharded.join("summary.json"));
    let mut listed: Vec<&str> = summary["units"].as_array().unwrap().iter().map(|u| u["png"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 10);
    listed.dedup();
    assert_eq!(listed.len(), 10, "each unit once");
    let m = &summary["manifest"];
    assert_eq!(m["net_sha256"].as_str().unwrap(), dgnam::sha256::file_hex(&c).unwrap());
    assert_eq!(m["generator_sha256"].as_str().unwrap(), dgnam::sha256::file_hex(&g).unwrap());
    assert!(m["bounds_sha256"].is_null());
    assert_eq!((m["device"].as_str(), m["precision"].as_str(), m["options"]["iters"].as_u64()), (Some("cpu"), Some("f32"), Some(6)));
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["options"]["seeds"], serde_json::json!([0, 1]));
}

#[test]
fn merge_names_what_is_missing_writes_nothing_and_a_rerun_shard_loses_nothing() {
    let dir = scratch("scale-missing");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    let shard = |i: usize| {
        let mut args: Vec<String> = ["synthesize", "--units", "0,1,2,3,4", "--shard", &format!("{i}/3"), "--out-dir", s(&out)]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(common_args(&g, &c));
        dgnam(&args).output().unwrap()
    };
    let merge = || dgnam(&["merge".into(), s(&out).into()]).output().unwrap();
    ok(&shard(0));
    ok(&shard(2));
    let e = fails(&merge());
    assert!(e.contains("2 of 5 units are missing: fc8_0001, fc8_0004") && e.contains("shard(s) 1 of 3 wrote no summary"), "{e}");
    assert!(!out.join("summary.json").exists() && !out.join("montage.png").exists() && !out.join("index.html").exists());

    // Shard 1 runs, then loses a file as if killed mid-unit: its rerun redoes only that unit,
    // with the same bits.
    ok(&shard(1));
    let before = std::fs::read(out.join("fc8_0004.code.npy")).unwrap();
    let kept = std::fs::metadata(out.join("fc8_0001.png")).unwrap().modified().unwrap();
    std::fs::remove_file(out.join("fc8_0004.code.npy")).unwrap();
    let e = fails(&merge());
    assert!(e.contains("1 of 5 units are missing: fc8_0004;"), "{e}");
    assert!(ok(&shard(1)).contains("1 units done, 1 already there"));
    assert_eq!(std::fs::read(out.join("fc8_0004.code.npy")).unwrap(), before);
    assert_eq!(std::fs::metadata(out.join("fc8_0001.png")).unwrap().modified().unwrap(), kept);
    assert!(ok(&merge()).contains("merged 5 units from 3 shards"));

    // A unit in two shards' summaries is refused, naming it and both files.
    let s0 = out.join("summary.0-of-3.json");
    let mut doc = json(&s0);
    let stolen = json(&out.join("summary.1-of-3.json"))["units"][0].clone();
    doc["units"].as_array_mut().unwrap().push(stolen);
    std::fs::write(&s0, serde_json::to_string(&doc).unwrap()).unwrap();
    let e = fails(&merge());
    assert!(e.contains("fc8_0001 is listed twice") && e.contains("summary.0-of-3.json") && e.contains("summary.1-of-3.json"), "{e}");

    // Shards of another split, or another run, are not mixed in.
    ok(&shard(0));
    std::fs::write(out.join("summary.0-of-2.json"), "{}").unwrap();
    assert!(fails(&merge()).contains("different splits"));
    std::fs::remove_file(out.join("summary.0-of-2.json")).unwrap();
    let mut doc = json(&s0);
    doc["manifest"]["options"]["iters"] = serde_json::json!(7);
    std::fs::write(&s0, serde_json::to_string(&doc).unwrap()).unwrap();
    assert!(fails(&merge()).contains("options.iters"));
    // And a folder without shards says so.
    assert!(fails(&dgnam(&["merge".into(), s(&dir).into()]).output().unwrap()).contains("no shard summaries"));
}

#[test]
fn each_seed_is_the_single_seed_run_and_its_files_carry_the_seed() {
    let dir = scratch("scale-seeds");
    let (g, c) = tiny_weight_files(&dir);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args: Vec<String> = ["synthesize", "--units", "1", "--out-dir", s(&out)].iter().map(|a| a.to_string()).collect();
        args.extend(common_args(&g, &c));
        args.extend(extra.iter().map(|a| a.to_string()));
        ok(&dgnam(&args).output().unwrap());
        out
    };
    let many = run("many", &["--seeds", "3,5"]);
    let three = run("three", &["--seed", "3"]);
    let five = run("five", &["--seeds", "5..5"]);
    for ext in ["png", "image.npy", "code.npy", "gif"] {
        let read = |d: &Path, stem: &str| std::fs::read(d.join(format!("{stem}.{ext}"))).unwrap();
        assert_eq!(read(&many, "fc8_0001_s3"), read(&three, "fc8_0001"), "{ext}");
        assert_eq!(read(&many, "fc8_0001_s5"), read(&five, "fc8_0001"), "{ext}");
    }
    assert_ne!(std::fs::read(many.join("fc8_0001_s3.code.npy")).unwrap(), std::fs::read(many.join("fc8_0001_s5.code.npy")).unwrap());
    let seeds: Vec<u64> =
        json(&many.join("summary.json"))["units"].as_array().unwrap().iter().map(|u| u["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [3, 5]);
    for bad in [&["--seeds", "4..2"][..], &["--seeds", "1,1"], &["--seeds", "1", "--seed", "2"], &["--shard", "3/3"], &["--devices", "0,x"]]
    {
        let out = dir.join("bad");
        let mut args: Vec<String> = ["synthesize", "--units", "1", "--out-dir", s(&out)].iter().map(|a| a.to_string()).collect();
        args.extend(common_args(&g, &c));
        args.extend(bad.iter().map(|a| a.to_string()));
        let e = fails(&dgnam(&args).output().unwrap());
        assert!(!e.is_empty() && !out.exists(), "{bad:?}: {e}");
    }
}

#[test]
fn devices_0_0_runs_two_cpu_worker_processes_then_merges() {
    let dir = scratch("scale-devices");
    let (g, c) = tiny_weight_files(&dir);
    let run = |out: &Path, extra: &[&str]| {
        let mut args: Vec<String> = ["synthesize", "--units", "all", "--out-dir", s(out)].iter().map(|a| a.to_string()).collect();
        args.extend(common_args(&g, &c));
        args.extend(extra.iter().map(|a| a.to_string()));
        dgnam(&args).output().unwrap()
    };
    let (single, workers) = (dir.join("single"), dir.join("workers"));
    ok(&run(&single, &[]));
    let r = run(&workers, &["--device", "cpu", "--devices", "0,0"]);
    let out = ok(&r);
    assert!(out.contains("merged 5 units from 2 shards"), "{out}");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("worker 0: --shard 0/2 --device cpu") && err.contains("worker 1: --shard 1/2 --device cpu"), "{err}");
    assert_same_results(&single, &workers, 2);
    // --device cuda:K is parsed everywhere synthesize runs; without a GPU it is a clear error.
    let r = run(&dir.join("gpu"), &["--device", "cuda:1"]);
    if !r.status.success() {
        let e = fails(&r);
        assert!(e.contains("--device cuda:1"), "{e}");
        assert!(!dir.join("gpu").exists());
    }
    assert!(fails(&run(&dir.join("bad"), &["--device", "cuda:x"])).contains("cuda:K"));
    // A worker that fails is named, with its reason; nothing is merged.
    let broken = dir.join("broken");
    let mut args: Vec<String> = ["synthesize", "--units", "all", "--out-dir", s(&broken), "--device", "cpu", "--devices", "0,0"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(common_args(&g, &dir.join("no-such-net.dgnw")));
    let e = fails(&dgnam(&args).output().unwrap());
    assert!(e.contains("worker 0 (--shard 0/2 --device cpu)") && e.contains("no-such-net.dgnw does not exist"), "{e}");
    assert!(!broken.join("summary.json").exists());
}

#[test]
fn a_shard_killed_mid_run_and_rerun_merges_to_the_single_run() {
    let dir = scratch("scale-kill");
    let (g, c) = tiny_weight_files(&dir);
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["synthesize", "--generator", s(&g), "--net", s(&c), "--bounds", "none", "--units", "all", "--batch", "1"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        a.extend(["--iters", "20000", "--save-every", "5000", "--out-dir", s(out)].iter().map(|a| a.to_string()));
        a.extend(extra.iter().map(|a| a.to_string()));
        a
    };
    let (single, sharded) = (dir.join("single"), dir.join("sharded"));
    ok(&dgnam(&args(&single, &[])).output().unwrap());
    // Shard 0 of 2 (units 0, 2, 4) is killed (SIGKILL) once its first unit is written.
    let mut child = dgnam(&args(&sharded, &["--shard", "0/2"])).stderr(std::process::Stdio::null()).spawn().unwrap();
    let started = std::time::Instant::now();
    while !sharded.join("summary.0-of-2.json").exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = json(&sharded.join("summary.0-of-2.json"))["units"].as_array().unwrap().len();
    assert!((1..3).contains(&done), "the kill should land mid-shard, {done} units were done");
    assert!(ok(&dgnam(&args(&sharded, &["--shard", "0/2"])).output().unwrap()).contains(&format!("{done} already there")));
    ok(&dgnam(&args(&sharded, &["--shard", "1/2"])).output().unwrap());
    ok(&dgnam(&["merge".into(), s(&sharded).into()]).output().unwrap());
    assert_same_results(&single, &sharded, 2);
}

#[test]
fn shard_auto_reads_slurm_or_kubernetes_and_is_one_clear_error_without() {
    let dir = scratch("scale-auto");
    let (g, c) = tiny_weight_files(&dir);
    let out = dir.join("out");
    let cmd = || {
        let mut args: Vec<String> =
            ["synthesize", "--units", "all", "--shard", "auto", "--out-dir", s(&out)].iter().map(|a| a.to_string()).collect();
        args.extend(common_args(&g, &c));
        dgnam(&args)
    };
    let e = fails(&cmd().output().unwrap());
    assert!(e.contains("--shard auto") && e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"), "{e}");
    assert!(!out.exists());
    ok(&cmd().env("JOB_COMPLETION_INDEX", "1").env("DGNAM_SHARDS", "2").output().unwrap());
    assert_eq!(json(&out.join("summary.1-of-2.json"))["units"].as_array().unwrap().len(), 2);
    let slurm =
        cmd().env("SLURM_ARRAY_TASK_ID", "11").env("SLURM_ARRAY_TASK_MIN", "10").env("SLURM_ARRAY_TASK_COUNT", "3").output().unwrap();
    ok(&slurm);
    assert_eq!(json(&out.join("summary.1-of-3.json"))["shard"], serde_json::json!({"index": 1, "count": 3}));
}

/// The lines of the literal block (`- |`) that follows `marker` in a YAML text.
fn block_after(yaml: &str, marker: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines.iter().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker}"));
    let start = at + lines[at..].iter().position(|l| l.trim_end().ends_with("- |")).expect("a literal block") + 1;
    let indent = lines[start].len() - lines[start].trim_start().len();
    lines[start..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `key:` in a YAML text, from `from` on.
fn yaml_value<'a>(yaml: &'a str, from: &str, key: &str) -> &'a str {
    let rest = &yaml[yaml.find(from).unwrap_or_else(|| panic!("no {from}"))..];
    let line = rest.lines().find(|l| l.trim_start().starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key}"));
    line.split_once(':').unwrap().1.trim().trim_matches('"')
}

/// A PATH whose `dgnam` is the binary under test.
fn path_with_dgnam(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("dgnam");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_dgnam"), &link).unwrap();
    }
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn the_shipped_slurm_script_and_kubernetes_jobs_run_as_written() {
    let dir = scratch("scale-deploy");
    let (g, c) = tiny_weight_files(&dir);
    let extra = common_args(&g, &c).join(" ");
    let single = dir.join("single");
    let mut args: Vec<String> =
        ["synthesize", "--units", "all", "--seeds", "0..1", "--out-dir", s(&single)].iter().map(|a| a.to_string()).collect();
    args.extend(common_args(&g, &c));
    ok(&dgnam(&args).output().unwrap());
    let path = path_with_dgnam(&dir);

    // Slurm: the script itself, as three tasks of an array 4-6, then the documented merge.
    let sbatch = root().join("deploy/slurm/synthesize-array.sbatch");
    let text = std::fs::read_to_string(&sbatch).unwrap();
    assert!(text.lines().any(|l| l.starts_with("#SBATCH --array=")), "the array size is set in the script");
    let slurm_out = dir.join("slurm");
    for id in 4..7 {
        let r = Command::new("bash")
            .arg(&sbatch)
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", id.to_string())
            .env("SLURM_ARRAY_TASK_MIN", "4")
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .env("SLURM_SUBMIT_DIR", &dir)
            .env("DGNAM_OUT", &slurm_out)
            .env("DGNAM_SEEDS", "0..1")
            .env("DGNAM_ARGS", &extra)
            .output()
            .unwrap();
        ok(&r);
    }
    let merge_line = text.lines().find(|l| l.contains("--wrap")).expect("the merge submission is documented");
    let merge_cmd = merge_line.split_once("--wrap").unwrap().1.trim().trim_matches('"').to_string();
    ok(&Command::new("bash").args(["-c", &merge_cmd]).env("PATH", &path).env("DGNAM_OUT", &slurm_out).output().unwrap());
    assert_same_results(&single, &slurm_out, 3);

    // Kubernetes: two Jobs; the Indexed one's completions equal DGNAM_SHARDS; its pods' and
    // the merge Job's shell commands, run with the variables Kubernetes would set.
    let yaml = std::fs::read_to_string(root().join("deploy/k8s/synthesize-indexed-job.yaml")).unwrap();
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 2);
    for d in &docs {
        assert_eq!(yaml_value(d, "apiVersion", "kind"), "Job");
        assert_eq!(yaml_value(d, "apiVersion", "apiVersion"), "batch/v1");
        assert!(!d.contains('\t'), "YAML takes no tabs");
    }
    assert_eq!(yaml_value(docs[0], "spec:", "completionMode"), "Indexed");
    let completions = yaml_value(docs[0], "spec:", "completions");
    assert_eq!(yaml_value(docs[0], "name: DGNAM_SHARDS", "value"), completions);
    let claim = |d: &str| yaml_value(d, "persistentVolumeClaim", "claimName").to_string();
    assert_eq!(claim(docs[0]), claim(docs[1]), "both Jobs mount the same volume");
    let shard_script = block_after(docs[0], "args:");
    let merge_script = block_after(docs[1], "args:");
    assert!(shard_script.contains("--shard auto") && merge_script.contains("dgnam merge"));
    let k8s_out = dir.join("k8s");
    let shards = 3;
    for index in 0..shards {
        let r = Command::new("sh")
            .args(["-c", &shard_script])
            .env("PATH", &path)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("DGNAM_SHARDS", shards.to_string())
            .env("DGNAM_OUT", &k8s_out)
            .env("DGNAM_UNITS", "all")
            .env("DGNAM_SEEDS", "0..1")
            .env("DGNAM_ARGS", &extra)
            .output()
            .unwrap();
        ok(&r);
    }
    // `timeout`: the merge Job polls until the merge succeeds; here it must at once.
    let r = Command::new("timeout")
        .args(["60", "sh", "-c", &merge_script])
        .env("PATH", &path)
        .env("DGNAM_OUT", &k8s_out)
        .env("DGNAM_POLL_SECONDS", "1")
        .output()
        .unwrap();
    ok(&r);
    assert_same_results(&single, &k8s_out, shards);
}
