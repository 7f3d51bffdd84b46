//! The prototxt tree turned into the typed [`NetDef`], with Caffe's defaults and checks.

/// V1LayerParameter.LayerType as (number, enum name, new-format type name), from
/// caffe.proto and the names Caffe's own upgrade (upgrade_proto.cpp) gives them.
const V1_LAYER_TYPES: [(u64, &str, &str); 40] = [
    (0, "NONE", ""),
    (1, "ACCURACY", "Accuracy"),
    (2, "BNLL", "BNLL"),
    (3, "CONCAT", "Concat"),
    (4, "CONVOLUTION", "Convolution"),
    (5, "DATA", "Data"),
    (6, "DROPOUT", "Dropout"),
    (7, "EUCLIDEAN_LOSS", "EuclideanLoss"),
    (8, "FLATTEN", "Flatten"),
    (9, "HDF5_DATA", "HDF5Data"),
    (10, "HDF5_OUTPUT", "HDF5Output"),
    (11, "IM2COL", "Im2col"),
    (12, "IMAGE_DATA", "ImageData"),
    (13, "INFOGAIN_LOSS", "InfogainLoss"),
    (14, "INNER_PRODUCT", "InnerProduct"),
    (15, "LRN", "LRN"),
    (16, "MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    (17, "POOLING", "Pooling"),
    (18, "RELU", "ReLU"),
    (19, "SIGMOID", "Sigmoid"),
    (20, "SOFTMAX", "Softmax"),
    (21, "SOFTMAX_LOSS", "SoftmaxWithLoss"),
    (22, "SPLIT", "Split"),
    (23, "TANH", "TanH"),
    (24, "WINDOW_DATA", "WindowData"),
    (25, "ELTWISE", "Eltwise"),
    (26, "POWER", "Power"),
    (27, "SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    (28, "HINGE_LOSS", "HingeLoss"),
    (29, "MEMORY_DATA", "MemoryData"),
    (30, "ARGMAX", "ArgMax"),
    (31, "THRESHOLD", "Threshold"),
    (32, "DUMMY_DATA", "DummyData"),
    (33, "SLICE", "Slice"),
    (34, "MVN", "MVN"),
    (35, "ABSVAL", "AbsVal"),
    (36, "SILENCE", "Silence"),
    (37, "CONTRASTIVE_LOSS", "ContrastiveLoss"),
    (38, "EXP", "Exp"),
    (39, "DECONVOLUTION", "Deconvolution"),
];

/// V0 (pre-2014) type strings and their new-format names, as Caffe upgrades them.
const V0_LAYER_TYPES: [(&str, &str); 24] = [
    ("accuracy", "Accuracy"),
    ("bnll", "BNLL"),
    ("concat", "Concat"),
    ("conv", "Convolution"),
    ("data", "Data"),
    ("dropout", "Dropout"),
    ("euclidean_loss", "EuclideanLoss"),
    ("flatten", "Flatten"),
    ("hdf5_data", "HDF5Data"),
    ("hdf5_output", "HDF5Output"),
    ("im2col", "Im2col"),
    ("images", "ImageData"),
    ("infogain_loss", "InfogainLoss"),
    ("innerproduct", "InnerProduct"),
    ("lrn", "LRN"),
    ("multinomial_logistic_loss", "MultinomialLogisticLoss"),
    ("pool", "Pooling"),
    ("relu", "ReLU"),
    ("sigmoid", "Sigmoid"),
    ("softmax", "Softmax"),
    ("softmax_loss", "SoftmaxWithLoss"),
    ("split", "Split"),
    ("tanh", "TanH"),
    ("window_data", "WindowData"),
];

/// The new-format type name of a V1 `LayerType` enum number (as stored in a caffemodel).
pub fn v1_type_name_by_number(number: u64) -> Option<&'static str> {
    V1_LAYER_TYPES.iter().find(|t| t.0 == number).map(|t| t.2)
}

/// The new-format type name of a V1 `LayerType` enum name (as written in a prototxt).
pub fn v1_type_name(enum_name: &str) -> Option<&'static str> {
    V1_LAYER_TYPES.iter().find(|t| t.1 == enum_name).map(|t| t.2)
}

/// The new-format type name of a V0 type string.
pub fn v0_type_name(v0_name: &str) -> Option<&'static str> {
    V0_LAYER_TYPES.iter().find(|t| t.0 == v0_name).map(|t| t.1)
}
