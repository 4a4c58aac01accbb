//! Pretrained architectures built from kiln-nn layers, named like their Hugging Face
//! checkpoints so that [`crate::torch::load_state_dict`] fills them without renaming.

pub mod bert;
