#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dgnam::caffe::caffemodel::decode_blob(data);
});
