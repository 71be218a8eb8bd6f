CREATE DATABASE IF NOT EXISTS msrpscope ON CLUSTER traces;

CREATE TABLE IF NOT EXISTS msrpscope.schema_migrations
(
    version UInt32,
    name String,
    applied DateTime
)
ENGINE = MergeTree()
ORDER BY version;

-- migration 1: frames
CREATE TABLE IF NOT EXISTS msrpscope.frames_local ON CLUSTER traces
(
    ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    direction LowCardinality(String),
    transport LowCardinality(String),
    local_ip IPv6,
    local_port UInt16,
    remote_ip IPv6,
    remote_port UInt16,
    conn_id UInt64,
    session_id String,
    peer_session_id String,
    correlation_id String,
    transact_id String,
    method LowCardinality(String),
    status UInt16,
    message_id String,
    byte_range String,
    content_type LowCardinality(String),
    auth_user String,
    auth_response UInt8,
    flag LowCardinality(String),
    size UInt64,
    body String CODEC(ZSTD(3)),
    node LowCardinality(String),
    batch_id UInt64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/msrpscope/frames_local', '{replica}')
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), correlation_id, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS msrpscope.frames ON CLUSTER traces AS msrpscope.frames_local
ENGINE = Distributed(traces, msrpscope, frames_local, cityHash64(correlation_id));

-- migration 2: events
CREATE TABLE IF NOT EXISTS msrpscope.events_local ON CLUSTER traces
(
    ts DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    event LowCardinality(String),
    reason LowCardinality(String),
    error String,
    direction LowCardinality(String),
    transport LowCardinality(String),
    local_ip IPv6,
    local_port UInt16,
    remote_ip IPv6,
    remote_port UInt16,
    conn_id UInt64,
    tls_subject String,
    node LowCardinality(String),
    batch_id UInt64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/msrpscope/events_local', '{replica}')
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), conn_id, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS msrpscope.events ON CLUSTER traces AS msrpscope.events_local
ENGINE = Distributed(traces, msrpscope, events_local, intHash64(conn_id));

-- migration 3: frames per minute
CREATE TABLE IF NOT EXISTS msrpscope.frames_per_minute_local ON CLUSTER traces
(
    minute DateTime,
    node LowCardinality(String),
    method LowCardinality(String),
    direction LowCardinality(String),
    frames UInt64,
    bytes UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/msrpscope/frames_per_minute_local', '{replica}', (frames, bytes))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, method, direction)
TTL toDateTime(minute) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.frames_per_minute_mv ON CLUSTER traces TO msrpscope.frames_per_minute_local
AS SELECT toStartOfMinute(ts) AS minute, node, method, direction, count() AS frames, sum(size) AS bytes
FROM msrpscope.frames_local
GROUP BY minute, node, method, direction;

CREATE TABLE IF NOT EXISTS msrpscope.frames_per_minute ON CLUSTER traces AS msrpscope.frames_per_minute_local
ENGINE = Distributed(traces, msrpscope, frames_per_minute_local, rand());

-- migration 4: failures per minute
CREATE TABLE IF NOT EXISTS msrpscope.failures_per_minute_local ON CLUSTER traces
(
    minute DateTime,
    node LowCardinality(String),
    direction LowCardinality(String),
    status UInt16,
    responses UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/msrpscope/failures_per_minute_local', '{replica}', (responses))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, direction, status)
TTL toDateTime(minute) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.failures_per_minute_mv ON CLUSTER traces TO msrpscope.failures_per_minute_local
AS SELECT toStartOfMinute(ts) AS minute, node, direction, status, count() AS responses
FROM msrpscope.frames_local
WHERE status >= 300
GROUP BY minute, node, direction, status;

CREATE TABLE IF NOT EXISTS msrpscope.failures_per_minute ON CLUSTER traces AS msrpscope.failures_per_minute_local
ENGINE = Distributed(traces, msrpscope, failures_per_minute_local, rand());

-- migration 5: auth results per minute
CREATE TABLE IF NOT EXISTS msrpscope.auth_per_minute_local ON CLUSTER traces
(
    minute DateTime,
    node LowCardinality(String),
    status UInt16,
    responses UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/msrpscope/auth_per_minute_local', '{replica}', (responses))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, status)
TTL toDateTime(minute) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.auth_per_minute_mv ON CLUSTER traces TO msrpscope.auth_per_minute_local
AS SELECT toStartOfMinute(ts) AS minute, node, status, count() AS responses
FROM msrpscope.frames_local
WHERE auth_response = 1 AND direction = 'out'
GROUP BY minute, node, status;

CREATE TABLE IF NOT EXISTS msrpscope.auth_per_minute ON CLUSTER traces AS msrpscope.auth_per_minute_local
ENGINE = Distributed(traces, msrpscope, auth_per_minute_local, rand());

-- migration 6: connections per minute
CREATE TABLE IF NOT EXISTS msrpscope.connections_per_minute_local ON CLUSTER traces
(
    minute DateTime,
    node LowCardinality(String),
    transport LowCardinality(String),
    event LowCardinality(String),
    reason LowCardinality(String),
    connections UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/msrpscope/connections_per_minute_local', '{replica}', (connections))
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, node, transport, event, reason)
TTL toDateTime(minute) + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS msrpscope.connections_per_minute_mv ON CLUSTER traces TO msrpscope.connections_per_minute_local
AS SELECT toStartOfMinute(ts) AS minute, node, transport, event, reason, count() AS connections
FROM msrpscope.events_local
WHERE event IN ('accepted', 'connected', 'closed')
GROUP BY minute, node, transport, event, reason;

CREATE TABLE IF NOT EXISTS msrpscope.connections_per_minute ON CLUSTER traces AS msrpscope.connections_per_minute_local
ENGINE = Distributed(traces, msrpscope, connections_per_minute_local, rand());

