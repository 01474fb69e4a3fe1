//! MATLAB `.mat` files: a reader for Level 5 MAT (v5, v6, v7 with zlib) and for the subset of
//! MAT v7.3 (HDF5) that COFW uses, and a small uncompressed Level 5 writer.
//!
//! Why our own reader rather than a crate: the training data needs three things at once —
//! Level 5 numeric arrays stored in any storage type, cell arrays (COFW's images) and MAT v7.3
//! (COFW's colour files are HDF5). The `matfile` crate (0.5, "alpha quality") reads Level 5
//! numeric arrays only (no cells, structs or v7.3); `matrw` reads Level 5 with cells but no v7.3;
//! v7.3 would take a second crate, either the `hdf5` bindings (the C library as a system
//! dependency, FFI) or a young pure-Rust HDF5 implementation whose surface (writing, editing)
//! is far larger than three datasets need. The subset we need is small and fully specified
//! (MathWorks' "MAT-File Format", The HDF Group's "HDF5 File Format Specification"), so reading it
//! in a few hundred lines of safe Rust, with every length checked against the bytes actually
//! present, costs less than auditing two dependencies. The only new dependency is `flate2` on
//! its pure-Rust `miniz_oxide` backend, already in the lock file through `image`.
//!
//! Arrays keep MATLAB's meaning: `dims` as MATLAB reports them (`size(x)`), data column-major
//! (the first index fastest). A v7.3 file stores the same bytes with the dimensions reversed
//! (HDF5 is row-major), so both formats produce identical [`MatArray`]s.
//!
//! Errors are [`Error::Format`](crate::Error) naming the file, and the variable where one is
//! being read.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::preprocess::RgbImage;

mod hdf5;
mod v5;
mod write;

pub use write::write_v5;

/// The values of one array, column-major. Numeric classes keep their MATLAB class whatever the
/// on-disk storage type was (MATLAB often stores a double array as `miUINT8` when it can).
#[derive(Clone, Debug, PartialEq)]
pub enum MatData {
    Double(Vec<f64>),
    Single(Vec<f32>),
    Int8(Vec<i8>),
    UInt8(Vec<u8>),
    Int16(Vec<i16>),
    UInt16(Vec<u16>),
    Int32(Vec<i32>),
    UInt32(Vec<u32>),
    Int64(Vec<i64>),
    UInt64(Vec<u64>),
    /// A logical array (stored as uint8 0/1).
    Logical(Vec<u8>),
    /// A char array as UTF-16 code units, column-major like every other class.
    Char(Vec<u16>),
    /// A cell array: one array per element.
    Cell(Vec<MatArray>),
    /// A struct array: `values[element * fields.len() + field]`.
    Struct {
        fields: Vec<String>,
        values: Vec<MatArray>,
    },
}

/// One MATLAB array: its dimensions (`size(x)`, at least two) and its values, column-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MatArray {
    pub dims: Vec<usize>,
    pub data: MatData,
}

impl MatArray {
    /// A double array from column-major values; `dims` must multiply to `values.len()`.
    pub fn double(dims: &[usize], values: Vec<f64>) -> MatArray {
        MatArray { dims: dims.to_vec(), data: MatData::Double(values) }
    }

    /// A uint8 array (an image is `[H, W]` or `[H, W, 3]`) from column-major values.
    pub fn uint8(dims: &[usize], values: Vec<u8>) -> MatArray {
        MatArray { dims: dims.to_vec(), data: MatData::UInt8(values) }
    }

    /// A cell array of `dims` from its elements, column-major.
    pub fn cell(dims: &[usize], items: Vec<MatArray>) -> MatArray {
        MatArray { dims: dims.to_vec(), data: MatData::Cell(items) }
    }

