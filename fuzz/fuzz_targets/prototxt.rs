#![no_main]
//! Prototxt text -> tree -> typed net -> plan at batch 1 (whose size limits are under test).
use dgnam::caffe::{netdef, prototxt};
use dgnam::graph::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(tree) = prototxt::parse(text) else { return };
    let Ok(def) = netdef::netdef_from_message(&tree) else { return };
    if let Ok(plan) = Plan::new(&def, 1) {
        let _ = (plan.flops(), plan.param_count());
    }
});
