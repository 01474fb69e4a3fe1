//! The schema's flat key listing, for the test that ties it to the autograd model's key order.

use super::*;

impl Schema {
    /// Every state-dict key and shape, in the official order (checked against the autograd
    /// model's construction order, which is what the loaders use).
    pub fn keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut k = Keys(Vec::new());
        let pe = &self.backbone.patch_embed;
        k.conv(&pe.conv);
        k.norm(&pe.norm);
        for stage in &self.backbone.stages {
            if let Some(m) = &stage.merge {
                k.linear(&m.reduction);
                k.norm(&m.norm);
            }
            for b in &stage.blocks {
                k.norm(&b.norm1);
                k.tensor(&b.bias_table);
                k.tensor(&b.index);
                k.linear(&b.qkv);
                k.linear(&b.proj);
                k.norm(&b.norm2);
                k.linear(&b.fc1);
                k.linear(&b.fc2);
            }
        }
        k.norm(&self.final_norm);
        k.tensor(&self.gaussian);
        let t = &self.transformer;
        for l in &t.layers {
            k.attention(&l.self_attn);
            k.norm(&l.norm1);
            k.attention(&l.cross_t2i);
            k.norm(&l.norm2);
            k.linear(&l.lin1);
            k.linear(&l.lin2);
            k.norm(&l.norm3);
            k.norm(&l.norm4);
            k.attention(&l.cross_i2t);
        }
        k.attention(&t.final_attn);
        k.norm(&t.norm_final);
        self.tokens.iter().for_each(|t| k.tensor(t));
        let up = &self.heads.upscaler;
        k.conv(&up.up0);
        k.norm(&up.norm);
        k.conv(&up.up1);
        k.mlp3(&self.heads.hyper);
        self.heads.tasks.iter().for_each(|m| k.mlp3(m));
        self.fusion.proj.iter().for_each(|l| k.linear(l));
        k.conv(&self.fusion.fuse);
        k.0
    }
}

/// Collects (key, shape) pairs.
struct Keys(Vec<(String, Vec<usize>)>);

impl Keys {
    fn tensor(&mut self, t: &TensorSpec) {
        self.0.push((t.key.clone(), t.shape.clone()));
    }
    fn linear(&mut self, l: &LinearSpec) {
        self.0.push((l.weight_key(), vec![l.out, l.inp]));
        if l.bias {
            self.0.push((l.bias_key(), vec![l.out]));
        }
    }
    fn norm(&mut self, n: &NormSpec) {
        self.0.push((n.weight_key(), vec![n.dim]));
        self.0.push((n.bias_key(), vec![n.dim]));
    }
    fn conv(&mut self, c: &ConvSpec) {
        self.0.push((c.weight_key(), c.weight_shape()));
        if c.bias {
            self.0.push((c.bias_key(), vec![c.out]));
        }
    }
    fn attention(&mut self, a: &AttentionSpec) {
        [&a.q, &a.k, &a.v, &a.out].into_iter().for_each(|l| self.linear(l));
    }
    fn mlp3(&mut self, m: &Mlp3Spec) {
        m.layers.iter().for_each(|l| self.linear(l));
    }
}

mod tests {
    use super::super::{Schema, EPS, EPS_2D};
    use crate::model::{FaceXFormer, FacexConfig};

    #[test]
    fn schema_keys_equal_the_autograd_models_keys() {
        for cfg in [FacexConfig::tiny(), FacexConfig::swin_b()] {
            let schema = Schema::new(&cfg).unwrap().keys();
            let model = FaceXFormer::expected_keys(&cfg).unwrap();
            assert_eq!(schema.len(), model.len());
            for (a, b) in schema.iter().zip(&model) {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn epsilons_survive_the_device_f32() {
        // The device kernels take eps as f32: the narrowed f64 is the f32 literal.
        assert_eq!(EPS as f32, 1e-5f32);
        assert_eq!(EPS_2D as f32, 1e-6f32);
    }

    #[test]
    fn shifts_follow_torchvision() {
        let s = Schema::new(&FacexConfig::tiny()).unwrap();
        let shifts: Vec<(usize, usize)> = s.backbone.stages.iter().map(|st| (st.res, st.shift)).collect();
        assert_eq!(shifts, [(56, 3), (28, 3), (14, 3), (7, 0)]);
        let b = &s.backbone.stages[0].blocks;
        assert_eq!((b[0].shift, b[1].shift), (0, 3));
        assert!(s.backbone.stages[3].blocks.iter().all(|b| b.shift == 0));
    }
}
