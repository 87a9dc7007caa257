//! `ModelRunner`: turns a `SchedulerOutput` into sampled tokens. Builds the `ForwardBatch`, runs
//! the model over the paged cache it owns, and samples one token per sampling sequence.

pub mod batch;
pub mod sampler;

use crate::engine::output::{ModelRunnerOutput, SchedulerOutput};
use crate::engine::request::RequestId;
use crate::engine::scheduler::Scheduler;
use crate::kv::{KvCache, KvCacheConfig};
use crate::models::CausalLm;
use batch::ForwardBatch;
use sampler::Sampler;

pub struct ModelRunner {
    model: Box<dyn CausalLm>,
    kv: KvCache,
    sampler: Sampler,
}

impl ModelRunner {
    pub fn new(model: Box<dyn CausalLm>, kv_config: KvCacheConfig) -> Self {
        let (layers, heads, dim) = model.kv_shape();
        assert_eq!(
            (
                kv_config.num_layers,
                kv_config.num_kv_heads,
                kv_config.head_dim
            ),
            (layers, heads, dim),
            "KV cache shape must match the model. This is a bug."
        );
        Self {
            model,
            kv: KvCache::new(kv_config),
            sampler: Sampler::default(),
        }
    }

    pub fn execute(
        &mut self,
        out: &SchedulerOutput,
        scheduler: &Scheduler,
    ) -> candle_core::Result<ModelRunnerOutput> {
        let seq = |id| scheduler.seq(id).expect("scheduled sequence exists");
        let batch = ForwardBatch::build(out, seq, self.kv.config().block_size);
        let logits = self.model.forward(&batch, &mut self.kv)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let sampled = batch
            .seqs
            .iter()
            .filter(|s| s.sample)
            .zip(rows)
            .map(|(s, row)| {
                let params = &seq(s.request_id).sampling;
                (
                    s.request_id,
                    self.sampler.sample(s.request_id, params, &row),
                )
            })
            .collect();
        Ok(ModelRunnerOutput { sampled })
    }

    /// Drops per-request state (the sampling RNG) of a request that ended.
    pub fn forget(&mut self, id: RequestId) {
        self.sampler.remove(id);
    }
}
