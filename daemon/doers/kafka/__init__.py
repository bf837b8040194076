"""The Kafka adapter: the only package that imports aiokafka.

* ``clients``: every client configured once (security, acks, commits, timing);
* ``publisher``: validated messages out, and the dead letters;
* ``concurrent_consumer``: a stage's group member (concurrent runs, in-order
  commits, live before replay);
* ``topic_reader``: reading topics without a group, up to "now" (the high
  watermark of fetch responses, right on tansu and on Kafka) or following them;
* ``partition_ends``: the catalog's partition ends, asked again and again
  through one kept client (the supervisor's check of an external broker);
* ``topic_admin``: creating the catalog's topics, describing them, group offsets.

Callers use ``from calstream.daemon.doers import kafka`` and the names below.
"""

from aiokafka.structs import ConsumerRecord as Record

from calstream.daemon.doers.kafka.clients import (
    admin,
    client_options,
    commit_handled,
    group_consumer,
    producer,
    reader,
    refused_settings,
    subscriber,
    unreachable,
)
from calstream.daemon.doers.kafka.concurrent_consumer import ConcurrentConsumer
from calstream.daemon.doers.kafka.partition_ends import PartitionEnds
from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.kafka.topic_admin import (
    TopicsMissing,
    create_topics,
    describe_catalog,
    group_offsets,
)
from calstream.daemon.doers.kafka.topic_reader import (
    TopicReader,
    fold_to_end,
    is_empty,
    last_records,
    open_reader,
    read_places,
    read_to_end,
    read_topics,
    record_at,
    records_at,
    require_described,
)

__all__ = ["ConcurrentConsumer", "PartitionEnds", "Publisher", "Record", "TopicReader",
           "TopicsMissing", "admin", "client_options", "commit_handled", "create_topics", "describe_catalog", "fold_to_end", "group_consumer", "group_offsets", "is_empty",
           "last_records",
           "open_reader", "producer", "read_places", "read_to_end", "read_topics", "reader",
           "record_at", "records_at", "refused_settings", "require_described", "subscriber", "unreachable"]