    /// A `rows x cols` double matrix from row-major values (how one writes a matrix in code).
    pub fn double_rows(rows: usize, cols: usize, row_major: &[f64]) -> MatArray {
        let mut v = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                v[c * rows + r] = row_major[r * cols + c];
            }
        }
        MatArray::double(&[rows, cols], v)
    }

    /// A char row vector.
    pub fn text(s: &str) -> MatArray {
        let units: Vec<u16> = s.encode_utf16().collect();
        MatArray { dims: vec![1, units.len()], data: MatData::Char(units) }
    }

    /// The number of elements (the product of `dims`).
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class name as MATLAB's `class(x)` prints it.
    pub fn class_name(&self) -> &'static str {
        match &self.data {
            MatData::Double(_) => "double",
            MatData::Single(_) => "single",
            MatData::Int8(_) => "int8",
            MatData::UInt8(_) => "uint8",
            MatData::Int16(_) => "int16",
            MatData::UInt16(_) => "uint16",
            MatData::Int32(_) => "int32",
            MatData::UInt32(_) => "uint32",
            MatData::Int64(_) => "int64",
            MatData::UInt64(_) => "uint64",
            MatData::Logical(_) => "logical",
            MatData::Char(_) => "char",
            MatData::Cell(_) => "cell",
            MatData::Struct { .. } => "struct",
        }
    }

    /// Any numeric or logical array as f64 (column-major); `None` for char, cell and struct.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> f64) -> Option<Vec<f64>> {
            Some(v.iter().map(|&x| f(x)).collect())
        }
        match &self.data {
            MatData::Double(v) => Some(v.clone()),
            MatData::Single(v) => conv(v, f64::from),
            MatData::Int8(v) => conv(v, f64::from),
            MatData::UInt8(v) | MatData::Logical(v) => conv(v, f64::from),
            MatData::Int16(v) => conv(v, f64::from),
            MatData::UInt16(v) => conv(v, f64::from),
            MatData::Int32(v) => conv(v, f64::from),
            MatData::UInt32(v) => conv(v, f64::from),
            MatData::Int64(v) => conv(v, |x| x as f64),
            MatData::UInt64(v) => conv(v, |x| x as f64),
            MatData::Char(_) | MatData::Cell(_) | MatData::Struct { .. } => None,
        }
    }

    /// A char array as a string (column-major order, which is reading order for a row vector).
    pub fn to_text(&self) -> Option<String> {
        match &self.data {
            MatData::Char(u) => Some(String::from_utf16_lossy(u)),
            _ => None,
        }
    }

    /// The elements of a cell array.
    pub fn cells(&self) -> Option<&[MatArray]> {
        match &self.data {
            MatData::Cell(items) => Some(items),
            _ => None,
        }
    }

    /// A field of a 1x1 struct.
    pub fn field(&self, name: &str) -> Option<&MatArray> {
        match &self.data {
            MatData::Struct { fields, values } if self.len() == 1 => {
                fields.iter().position(|f| f == name).map(|i| &values[i])
            }
            _ => None,
        }
    }

    /// A MATLAB image (`uint8`, `[H, W]` grey or `[H, W, 3]` RGB, column-major) as an RGB image;
    /// grey is replicated into the three channels.
    pub fn to_rgb_image(&self) -> std::result::Result<RgbImage, String> {
        let MatData::UInt8(v) = &self.data else {
            return Err(format!("an image must be uint8, this is {}", self.class_name()));
        };
        let (h, w, c) = match self.dims[..] {
            [h, w] => (h, w, 1),
            [h, w, 1] => (h, w, 1),
            [h, w, 3] => (h, w, 3),
            _ => return Err(format!("an image must be [H, W] or [H, W, 3], this is {:?}", self.dims)),
        };
        if h == 0 || w == 0 || v.len() != h * w * c {
            return Err(format!("image of dims {:?} with {} values", self.dims, v.len()));
        }
        let (w32, h32) = (u32::try_from(w).map_err(|e| e.to_string())?, u32::try_from(h).map_err(|e| e.to_string())?);
        let plane = h * w;
        Ok(RgbImage::from_fn(w32, h32, |x, y| {
            let at = x as usize * h + y as usize;
            let ch = |k: usize| v[if c == 3 { k * plane + at } else { at }];
            image::Rgb([ch(0), ch(1), ch(2)])
        }))
    }

    /// An RGB image as MATLAB stores it: `uint8` `[H, W, 3]`, column-major.
    pub fn from_rgb_image(img: &RgbImage) -> MatArray {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut v = vec![0u8; h * w * 3];
        for (x, y, p) in img.enumerate_pixels() {
            for k in 0..3 {
                v[k * h * w + x as usize * h + y as usize] = p.0[k];
            }
        }
        MatArray::uint8(&[h, w, 3], v)
    }

    /// Check the element count against `dims` (the readers' and the writer's invariant).
    pub(crate) fn check_len(&self) -> std::result::Result<(), String> {
        let want = self.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dims overflow")?;
        let have = match &self.data {
            MatData::Double(v) => v.len(),
            MatData::Single(v) => v.len(),
            MatData::Int8(v) => v.len(),
            MatData::UInt8(v) | MatData::Logical(v) => v.len(),
            MatData::Int16(v) => v.len(),
            MatData::UInt16(v) | MatData::Char(v) => v.len(),
            MatData::Int32(v) => v.len(),
            MatData::UInt32(v) => v.len(),
            MatData::Int64(v) => v.len(),
            MatData::UInt64(v) => v.len(),
            MatData::Cell(v) => v.len(),
            MatData::Struct { fields, values } => {
                if fields.is_empty() {
                    return Ok(());
                }
                values.len() / fields.len()
            }
        };
        if want != have {
            return Err(format!("{} {} values for dims {:?} ({want} elements)", have, self.class_name(), self.dims));
        }
        Ok(())
    }
}

