//! Property tests of what faces the network: Flight streams of partitions, mutated at random
//! bytes, go through the executor's decoding path (Arrow Flight and IPC, then the partition
//! format) and must come out as rows or an error, never a panic. Cases proptest finds are kept
//! in `proptest-regressions/` and replayed first by every run.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use canopy_tree::{BinEdges, FeatureBins};
use futures::TryStreamExt;
use proptest::prelude::*;

fn edges() -> BinEdges {
    BinEdges {
        features: vec![
            FeatureBins { name: "x".into(), thresholds: vec![0.5, 1.5] },
            FeatureBins { name: "y".into(), thresholds: vec![10.0] },
        ],
    }
}

/// A valid partition of `rows` rows: bins and row numbers (forest mode) or values (ensemble
/// mode).
fn partition(rows: usize, binned: bool) -> Vec<FlightData> {
    let names = ["x".to_string(), "y".to_string()];
    let schema = canopy_proto::partition::schema(&names, binned, binned);
    let label = Arc::new(UInt8Array::from_iter_values((0..rows).map(|i| (i % 3) as u8)));
    let columns: Vec<Arc<dyn arrow::array::Array>> = if binned {
        vec![
            Arc::new(UInt8Array::from_iter_values((0..rows).map(|i| (i % 3) as u8))),
            Arc::new(UInt8Array::from_iter_values((0..rows).map(|i| (i % 2) as u8))),
            label,
            Arc::new(arrow::array::UInt64Array::from_iter_values((0..rows).map(|i| i as u64 * 3))),
        ]
    } else {
        vec![
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 / 3.0))),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 * 7.0))),
            label,
        ]
    };
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let encoded = FlightDataEncoderBuilder::new().with_max_flight_data_size(256).build(futures::stream::iter([Ok(batch)]));
    futures::executor::block_on(encoded.try_collect()).unwrap()
}

/// The executor's receiving path, as in `do_put`: Flight to record batches, then the format.
fn receive(messages: Vec<FlightData>, keep_raw: bool) -> Result<usize, String> {
    let stream = futures::stream::iter(messages.into_iter().map(canopy_executor::server::checked_flight_data));
    let batches: Vec<RecordBatch> =
        futures::executor::block_on(FlightRecordBatchStream::new_from_flight_data(stream).try_collect()).map_err(|e| e.to_string())?;
    let decoded = canopy_proto::partition::decode(&batches, &edges(), 3, keep_raw).map_err(|e| e.to_string())?;
    Ok(decoded.binned.num_rows())
}

#[test]
fn valid_partitions_round_trip() {
    assert_eq!(receive(partition(100, true), false), Ok(100));
    assert_eq!(receive(partition(100, false), true), Ok(100));
}

#[test]
fn a_wrong_schema_names_the_column() {
    let schema = Arc::new(Schema::new(vec![Field::new("label", DataType::UInt8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(UInt8Array::from(vec![0u8]))]).unwrap();
    let messages: Vec<FlightData> =
        futures::executor::block_on(FlightDataEncoderBuilder::new().build(futures::stream::iter([Ok(batch)])).try_collect()).unwrap();
    assert_eq!(receive(messages, false), Err("column 'x' is missing".into()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Flip bytes anywhere in the headers and bodies of a valid stream.
    #[test]
    fn mutated_streams_never_panic(
        rows in 0usize..200,
        binned in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut messages = partition(rows, binned);
        for (message, header, at, value) in flips {
            let which = message.index(messages.len());
            let m = &mut messages[which];
            let bytes = if header { &mut m.data_header } else { &mut m.data_body };
            if !bytes.is_empty() {
                let mut owned = bytes.to_vec();
                let i = at.index(owned.len());
                owned[i] = value;
                *bytes = owned.into();
            }
        }
        let _ = receive(messages, !binned);
    }

    /// Arbitrary bytes as header and body.
    #[test]
    fn random_messages_never_panic(
        parts in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..256), prop::collection::vec(any::<u8>(), 0..512)), 1..4),
    ) {
        let mut messages = partition(5, true);
        messages.truncate(1);
        messages.extend(parts.into_iter().map(|(h, b)| FlightData { data_header: h.into(), data_body: b.into(), ..FlightData::default() }));
        let _ = receive(messages, false);
    }
}
