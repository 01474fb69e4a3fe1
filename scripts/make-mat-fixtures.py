#!/usr/bin/env python3
"""Write the small MATLAB-file fixtures under data/tests/fixtures/mat/ that data/tests/mat.rs reads.

    python3 -m venv /tmp/matvenv && /tmp/matvenv/bin/pip install numpy scipy h5py pillow
    /tmp/matvenv/bin/python scripts/make-mat-fixtures.py

The outputs are committed; the Rust tests never need Python. Rerunning rewrites them (the HDF5
file's bytes may differ between h5py versions; its values do not).

What the files hold (the tests assert these exact values; i is 0-based):

300w_lp/ (300W-LP layout)
  AFW/AFW_134212_1_0.mat       savemat, uncompressed. pt2d 2x68: pt2d[0,i] = 100 + 2i + 0.25,
                               pt2d[1,i] = 50 + 3i + 0.5. Pose_Para 1x7 =
                               [0.1, -0.5, 0.25, 120, 130, 0, 0.0015]. roi 1x4 = [1, 2, 3, 4],
                               Shape_Para 10x1 = 0..9 (ignored by the reader).
  AFW_Flip/AFW_134212_1_0.mat  savemat, COMPRESSED. pt2d[0,i] = 255 - (100 + 2i + 0.25), pt2d[1,i]
                               as above. Pose_Para = [0.1, 0.5, -0.25, 120, 130, 0, 0.0015].
  HELEN/HELEN_bad_0.mat        pt2d 2x67 (a wrong shape: the reader must skip it, naming the file).
  landmarks/AFW/AFW_134212_1_0_pts.mat  pts_2d, pts_3d 68x2 = pt2d.T (optional in the reader).
  each .mat has a 256x256 grey JPEG beside it.
aflw2000/AFLW2000/ (AFLW2000-3D layout, compressed)
  image00002.mat  pt3d_68 3x68: [200 + i, 150 + 2i, -i]; Pose_Para = [-0.2, 0.3, 0.05, 0, 0, 0, 1]
  image00004.mat  pt3d_68 as above; Pose_Para = [0.1, 1.9, 0.0, 0, 0, 0, 1] (yaw 108.9 deg: out of
                  the +-99 degree evaluation range)
cofw/ (COFW colour files, MAT v7.3 = HDF5 the way MATLAB writes it)
  COFW_train_color.mat  512-byte userblock with the MATLAB 7.3 header, superblock v0 (h5py
      libver='earliest', as MATLAB), '#refs#' group holding the images, MATLAB_class attributes,
      every array stored transposed (HDF5 shape = reversed MATLAB dims).
      IsTr 2x1 cell of object references: image 0 uint8 colour [48, 40, 3] (H, W, C), chunked +
      deflate; image 1 uint8 grey [36, 32], contiguous. Pixel (r, c, ch) = (10r + 3c + 100ch) % 256.
      phisTr 2x87 double (chunked + deflate): for sample n, point k (0..28): x = 4 + k - 2n,
      y = 6 + k (MATLAB 1-based), occluded = 1 if (k + n) % 3 == 0 else 0.
      bboxesTr 2x4 double (shuffle + deflate): [3, 5, 30, 31] and [1, 4, 29, 30] (x, y, w, h, 1-based).
  COFW_test_color.mat   IsT 1x1 cell: image uint8 colour [20, 16, 3] in a COMPACT dataset,
      same pixel formula; phisT 1x87 as sample n = 0 above; bboxesT 1x4 = [2, 3, 12, 14].
cofw_v5/COFW.mat  (the older v5 COFW.mat, compressed, grey images)
  IsTr 2x1 cell of uint8 grey images [36, 32] and [30, 28] (same pixel formula, ch = 0);
  phisTr 2x87 and bboxesTr 2x4 as in COFW_train_color.mat; IsT 1x1 cell of a [20, 16] grey image,
  phisT 1x87 = phisTr row 0, bboxesT 1x4 = [2, 3, 12, 14].
latest.mat  HDF5 as h5py's libver="latest" writes it (superblock v3, object header v2, link
  messages, layout v4), after the MATLAB userblock: `c` 1x1 cell -> '#refs#/a' uint8 [4, 3] with
  values 0..11 column-major (= arange(12).reshape(3, 4) on disk); `x` 3x2 double = [[0, 3], [1, 4],
  [2, 5]] (contiguous); `y` 10x4 double, y(r, c) = 10 (c - 1) + (r - 1) in 1-based terms (chunks
  (2, 3) on disk, shuffle + deflate, a fixed-array index with partial edge chunks); `z` 10x1 =
  0..9 (one chunk, deflate: the single-chunk index).
hostile_loop.mat  v7.3: `loop` is a 2x1 cell whose both references point to itself (must end in an
  error, not a hang). hostile_big.mat  v7.3: `big`, a 10^6 x 10^6 double chunked dataset with no
  chunk written (must be an error, not a 8 TB allocation).
types.mat  (savemat, uncompressed) a_double 2x3 = [[1, 2, 3], [4, 5, 6]], a_single 1x2 = [1.5, -2.5],
  a_int8 1x3 = [-128, 0, 127], a_uint16 1x2 = [0, 65535], a_int32 1x2 = [-7, 7],
  a_uint64 1x1 = [2^63], a_logical 1x3 = [True, False, True], a_char = 'hello',
  a_cell 1x2 = {[7.0], 'xy'}, a_struct with fields n = 3.0 and s = 'ab', a_empty 0x0 double.
"""

