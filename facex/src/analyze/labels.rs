//! Label names and the parsing palette.

/// The 40 CelebA attributes in `list_attr_celeba.txt` order (the model's order, issue #15): the
/// CelebA reader's table, one list for reading labels and naming outputs.
pub use data::datasets::celeba::ATTRIBUTES;

/// Age bins as the author gives them (issue #5).
pub const AGE_BINS: [&str; 8] = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"];

/// 0 male, 1 female (issue #5).
pub const GENDERS: [&str; 2] = ["male", "female"];

/// The author's order (issue #5): note that it differs from UTKFace's own (2 Asian, 3 Indian).
pub const RACES: [&str; 5] = ["White", "Black", "Indian", "Asian", "Others"];

/// The 11 parsing classes in LaPa order.
pub const PARSING_CLASSES: [&str; 11] = [
    "background",
    "skin",
    "left_eyebrow",
    "right_eyebrow",
    "left_eye",
    "right_eye",
    "nose",
    "upper_lip",
    "inner_mouth",
    "lower_lip",
    "hair",
];

/// The official visualisation palette (the LaPa colours), one RGB colour per class.
pub const PARSING_PALETTE: [[u8; 3]; 11] = [
    [0, 0, 0],
    [0, 153, 255],
    [102, 255, 153],
    [0, 204, 153],
    [255, 255, 102],
    [255, 255, 204],
    [255, 153, 0],
    [255, 102, 255],
    [102, 0, 51],
    [255, 204, 255],
    [255, 0, 102],
];
