import { AssignerProtocol, type PartitionAssigner, PartitionAssigners } from "kafkajs";

/**
 * kafkajs' round robin, plus an explicit empty assignment for each member that
 * gets no partition (a group with more members than partitions). kafkajs
 * leaves those members out of the leader's SyncGroup; Kafka fills them in, but
 * a coordinator that waits for every member's assignment (librdkafka's mock
 * broker, the local one) would hold every SyncGroup until the session ends,
 * then rebalance, forever. Same protocol name: members running plain round
 * robin interoperate.
 */
export const roundRobinAssigningEveryMember: PartitionAssigner = (config) => {
  const roundRobin = PartitionAssigners.roundRobin(config);
  return {
    name: roundRobin.name,
    version: roundRobin.version,
    protocol: (subscription) => roundRobin.protocol(subscription),
    async assign(group) {
      const assigned = await roundRobin.assign(group);
      const listed = new Set(assigned.map((a) => a.memberId));
      const nothing = AssignerProtocol.MemberAssignment.encode({
        version: roundRobin.version,
        assignment: {},
        userData: Buffer.alloc(0),
      });
      const idle = group.members
        .filter((m) => !listed.has(m.memberId))
        .map((m) => ({ memberId: m.memberId, memberAssignment: nothing }));
      return [...assigned, ...idle];
    },
  };
};