import os
import struct

import h5py
import numpy as np
import scipy.io
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tests", "fixtures", "mat")


def out(*parts):
    path = os.path.join(ROOT, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def jpeg(path):
    Image.new("L", (256, 256), 128).save(path, quality=50)


def pixels(h, w, channels):
    r, c, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(max(channels, 1)), indexing="ij")
    img = ((10 * r + 3 * c + 100 * ch) % 256).astype(np.uint8)
    return img if channels == 3 else img[:, :, 0]


def pt2d(flip=False):
    i = np.arange(68)
    x = 100 + 2 * i + 0.25
    return np.stack([255 - x if flip else x, 50 + 3 * i + 0.5])


def phis(n):
    k = np.arange(29)
    return np.concatenate([4 + k - 2 * n, 6 + k, ((k + n) % 3 == 0).astype(float)]).astype(float)


def w300lp():
    pose = np.array([[0.1, -0.5, 0.25, 120, 130, 0, 0.0015]])
    common = {"roi": np.array([[1.0, 2, 3, 4]]), "Shape_Para": np.arange(10.0).reshape(10, 1)}
    scipy.io.savemat(out("300w_lp", "AFW", "AFW_134212_1_0.mat"), {"pt2d": pt2d(), "Pose_Para": pose, **common})
    flip = np.array([[0.1, 0.5, -0.25, 120, 130, 0, 0.0015]])
    scipy.io.savemat(out("300w_lp", "AFW_Flip", "AFW_134212_1_0.mat"), {"pt2d": pt2d(True), "Pose_Para": flip},
                     do_compression=True)
    scipy.io.savemat(out("300w_lp", "HELEN", "HELEN_bad_0.mat"), {"pt2d": pt2d()[:, :67], "Pose_Para": pose})
    scipy.io.savemat(out("300w_lp", "landmarks", "AFW", "AFW_134212_1_0_pts.mat"),
                     {"pts_2d": pt2d().T, "pts_3d": pt2d().T})
    for d, n in [("AFW", "AFW_134212_1_0"), ("AFW_Flip", "AFW_134212_1_0"), ("HELEN", "HELEN_bad_0")]:
        jpeg(out("300w_lp", d, n + ".jpg"))


def aflw2000():
    i = np.arange(68)
    pt3d = np.stack([200.0 + i, 150.0 + 2 * i, -1.0 * i])
    for name, pose in [("image00002", [-0.2, 0.3, 0.05, 0, 0, 0, 1]), ("image00004", [0.1, 1.9, 0.0, 0, 0, 0, 1])]:
        scipy.io.savemat(out("aflw2000", "AFLW2000", name + ".mat"), {"pt3d_68": pt3d, "Pose_Para": np.array([pose])},
                         do_compression=True)
        jpeg(out("aflw2000", "AFLW2000", name + ".jpg"))


