//! Checking a state dict against the key set and shapes a model expects.

use super::error::{CheckpointError, Result};
use super::state_dict::StateDict;
use std::collections::HashMap;

/// Buffers a model can recompute: accepted whether present or absent (but checked when both are).
fn is_optional(name: &str) -> bool {
    name.ends_with(".relative_position_index")
}

/// Compares `got` with the expected (name, shape) list. Reports every missing key, every
/// unexpected key and every key with the wrong shape (expected, got) in one error.
pub fn validate(expected: &[(String, Vec<usize>)], got: &StateDict) -> Result<()> {
    let wanted: HashMap<&str, &[usize]> = expected.iter().map(|(k, s)| (k.as_str(), s.as_slice())).collect();
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, shape) in expected {
        match got.get(name) {
            None if is_optional(name) => {}
            None => missing.push(name.clone()),
            Some(t) if t.shape() != shape.as_slice() => {
                misshaped.push((name.clone(), shape.clone(), t.shape().to_vec()))
            }
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> =
        got.names().filter(|k| !wanted.contains_key(k) && !is_optional(k)).map(str::to_string).collect();
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    Err(CheckpointError::Keys { missing, unexpected, misshaped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Tensor};

    fn sd(entries: &[(&str, &[usize])]) -> StateDict {
        entries.iter().map(|(k, s)| (k.to_string(), Tensor::zeros(s, DType::F32))).collect()
    }

    fn exp(entries: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        entries.iter().map(|(k, s)| (k.to_string(), s.to_vec())).collect()
    }

    #[test]
    fn matching_dict_passes() {
        let e = [("a", &[2, 3][..]), ("b", &[4][..])];
        validate(&exp(&e), &sd(&e)).unwrap();
    }

    #[test]
    fn reports_everything_at_once() {
        let expected = exp(&[("a", &[2, 3]), ("b", &[4]), ("c", &[1]), ("d", &[5])]);
        let got = sd(&[("a", &[3, 2]), ("b", &[4]), ("x", &[1]), ("y", &[1]), ("d", &[])]);
        let CheckpointError::Keys { missing, unexpected, misshaped } = validate(&expected, &got).unwrap_err() else {
            panic!("wrong error kind")
        };
        assert_eq!(missing, ["c"]);
        assert_eq!(unexpected, ["x", "y"]);
        assert_eq!(misshaped, [("a".to_string(), vec![2, 3], vec![3, 2]), ("d".to_string(), vec![5], vec![])]);
    }

    #[test]
    fn relative_position_index_is_optional_either_way() {
        let idx = "backbone.0.1.0.attn.relative_position_index";
        let with = [("w", &[2][..]), (idx, &[2401][..])];
        let without = [("w", &[2][..])];
        validate(&exp(&with), &sd(&without)).unwrap();
        validate(&exp(&without), &sd(&with)).unwrap();
        // Present on both sides with different shapes: still an error.
        let wrong = [("w", &[2][..]), (idx, &[49][..])];
        assert!(validate(&exp(&with), &sd(&wrong)).is_err());
    }
}
