//! The gallery (`dgnam gallery`, also written by synthesize and merge): its files, and the
//! pages themselves in a real headless Chromium from file:// (every image loads, the filter
//! narrows the grid, a unit's page opens with its image and GIF).

mod common;

use common::{scratch, tiny_weight_files};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A finished folder: the tiny nets' five units x seeds 0 and 1, with GIFs.
fn tiny_run(dir: &Path) -> PathBuf {
    let (g, c) = tiny_weight_files(dir);
    let out = dir.join("out");
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam"))
        .args(["synthesize", "--generator", s(&g), "--net", s(&c), "--bounds", "none", "--lr", "1", "--iters", "6"])
        .args(["--save-every", "2", "--units", "all", "--seeds", "0..1", "--out-dir", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn the_gallery_has_a_card_and_a_page_per_unit_and_is_rebuilt_the_same() {
    let dir = scratch("gallery-files");
    let out = tiny_run(&dir);
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let units = summary["units"].as_array().unwrap();
    assert_eq!(index.matches("<a class=\"card\"").count(), units.len());
    assert_eq!(index.matches("loading=\"lazy\"").count(), units.len());
    assert_eq!(index.matches("<svg class=\"spark\"").count(), units.len());
    for u in units {
        let stem = u["png"].as_str().unwrap().trim_end_matches(".png");
        assert!(index.contains(&format!("href=\"gallery/{stem}.html\"")), "{stem}");
        let thumb = image::open(out.join(format!("gallery/thumbs/{stem}.png"))).unwrap();
        assert!(thumb.width() >= 128 && thumb.height() >= 128, "6-pixel images are upscaled: {}", thumb.width());
        let page = std::fs::read_to_string(out.join(format!("gallery/{stem}.html"))).unwrap();
        for want in
            [format!("src=\"../{stem}.png\""), format!("src=\"../{stem}.gif\""), "<th>seed</th>".into(), "<th>iters</th><td>6</td>".into()]
        {
            assert!(page.contains(&want), "{stem}: no {want}");
        }
        let code_hash = dgnam::sha256::file_hex(&out.join(format!("{stem}.code.npy"))).unwrap();
        assert!(page.contains(&code_hash), "{stem}: the code file's sha256");
        assert!(page.contains(summary["manifest"]["net_sha256"].as_str().unwrap()));
    }
    // The montage upscales the 6-pixel images to 132-pixel tiles (4 columns for 10 units).
    let montage = image::open(out.join("montage.png")).unwrap();
    assert!(montage.width() >= 4 * 132 && montage.height() >= 3 * 132, "{}x{}", montage.width(), montage.height());
    // `dgnam gallery` rebuilds it from summary.json alone, byte for byte.
    std::fs::remove_file(out.join("index.html")).unwrap();
    let page = out.join("gallery/fc8_0002_s1.html");
    let before = std::fs::read(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(["gallery", s(&out)]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(out.join("index.html")).unwrap(), index);
    assert_eq!(std::fs::read(&page).unwrap(), before);
    // A folder without a summary is one clear error.
    let r = Command::new(env!("CARGO_BIN_EXE_dgnam")).args(["gallery", s(&dir)]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("summary.json does not exist") && !err.contains("panicked"), "{err}");
    assert!(!dir.join("index.html").exists());
}

/// Loads `page` (a copy of one of the gallery's pages, with `check` run after load) in
/// headless Chromium and returns what the check wrote into `<pre id="result">`.
fn run_in_chromium(dir: &Path, page: &Path, check: &str) -> Value {
    let html = std::fs::read_to_string(page).unwrap();
    let probe = page.with_file_name(format!("check-{}", page.file_name().unwrap().to_string_lossy()));
    let script = format!(
        "<script>window.addEventListener('load',async()=>{{let r={{}};try{{{check}}}catch(e){{r.error=String(e)}}\
         const p=document.createElement('pre');p.id='result';p.textContent=JSON.stringify(r);document.body.appendChild(p);}});</script></body>"
    );
    std::fs::write(&probe, html.replace("</body>", &script)).unwrap();
    let url = format!("file://{}", probe.canonicalize().unwrap().display());
    let r = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000", "--window-size=1280,900"])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium runs");
    std::fs::remove_file(&probe).unwrap();
    let dom = String::from_utf8_lossy(&r.stdout);
    let result = dom.split("<pre id=\"result\">").nth(1).and_then(|t| t.split("</pre>").next());
    let result = result.unwrap_or_else(|| panic!("the check wrote no result; chromium said: {}", String::from_utf8_lossy(&r.stderr)));
    serde_json::from_str(&result.replace("&quot;", "\"").replace("&amp;", "&")).unwrap()
}

/// Waits until every image has been given its source (the grid's thumbnails get theirs when
/// they come into view; all ten do at this window size) and has decoded, then counts them.
/// It polls `naturalWidth` rather than trusting `complete`: Chromium reports a lazy image
/// whose fetch is still deferred as complete, and on a loaded CI machine that is where the
/// check used to look (`loaded` 0 of 10). An image that failed is counted in `broken`.
const IMAGES: &str = "const imgs=[...document.images];const bad=new Set();\
    imgs.forEach(i=>i.addEventListener('error',()=>bad.add(i)));\
    for(let k=0;k<200&&imgs.some(i=>!i.getAttribute('src'));k++)await new Promise(res=>setTimeout(res,50));\
    for(let k=0;k<200&&imgs.some(i=>!(i.naturalWidth>0)&&!bad.has(i));k++)await new Promise(res=>setTimeout(res,50));\
    r.images=imgs.length;r.loaded=imgs.filter(i=>i.naturalWidth>0).length;\
    r.broken=imgs.filter(i=>bad.has(i)).map(i=>i.getAttribute('src'));";

/// In a tall grid only the thumbnails near the window are fetched.
const LAZY: &str = "const imgs=[...document.images];await new Promise(res=>setTimeout(res,500));\
    r.fetched=imgs.filter(i=>i.getAttribute('src')).length;r.images=imgs.length;";

#[test]
#[cfg_attr(not(any(has_chromium, require_chromium)), ignore = "chromium not found on PATH at build time (apt-get install chromium)")]
fn in_headless_chromium_every_image_loads_the_filter_narrows_and_a_unit_page_opens() {
    let dir = scratch("gallery-chromium");
    let out = tiny_run(&dir);
    let grid = run_in_chromium(
        &dir,
        &out.join("index.html"),
        &format!(
            "{IMAGES}const box=document.getElementById('filter');\
             const shown=()=>[...document.querySelectorAll('.card')].filter(c=>getComputedStyle(c).display!=='none').length;\
             const q=v=>{{box.value=v;box.dispatchEvent(new Event('input'));return shown();}};\
             r.all=shown();r.unit3=q('3');r.label4=q('#4');r.none=q('no such unit');r.count=document.getElementById('count').textContent;\
             r.back=q('');r.first=document.querySelector('.card').getAttribute('href');\
             r.sparks=document.querySelectorAll('.card svg polyline').length;"
        ),
    );
    assert!(grid.get("error").is_none(), "{grid}");
    assert_eq!(grid["images"], 10, "{grid}");
    assert_eq!(grid["loaded"], 10, "every thumbnail loads: {grid}");
    assert_eq!(grid["sparks"], 10);
    assert_eq!((grid["all"].as_u64(), grid["unit3"].as_u64(), grid["label4"].as_u64()), (Some(10), Some(2), Some(2)), "{grid}");
    assert_eq!((grid["none"].as_u64(), grid["back"].as_u64()), (Some(0), Some(10)), "{grid}");
    assert_eq!(grid["count"], "0 of 10 units");
    let first = grid["first"].as_str().unwrap();
    assert_eq!(first, "gallery/fc8_0000_s0.html");
    let page = run_in_chromium(
        &dir,
        &out.join(first),
        &format!(
            "{IMAGES}r.full=document.getElementById('full').naturalWidth;r.gif=document.getElementById('gif').naturalWidth;\
             r.title=document.querySelector('h1').textContent;r.back=document.querySelector('nav a').getAttribute('href');"
        ),
    );
    assert!(page.get("error").is_none(), "{page}");
    assert_eq!(page["images"], page["loaded"], "{page}");
    assert_eq!((page["full"].as_u64(), page["gif"].as_u64()), (Some(6), Some(6)), "{page}");
    assert_eq!(page["title"], "fc8 #0 · unit 0 seed 0");
    assert_eq!(page["back"], "../index.html");

    // 400 cards (the same ten, repeated): only those near the window get their thumbnail.
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let (head, rest) = index.split_once("<main id=\"grid\">\n").unwrap();
    let (cards, tail) = rest.split_once("</main>").unwrap();
    let tall = out.join("tall.html");
    std::fs::write(&tall, format!("{head}<main id=\"grid\">\n{}</main>{tail}", cards.repeat(40))).unwrap();
    let lazy = run_in_chromium(&dir, &tall, LAZY);
    assert_eq!(lazy["images"], 400, "{lazy}");
    let fetched = lazy["fetched"].as_u64().unwrap();
    assert!((8..200).contains(&fetched), "{fetched} of 400 thumbnails fetched");
}
