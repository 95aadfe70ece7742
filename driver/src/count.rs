//! The counting pass on the executors (`--read-by executors` on a cluster): each counts its
//! share of the partitions' row ranges, and the driver merges their counts in partition order.
//! An executor that fails gives its share to the next one; counts are sums, so the totals are
//! the ones the driver would have counted itself.

use std::time::Duration;

use canopy_pipeline::counts::Counts;
use canopy_pipeline::spec::FeatureSpec;
use canopy_proto::v1;
use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_runtime::security::AuthChannel;
use tracing::{info, warn};

use crate::dispatch::{CallError, classify};
use crate::error::{DriverError, Result};
use crate::registry::Member;

/// The executors that count, in registration order.
pub struct Counters {
    executors: Vec<(String, ExecutorClient<AuthChannel>)>,
    timeout: Duration,
}

impl Counters {
    pub fn new(members: &[Member], timeout: Duration) -> Counters {
        let executors = members.iter().map(|m| (m.handle.id.0.clone(), m.handle.control.clone())).collect();
        Counters { executors, timeout }
    }

    /// The merged counts of every partition of `source`, and each partition's (training, test)
    /// rows. Partitions are shared out in contiguous blocks; a failed block goes to the next
    /// executor, and the run stops when every executor has failed one.
    pub async fn count(&self, source: v1::DataSource, spec: &FeatureSpec) -> Result<(Counts, Vec<[u64; 2]>)> {
        let partitions = source.partitions as usize;
        let n = self.executors.len().max(1);
        let blocks: Vec<Vec<u32>> = (0..n)
            .map(|k| (k * partitions / n..(k + 1) * partitions / n).map(|i| i as u32).collect())
            .filter(|b: &Vec<u32>| !b.is_empty())
            .collect();
        let mut usable: Vec<usize> = (0..self.executors.len()).collect();
        let mut answers: Vec<Option<(Counts, Vec<[u64; 2]>)>> = vec![None; blocks.len()];
        let mut next = 0usize;
        let mut last_failure = String::from("no executor to count");
        loop {
            let pending: Vec<usize> = (0..blocks.len()).filter(|&b| answers[b].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if usable.is_empty() {
                return Err(DriverError::NoExecutorsLeft { count: self.executors.len(), last_failure });
            }
            let asked: Vec<(usize, usize)> = pending.iter().map(|&b| (b, usable[(next + b) % usable.len()])).collect();
            next += 1;
            let calls = asked.iter().map(|&(b, e)| self.count_block(e, &source, &blocks[b], spec));
            let results = futures::future::join_all(calls).await;
            for ((b, e), result) in asked.into_iter().zip(results) {
                match result {
                    Ok(answer) => answers[b] = Some(answer),
                    // The file's rows are wrong (a null feature, a changed file): every
                    // executor would say the same.
                    Err(CallError::Fatal(reason)) => {
                        return Err(DriverError::TaskFailed { executor: self.executors[e].0.clone(), reason });
                    }
                    Err(CallError::Lost(reason)) => {
                        let id = &self.executors[e].0;
                        warn!(executor = %id, %reason, "counting failed; another executor counts those partitions");
                        last_failure = format!("{id}: {reason}");
                        usable.retain(|&u| u != e);
                    }
                }
            }
        }
        let mut total = Counts::default();
        let mut per_partition = Vec::with_capacity(partitions);
        for (counts, rows) in answers.into_iter().flatten() {
            total = total.merge(counts);
            per_partition.extend(rows);
        }
        info!(executors = self.executors.len(), partitions, rows = total.rows_read, "counted on the executors");
        Ok((total, per_partition))
    }

    /// One executor's counts of `block`, checked: counts of `spec`'s features, a row count per
    /// partition, and rows that add up.
    async fn count_block(
        &self,
        executor: usize,
        source: &v1::DataSource,
        block: &[u32],
        spec: &FeatureSpec,
    ) -> std::result::Result<(Counts, Vec<[u64; 2]>), CallError> {
        let request = v1::CountPartitionsRequest { source: Some(source.clone()), partitions: block.to_vec() };
        let mut client = self.executors[executor].1.clone();
        let answer = tokio::time::timeout(self.timeout, client.count_partitions(request))
            .await
            .map_err(|_| CallError::Lost(format!("no answer within the {} s task deadline", self.timeout.as_secs_f64())))?
            .map_err(|s| classify(&s))?
            .into_inner();
        let counts: Counts =
            serde_json::from_slice(&answer.counts_json).map_err(|e| CallError::Lost(format!("its counts are not valid: {e}")))?;
        let rows: Vec<[u64; 2]> = answer.train_rows.iter().zip(&answer.test_rows).map(|(&a, &b)| [a, b]).collect();
        let (train, test) = rows.iter().fold((0u64, 0u64), |(a, b), r| (a.saturating_add(r[0]), b.saturating_add(r[1])));
        if !counts.fits(spec)
            || rows.len() != block.len()
            || answer.train_rows.len() != answer.test_rows.len()
            || (train, test) != (counts.train, counts.test)
        {
            return Err(CallError::Lost("its counts do not fit the features or the partitions it was asked for".into()));
        }
        Ok((counts, rows))
    }
}