/// The variables of one `.mat` file, in file order.
#[derive(Clone, Debug)]
pub struct MatFile {
    pub path: PathBuf,
    pub vars: Vec<(String, MatArray)>,
}

impl MatFile {
    /// A variable by name, or an error naming the file and the variable.
    pub fn get(&self, name: &str) -> Result<&MatArray> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, a)| a).ok_or_else(|| {
            let names: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
            self.error(format!("no variable {name:?} (the file has: {})", names.join(", ")))
        })
    }

    /// A numeric variable as f64 with exactly the MATLAB dims `dims`.
    pub fn numeric(&self, name: &str, dims: &[usize]) -> Result<Vec<f64>> {
        let a = self.get(name)?;
        let v = a.to_f64().ok_or_else(|| self.error(format!("variable {name}: {} is not numeric", a.class_name())))?;
        if a.dims != dims {
            return Err(self.error(format!("variable {name}: size {:?}, expected {dims:?}", a.dims)));
        }
        Ok(v)
    }

    pub fn error(&self, msg: String) -> Error {
        Error::Format { path: self.path.clone(), msg }
    }
}

/// Read a whole `.mat` file (Level 5, or v7.3 within the documented HDF5 subset).
pub fn read(path: &Path) -> Result<MatFile> {
    let bytes = crate::error::read(path)?;
    read_bytes(path, &bytes)
}

/// Parse the bytes of a `.mat` file; `path` only names it in errors.
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<MatFile> {
    let err = |msg: String| Error::Format { path: path.to_path_buf(), msg };
    // MAT v7.3 is an HDF5 file behind a 512-byte userblock that holds the MAT header text.
    if bytes.get(512..520) == Some(HDF5_SIGNATURE) || bytes.starts_with(HDF5_SIGNATURE) {
        let vars = hdf5::parse(bytes).map_err(|e| err(format!("MAT v7.3 (HDF5): {e}")))?;
        return Ok(MatFile { path: path.to_path_buf(), vars });
    }
    let vars = v5::parse(bytes).map_err(err)?;
    Ok(MatFile { path: path.to_path_buf(), vars })
}

/// The first eight bytes of an HDF5 superblock.
const HDF5_SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";