def matlab_userblock(path):
    """Write MATLAB's 128-byte v7.3 header into the (zeroed) 512-byte userblock."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b" " * 8 + struct.pack("<H", 0x0200) + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def matlab_class(obj, name):
    obj.attrs.create("MATLAB_class", np.bytes_(name))


def cofw_v73(path, cell, phis_name, boxes_name, images, phis_rows, boxes, compact=False):
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        handles = []
        for j, img in enumerate(images):
            name = "abcdefgh"[j]
            disk = np.ascontiguousarray(img.T)  # MATLAB [H, W, 3] -> HDF5 (3, W, H)
            if compact:
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.COMPACT)
                space = h5py.h5s.create_simple(disk.shape)
                dsid = h5py.h5d.create(refs.id, name.encode(), h5py.h5t.STD_U8LE, space, dcpl=dcpl)
                dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, disk)
                ds = refs[name]
            elif j == 0:
                ds = refs.create_dataset(name, data=disk, chunks=tuple(max(1, s // 2) for s in disk.shape),
                                         compression="gzip")
            else:
                ds = refs.create_dataset(name, data=disk)
            matlab_class(ds, "uint8")
            handles.append(ds.ref)
        cells = f.create_dataset(cell, (1, len(images)), dtype=h5py.ref_dtype)  # MATLAB N x 1
        for j, h in enumerate(handles):
            cells[0, j] = h
        matlab_class(cells, "cell")
        p = np.stack(phis_rows)  # N x 87
        ds = f.create_dataset(phis_name, data=p.T, chunks=(29, 1), compression="gzip")
        matlab_class(ds, "double")
        ds = f.create_dataset(boxes_name, data=np.array(boxes, dtype=float).T, chunks=(4, 1), compression="gzip",
                              shuffle=True)
        matlab_class(ds, "double")
    matlab_userblock(path)


def cofw():
    boxes = [[3, 5, 30, 31], [1, 4, 29, 30]]
    cofw_v73(out("cofw", "COFW_train_color.mat"), "IsTr", "phisTr", "bboxesTr",
             [pixels(48, 40, 3), pixels(36, 32, 1)], [phis(0), phis(1)], boxes)
    cofw_v73(out("cofw", "COFW_test_color.mat"), "IsT", "phisT", "bboxesT",
             [pixels(20, 16, 3)], [phis(0)], [[2, 3, 12, 14]], compact=True)

    def cell(images):
        c = np.empty((len(images), 1), dtype=object)
        for j, img in enumerate(images):
            c[j, 0] = img
        return c

    scipy.io.savemat(out("cofw_v5", "COFW.mat"), {
        "IsTr": cell([pixels(36, 32, 1), pixels(30, 28, 1)]),
        "phisTr": np.stack([phis(0), phis(1)]),
        "bboxesTr": np.array(boxes, dtype=float),
        "IsT": cell([pixels(20, 16, 1)]),
        "phisT": phis(0)[None, :],
        "bboxesT": np.array([[2.0, 3, 12, 14]]),
    }, do_compression=True)


def latest():
    with h5py.File(out("latest.mat"), "w", userblock_size=512, libver="latest") as f:
        a = f.create_group("#refs#").create_dataset("a", data=np.arange(12, dtype=np.uint8).reshape(3, 4))
        c = f.create_dataset("c", (1, 1), dtype=h5py.ref_dtype)
        c[0, 0] = a.ref
        f.create_dataset("x", data=np.arange(6.0).reshape(2, 3))
        f.create_dataset("y", data=np.arange(40.0).reshape(4, 10), chunks=(2, 3), compression="gzip", shuffle=True)
        f.create_dataset("z", data=np.arange(10.0).reshape(1, 10), chunks=(1, 10), compression="gzip")
    matlab_userblock(out("latest.mat"))


def hostile():
    with h5py.File(out("hostile_loop.mat"), "w", userblock_size=512, libver="earliest") as f:
        ds = f.create_dataset("loop", (1, 2), dtype=h5py.ref_dtype)
        ds[0, 0] = ds.ref
        ds[0, 1] = ds.ref
        matlab_class(ds, "cell")
    matlab_userblock(out("hostile_loop.mat"))
    with h5py.File(out("hostile_big.mat"), "w", userblock_size=512, libver="earliest") as f:
        matlab_class(f.create_dataset("big", (10**6, 10**6), dtype="f8", chunks=(1, 8)), "double")
    matlab_userblock(out("hostile_big.mat"))


def types():
    c = np.empty((1, 2), dtype=object)
    c[0, 0] = np.array([[7.0]])
    c[0, 1] = "xy"
    s = {"n": 3.0, "s": "ab"}
    scipy.io.savemat(out("types.mat"), {
        "a_double": np.array([[1.0, 2, 3], [4, 5, 6]]),
        "a_single": np.array([[1.5, -2.5]], dtype=np.float32),
        "a_int8": np.array([[-128, 0, 127]], dtype=np.int8),
        "a_uint16": np.array([[0, 65535]], dtype=np.uint16),
        "a_int32": np.array([[-7, 7]], dtype=np.int32),
        "a_uint64": np.array([[2**63]], dtype=np.uint64),
        "a_logical": np.array([[True, False, True]]),
        "a_char": "hello",
        "a_cell": c,
        "a_struct": s,
        "a_empty": np.zeros((0, 0)),
    })


if __name__ == "__main__":
    w300lp()
    aflw2000()
    cofw()
    latest()
    hostile()
    types()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"wrote {ROOT} ({total} bytes)")
