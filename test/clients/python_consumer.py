"""A stock Kafka consumer in another language: Debian's python3-confluent-kafka
(librdkafka underneath), decoding the value with protobuf stubs compiled from
the repository's api/ by grpc_tools at test time. It knows the wire contract
only: topic, key, headers and the PackageEvent message. Reads every partition
from the beginning (no consumer group) until COUNT messages or 30 s, then
prints one JSON line per message in partition and offset order; exits 0.

usage: python_consumer.py STUBS_DIR BROKERS TOPIC COUNT
"""
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from hablof.logistic_package_api.v1 import kafka_proto_pb2 as pb  # noqa: E402

brokers, topic, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
consumer = Consumer({
    "bootstrap.servers": brokers,
    # Required by the client; nothing is committed, and assign() needs no coordinator.
    "group.id": "python-consumer-check",
    "enable.auto.commit": False,
})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

records = []
deadline = time.monotonic() + 30
while len(records) < count and time.monotonic() < deadline:
    message = consumer.poll(0.5)
    if message is None:
        continue
    if message.error():
        raise SystemExit(f"consume failed: {message.error()}")
    event = pb.PackageEvent()
    event.ParseFromString(message.value())
    records.append({
        "partition": message.partition(),
        "offset": message.offset(),
        "key": message.key().decode("utf-8"),
        "headers": {k: v.decode("utf-8") for k, v in (message.headers() or [])},
        "event": {
            "ID": str(event.ID),
            "PackageID": str(event.PackageID),
            "Type": pb.EventType.Name(event.Type),
            "CreatedSeconds": event.Created.seconds,
            "Payload": json.loads(event.Payload.decode("utf-8")),
        },
    })
consumer.close()
for record in sorted(records, key=lambda r: (r["partition"], r["offset"])):
    print(json.dumps(record), flush=True)
