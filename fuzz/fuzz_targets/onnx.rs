#![no_main]
//! A .onnx file -> decoded model -> translated net -> its prototxt text read back -> plan.
use dgnam::graph::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No folder to read external data from: such tensors are refused.
    let Ok(model) = dgnam::onnx::proto::parse_model(data, std::path::Path::new("/nonexistent")) else { return };
    let Ok(imported) = dgnam::onnx::import(&model) else { return };
    let text = dgnam::caffe::write::netdef_to_prototxt(&imported.def);
    let def = dgnam::caffe::netdef::parse_netdef(&text).expect("a translated net reads back");
    assert_eq!(def, imported.def, "a translated net reads back unchanged");
    let _ = Plan::new(&def, 1);
});
