//! MTCNN face detection (P-, R-, O-Net) as facenet-pytorch implements it.
