import { Partitioners } from "kafkajs";

/**
 * The partition kafkajs' default partitioner (murmur2 of the key, as the
 * relay routes events) gives a package on a topic of `partitions`: which
 * packages a leader-less partition holds back, in tests and the bench.
 */
export function partitionOf(packageId: number | bigint, partitions: number): number {
  const partitioner = Partitioners.DefaultPartitioner();
  return partitioner({
    topic: "any",
    partitionMetadata: Array.from({ length: partitions }, (_, i) => ({
      partitionId: i,
      leader: 1,
      replicas: [1],
      isr: [1],
    })) as never,
    message: { key: String(packageId), value: null },
  });
}
