"""Reads a whole topic as a read_committed consumer (confluent-kafka) and prints one JSON
object per message: partition, offset, key, value and headers (as text).

Usage: read_kafka.py BOOTSTRAP TOPIC
"""

import json
import sys
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main() -> None:
    bootstrap, topic = sys.argv[1], sys.argv[2]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-kafka-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    at_end = set()
    idle = 0
    while len(at_end) < len(partitions) and idle < 100:
        message = consumer.poll(0.1)
        if message is None:
            idle += 1
            continue
        idle = 0
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            sys.exit(f"consumer error: {message.error()}")
        at_end.discard(message.partition())
        headers = {k: (v.decode() if v is not None else None) for k, v in (message.headers() or [])}
        print(
            json.dumps(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": message.key().decode() if message.key() is not None else None,
                    "value": json.loads(message.value()),
                    "headers": headers,
                }
            )
        )
    consumer.close()
    if len(at_end) < len(partitions):
        sys.exit("did not reach the end of every partition")


if __name__ == "__main__":
    main()
