//! `StateDict`: named tensors in insertion order (the order of the checkpoint).

use std::collections::HashMap;
use tensor::Tensor;

#[derive(Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(k, t)| (k, t))).finish()
    }
}

impl StateDict {
    pub fn new() -> Self {
        StateDict::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Inserts or replaces; a replaced entry keeps its position. Returns the old tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        let name = name.into();
        if let Some(&i) = self.index.get(&name) {
            return Some(std::mem::replace(&mut self.entries[i].1, tensor));
        }
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push((name, tensor));
        None
    }

    /// Removes an entry, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.index.remove(name)?;
        let (_, t) = self.entries.remove(i);
        for pos in self.index.values_mut() {
            if *pos > i {
                *pos -= 1;
            }
        }
        Some(t)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// (name, shape) pairs in order: the form `validate` takes.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.entries.iter().map(|(k, t)| (k.clone(), t.shape().to_vec())).collect()
    }

    /// Total number of elements of all tensors.
    pub fn num_elements(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.elem_count()).sum()
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        let mut sd = StateDict::new();
        for (k, t) in iter {
            sd.insert(k, t);
        }
        sd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::DType;

    fn t(n: usize) -> Tensor {
        Tensor::zeros(&[n], DType::F32)
    }

    #[test]
    fn keeps_insertion_order_and_replaces_in_place() {
        let mut sd = StateDict::new();
        sd.insert("b", t(1));
        sd.insert("a", t(2));
        sd.insert("c", t(3));
        assert!(sd.insert("a", t(5)).is_some());
        assert_eq!(sd.names().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(sd.get("a").unwrap().shape(), &[5]);
        assert_eq!(sd.len(), 3);
        assert_eq!(sd.num_elements(), 9);
    }

    #[test]
    fn remove_keeps_index_consistent() {
        let mut sd: StateDict = (0..6).map(|i| (format!("k{i}"), t(i + 1))).collect();
        assert_eq!(sd.remove("k2").unwrap().shape(), &[3]);
        assert!(sd.remove("k2").is_none());
        assert_eq!(sd.names().collect::<Vec<_>>(), ["k0", "k1", "k3", "k4", "k5"]);
        for (k, tensor) in sd.iter() {
            assert_eq!(sd.get(k).unwrap().shape(), tensor.shape());
        }
        assert_eq!(sd.get("k5").unwrap().shape(), &[6]);
        assert!(!sd.contains("k2"));
    }
}
